#!/usr/bin/env python3
"""Project policy for .github/workflows and .github/actions, on top of actionlint, zizmor
and checkov: the rules those tools leave optional are mandatory here.

- top-level `permissions` is `{}` or `contents: read`; every job declares its own
- every workflow has a `concurrency` group; every job has `timeout-minutes`
- every remote action is pinned to a 40-hex commit SHA with a `# vX.Y.Z` comment, and
  one action is pinned to one SHA across all files
- every actions/checkout step sets `persist-credentials: false`
- no `${{ }}` expression inside a `run:` script (values go through `env:`)
- no pull_request_target / workflow_run triggers; GCP auth never with a key
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>[^\s#]+)\s*(?:#\s*(?P<comment>.*))?$")
PINNED = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(?:/[^@]+)?@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"^v?\d+\.\d+\.\d+\b")
FORBIDDEN_TRIGGERS = {"pull_request_target", "workflow_run"}


def steps_of(doc: dict) -> list[tuple[str, dict]]:
    out = []
    for job_id, job in (doc.get("jobs") or {}).items():
        for step in job.get("steps") or []:
            out.append((job_id, step))
    if isinstance(doc.get("runs"), dict):
        for step in doc["runs"].get("steps") or []:
            out.append(("(composite)", step))
    return out


def check_file(path: Path, pins: dict[str, set[str]]) -> list[str]:
    rel = path.relative_to(ROOT)
    errors: list[str] = []
    text = path.read_text(encoding="utf-8")
    doc = yaml.safe_load(text)
    if not isinstance(doc, dict):
        return [f"{rel}: not a YAML mapping"]

    for lineno, line in enumerate(text.splitlines(), 1):
        m = USES_LINE.match(line)
        if not m:
            continue
        ref = m["ref"].strip("'\"")
        if ref.startswith(("./", "$/", "docker://")):
            continue
        if not PINNED.match(ref):
            errors.append(f"{rel}:{lineno}: {ref} is not pinned to a full commit SHA")
            continue
        if not m["comment"] or not VERSION_COMMENT.match(m["comment"].strip()):
            errors.append(f"{rel}:{lineno}: {ref} lacks a '# vX.Y.Z' comment")
        action, sha = ref.split("@")
        pins.setdefault(action, set()).add(sha)

    for job_id, step in steps_of(doc):
        uses = str(step.get("uses", ""))
        if uses.startswith("actions/checkout@"):
            if (step.get("with") or {}).get("persist-credentials") is not False:
                errors.append(f"{rel}: job {job_id}: checkout without persist-credentials: false")
        if uses.startswith("google-github-actions/auth@"):
            if "credentials_json" in (step.get("with") or {}):
                errors.append(f"{rel}: job {job_id}: GCP auth with a key; use workload identity federation")
        run = step.get("run")
        if isinstance(run, str) and "${{" in run:
            errors.append(f"{rel}: job {job_id}: expression inside run: ({step.get('name', run.splitlines()[0])!r}); pass it via env")

    if path.parent.name != "workflows":
        return errors

    triggers = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` as true
    names = set(triggers) if isinstance(triggers, (dict, list)) else {triggers}
    for bad in sorted(FORBIDDEN_TRIGGERS & names):
        errors.append(f"{rel}: trigger {bad} runs untrusted code with a privileged token")

    if "permissions" not in doc:
        errors.append(f"{rel}: no top-level permissions")
    elif doc["permissions"] not in ({}, {"contents": "read"}):
        errors.append(f"{rel}: top-level permissions must be {{}} or contents: read, got {doc['permissions']!r}")
    if "concurrency" not in doc:
        errors.append(f"{rel}: no concurrency group")
    for job_id, job in (doc.get("jobs") or {}).items():
        if "uses" in job:
            continue  # reusable workflow call: its own jobs carry the settings
        if "timeout-minutes" not in job:
            errors.append(f"{rel}: job {job_id}: no timeout-minutes")
        if "permissions" not in job:
            errors.append(f"{rel}: job {job_id}: no job-level permissions")
        elif job["permissions"] in ("write-all", "read-all"):
            errors.append(f"{rel}: job {job_id}: blanket permissions {job['permissions']}")
    return errors


def main() -> int:
    files = sorted((ROOT / ".github/workflows").glob("*.y*ml"))
    files += sorted((ROOT / ".github/actions").glob("*/action.y*ml"))
    if not files:
        print("no workflows found under .github/workflows", file=sys.stderr)
        return 1
    pins: dict[str, set[str]] = {}
    errors: list[str] = []
    for path in files:
        errors += check_file(path, pins)
    for action, shas in sorted(pins.items()):
        if len(shas) > 1:
            errors.append(f"{action} is pinned to {len(shas)} different SHAs: {', '.join(sorted(shas))}")
    for err in errors:
        print(f"  {err}", file=sys.stderr)
    print(f"  {len(files)} files, {sum(len(s) for s in pins.values())} pinned actions, {len(errors)} violations")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
