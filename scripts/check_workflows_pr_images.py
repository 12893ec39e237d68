#!/usr/bin/env python3
"""What the seed asks of CI before merge: the pull-request workflow builds the three images
from docker/Dockerfile, scans each with Trivy (failing on HIGH/CRITICAL), and starts them
for a smoke test (scripts/ci/smoke-images.sh: the README's first curl answered 202, the job
seen in Postgres). Prints findings and exits non-zero when any is missing."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPONENTS = ("producer", "consumer", "ctl")


def main() -> int:
    problems = []
    doc = yaml.safe_load((ROOT / ".github" / "workflows" / "pr.yml").read_text())
    triggers = doc.get(True, doc.get("on")) or {}
    if "pull_request" not in triggers:
        problems.append("pr.yml does not run on pull_request")
    found = False
    for job_id, job in (doc.get("jobs") or {}).items():
        steps = job.get("steps") or []
        builds, scans, smoke_at = {}, {}, None
        for index, step in enumerate(steps):
            uses = str(step.get("uses", ""))
            with_ = step.get("with") or {}
            if uses.startswith("docker/build-push-action@") and with_.get("file") == "docker/Dockerfile":
                binary = str(with_.get("build-args", "")).removeprefix("BINARY=codigo-")
                if with_.get("load") is True and with_.get("push") is False:
                    builds[binary] = (index, str(with_.get("tags")))
            if uses.startswith("aquasecurity/trivy-action@"):
                severity = str(with_.get("severity", ""))
                if str(with_.get("exit-code")) == "1" and "HIGH" in severity and "CRITICAL" in severity:
                    scans[str(with_.get("image-ref"))] = index
            if "scripts/ci/smoke-images.sh" in str(step.get("run", "")):
                smoke_at = index
        if not builds:
            continue
        found = True
        for component in COMPONENTS:
            if component not in builds:
                problems.append(f"job {job_id}: no docker/Dockerfile build (load, no push) of codigo-{component}")
                continue
            index, tag = builds[component]
            if tag not in scans or scans[tag] < index:
                problems.append(f"job {job_id}: image {tag} is not scanned by Trivy (exit-code 1, HIGH,CRITICAL) after its build")
            if smoke_at is None or smoke_at < index:
                problems.append(f"job {job_id}: no smoke test (scripts/ci/smoke-images.sh) after building {tag}")
        if "postgres" not in (job.get("services") or {}):
            problems.append(f"job {job_id}: the smoke test needs a postgres service")
    if not found:
        problems.append("pr.yml builds no image: images are first built, scanned and started after merge (main.yml)")
    smoke = ROOT / "scripts" / "ci" / "smoke-images.sh"
    if not smoke.is_file():
        problems.append("scripts/ci/smoke-images.sh is missing")
    else:
        text = smoke.read_text()
        for needle, why in (("README.md", "runs the README's first curl"), ("202", "expects 202"),
                            ("FROM jobs", "finds the job in Postgres")):
            if needle not in text:
                problems.append(f"scripts/ci/smoke-images.sh no longer {why}")
    for problem in problems:
        print(f"   {problem}")
    print(f"   pr.yml images: {'ok' if not problems else f'{len(problems)} findings'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
