#!/usr/bin/env python3
"""Read and rewrite the image pins in gitops/environments/<env>/images.yaml.

The file has one entry per component under `images:`, either as a flow mapping

    images:
      producer: {registry: europe-west1-docker.pkg.dev, repository: p/codigo/codigo-producer, tag: "", digest: "sha256:..."}

or as a block mapping with the same four keys. Only `tag` and `digest` are ever
rewritten, in place, so comments and ordering survive and the PR diff is one line per
image. Standard library only: this runs on a bare GitHub runner and in `make test`.

    gitops_images.py name ENV_FILE --image producer     # registry/repository (where CI pushes)
    gitops_images.py show ENV_FILE                      # registry/repository@digest per image
    gitops_images.py set ENV_FILE --image producer --ref NAME@sha256:... [--tag v1.2.3]
    gitops_images.py promote SRC_FILE DST_FILE          # copy tag + digest of every image

`registry` may be the bare host (REGION-docker.pkg.dev) or include the path; only
registry + "/" + repository, the pullable name, is compared.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

COMPONENTS = ("producer", "consumer", "ctl")
KEYS = ("registry", "repository", "tag", "digest")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
PLACEHOLDER = "sha256:" + "0" * 64
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
ENTRY_RE = re.compile(r"^(?P<indent>[ ]+)(?P<name>[A-Za-z0-9_-]+):[ ]*(?P<rest>.*?)[ ]*$")


class PinError(Exception):
    """The file does not have the agreed shape, or a value is not acceptable."""


@dataclass
class Entry:
    name: str
    values: dict[str, str]
    # flow style: the single line index; block style: line index per key
    flow_line: int | None = None
    block_lines: dict[str, int] = field(default_factory=dict)
    indent: str = "  "


def _unquote(raw: str) -> str:
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        return raw[1:-1]
    if raw in ("", "~", "null"):
        return ""
    return raw


def _strip_comment(text: str) -> str:
    quote = None
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip()
    return text.rstrip()


def _parse_flow(text: str, where: str) -> dict[str, str]:
    text = _strip_comment(text)
    if not (text.startswith("{") and text.endswith("}")):
        raise PinError(f"{where}: expected a flow mapping {{...}}, got {text!r}")
    parts, buf, quote = [], "", None
    for ch in text[1:-1]:
        if quote:
            buf += ch
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
            buf += ch
        elif ch == ",":
            parts.append(buf)
            buf = ""
        else:
            buf += ch
    if buf.strip():
        parts.append(buf)
    values: dict[str, str] = {}
    for part in parts:
        key, sep, val = part.partition(":")
        if not sep:
            raise PinError(f"{where}: cannot parse {part.strip()!r}")
        values[key.strip()] = _unquote(val)
    return values


def _render_flow(indent: str, name: str, values: dict[str, str]) -> str:
    return (
        f"{indent}{name}: {{registry: {values['registry']}, repository: {values['repository']}, "
        f"tag: \"{values['tag']}\", digest: \"{values['digest']}\"}}"
    )


class ImagesFile:
    def __init__(self, path: Path):
        self.path = path
        try:
            self.lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as err:
            raise PinError(f"{path}: {err.strerror}") from err
        self.entries: dict[str, Entry] = {}
        self._parse()

    def _parse(self) -> None:
        where = str(self.path)
        try:
            start = next(i for i, line in enumerate(self.lines) if re.match(r"^images:\s*(#.*)?$", line))
        except StopIteration:
            raise PinError(f"{where}: no top-level 'images:' key") from None
        i = start + 1
        entry_indent = None
        while i < len(self.lines):
            line = self.lines[i]
            if not line.strip() or line.lstrip().startswith("#"):
                i += 1
                continue
            if not line.startswith(" "):
                break  # next top-level key
            m = ENTRY_RE.match(line)
            if not m:
                raise PinError(f"{where}:{i + 1}: cannot parse {line!r}")
            if entry_indent is None:
                entry_indent = m["indent"]
            if m["indent"] != entry_indent:
                raise PinError(f"{where}:{i + 1}: unexpected indentation")
            name, rest = m["name"], _strip_comment(m["rest"])
            if rest:
                entry = Entry(name, _parse_flow(rest, f"{where}:{i + 1}"), flow_line=i, indent=entry_indent)
                i += 1
            else:
                entry = Entry(name, {}, indent=entry_indent)
                i += 1
                while i < len(self.lines):
                    child = self.lines[i]
                    if not child.strip() or child.lstrip().startswith("#"):
                        i += 1
                        continue
                    cm = ENTRY_RE.match(child)
                    if not cm or len(cm["indent"]) <= len(entry_indent):
                        break
                    entry.values[cm["name"]] = _unquote(_strip_comment(cm["rest"]))
                    entry.block_lines[cm["name"]] = i
                    i += 1
            if name in self.entries:
                raise PinError(f"{where}: image {name!r} listed twice")
            self.entries[name] = entry
        for name in COMPONENTS:
            if name not in self.entries:
                raise PinError(f"{where}: image {name!r} missing under images:")
            missing = [k for k in KEYS if k not in self.entries[name].values]
            if missing:
                raise PinError(f"{where}: image {name!r} lacks {', '.join(missing)}")

    def name(self, name: str) -> str:
        v = self.entries[name].values
        return f"{v['registry'].rstrip('/')}/{v['repository'].lstrip('/')}"

    def ref(self, name: str) -> str:
        digest = self.entries[name].values["digest"]
        if not DIGEST_RE.match(digest) or digest == PLACEHOLDER:
            raise PinError(f"{self.path}: image {name!r} has no usable digest ({digest!r})")
        return f"{self.name(name)}@{digest}"

    def set(self, name: str, digest: str, tag: str | None) -> bool:
        if name not in self.entries:
            raise PinError(f"{self.path}: unknown image {name!r}")
        if not DIGEST_RE.match(digest) or digest == PLACEHOLDER:
            raise PinError(f"refusing digest {digest!r}: expected sha256:<64 hex>")
        if tag is not None and tag != "" and not TAG_RE.match(tag):
            raise PinError(f"refusing tag {tag!r}")
        entry = self.entries[name]
        new = dict(entry.values, digest=digest)
        if tag is not None:
            new["tag"] = tag
        if new == entry.values:
            return False
        if entry.flow_line is not None:
            self.lines[entry.flow_line] = _render_flow(entry.indent, name, new)
        else:
            for key in ("tag", "digest"):
                if new[key] != entry.values[key]:
                    idx = entry.block_lines[key]
                    prefix = self.lines[idx][: self.lines[idx].index(":") + 1]
                    self.lines[idx] = f'{prefix} "{new[key]}"'
        entry.values = new
        return True

    def write(self) -> None:
        self.path.write_text("\n".join(self.lines) + "\n", encoding="utf-8")


def cmd_name(args: argparse.Namespace) -> int:
    print(ImagesFile(Path(args.file)).name(args.image))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    pins = ImagesFile(Path(args.file))
    for name in COMPONENTS:
        print(f"{name} {pins.ref(name)}")
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    pins = ImagesFile(Path(args.file))
    name, sep, digest = args.ref.rpartition("@")
    if not sep or not name:
        raise PinError(f"--ref {args.ref!r}: expected NAME@sha256:...")
    # The digest only exists where it was pushed: refuse to pin it under another name.
    if name != pins.name(args.image):
        raise PinError(f"{args.image}: pushed to {name}, but {args.file} pulls {pins.name(args.image)}")
    changed = pins.set(args.image, digest, args.tag)
    if changed:
        pins.write()
    print(f"{args.image}: {'updated' if changed else 'unchanged'} in {args.file}")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    src, dst = ImagesFile(Path(args.src)), ImagesFile(Path(args.dst))
    changed = []
    for name in COMPONENTS:
        s, d = src.entries[name].values, dst.entries[name].values
        # A digest only resolves inside the repository it was pushed to; promoting it into
        # a file that points elsewhere would deploy an image that cannot be pulled.
        if src.name(name) != dst.name(name):
            raise PinError(f"{name}: repository differs ({src.name(name)} in {args.src}, {dst.name(name)} in {args.dst})")
        src.ref(name)  # validates the source digest
        if dst.set(name, s["digest"], s["tag"]):
            changed.append(name)
    if changed and not args.dry_run:
        dst.write()
    for name in COMPONENTS:
        state = "changed" if name in changed else "unchanged"
        print(f"{name} {state} {src.ref(name)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("name")
    p.add_argument("file")
    p.add_argument("--image", required=True, choices=COMPONENTS)
    p.set_defaults(func=cmd_name)
    p = sub.add_parser("show")
    p.add_argument("file")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("set")
    p.add_argument("file")
    p.add_argument("--image", required=True, choices=COMPONENTS)
    p.add_argument("--ref", required=True, help="NAME@sha256:... as pushed")
    p.add_argument("--tag", default=None, help="also set the tag ('' clears it)")
    p.set_defaults(func=cmd_set)
    p = sub.add_parser("promote")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--dry-run", action="store_true")
    p.set_defaults(func=cmd_promote)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except PinError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
