#!/usr/bin/env python3
"""Proves check_terraform_refs.py finds each class of broken reference, and accepts the
constructs that look like references but are not (iterators, for-expression variables,
literal text, escaped interpolation). Run by scripts/check-terraform.sh."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

CHECKER = Path(__file__).with_name("check_terraform_refs.py")

MODULE = """
variable "name" {
  description = "required"
  type        = string
}
variable "size" {
  description = "optional"
  type        = number
  default     = 1
}
locals {
  full = "${var.name}-x"
}
resource "google_storage_bucket" "this" {
  name = local.full
  dynamic "lifecycle_rule" {
    for_each = [var.size]
    content {
      condition {
        age = lifecycle_rule.value
      }
    }
  }
}
output "bucket" {
  description = "bucket"
  value       = { for k_x, v_y in google_storage_bucket.this.labels : k_x => v_y }
}
"""

ROOT_OK = """
variable "net" {
  description = "an object"
  type        = object({ cidr = string, spare = optional(number, 1) })
}
output "cidr" {
  description = "attribute of an object variable"
  value       = var.net.cidr
}
data "google_project" "this" {
  project_id = "p"
}
module "m" {
  source = "../mod"
  name   = "svc@${data.google_project.this.number}.iam.gserviceaccount.com"
}
output "o" {
  description = "o"
  value       = "$${not.a_reference} ${module.m.bucket}"
}
"""

BROKEN = {
    "undeclared local": ('value       = "$${not.a_reference} ${module.m.bucket}"', "value = local.nope", "local.nope"),
    "undeclared variable": ('value       = "$${not.a_reference} ${module.m.bucket}"', "value = var.nope", "var.nope"),
    "missing module output": ("${module.m.bucket}", "${module.m.buckets}", "has no output 'buckets'"),
    "undeclared data source": (
        "data.google_project.this.number",
        "data.google_project.that.number",
        "data.google_project.that",
    ),
    "undeclared resource": (
        'value       = "$${not.a_reference} ${module.m.bucket}"',
        "value = google_storage_bucket.other.name",
        "google_storage_bucket.other is not a declared resource",
    ),
    "unknown attribute of an object variable": ("value       = var.net.cidr", "value       = var.net.cdr", "has no attribute 'cdr'"),
    "unknown module argument": ('  source = "../mod"\n', '  source = "../mod"\n  colour = "red"\n', "passes 'colour'"),
    "missing required argument": (
        '  name   = "svc@${data.google_project.this.number}.iam.gserviceaccount.com"\n',
        "",
        "does not pass required variable 'name'",
    ),
}


TFVARS_OK = 'net = { cidr = "10.0.0.0/8" }\n'
TFVARS_BROKEN = {
    "tfvars attribute the type lacks": ('net = { cidr = "10.0.0.0/8", cdir = "x" }\n', "'cdir' is not an attribute"),
    "tfvars missing a required attribute": ("net = { spare = 2 }\n", "required attribute 'cidr' is missing"),
}


def run(root_tf: str, tfvars: str = TFVARS_OK) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "mod").mkdir()
        (base / "mod" / "main.tf").write_text(MODULE)
        (base / "root").mkdir()
        (base / "root" / "main.tf").write_text(root_tf)
        (base / "root" / "terraform.tfvars").write_text(tfvars)
        return subprocess.run(
            [sys.executable, str(CHECKER), str(base)], capture_output=True, text=True, check=False
        )


def main() -> int:
    failures = []
    clean = run(ROOT_OK)
    if clean.returncode != 0:
        failures.append(f"a valid configuration was rejected:\n{clean.stdout}{clean.stderr}")
    for name, (old, new, expected) in BROKEN.items():
        assert old in ROOT_OK, name
        result = run(ROOT_OK.replace(old, new))
        if result.returncode == 0 or expected not in result.stdout:
            failures.append(f"{name}: want a finding containing {expected!r}, got:\n{result.stdout}{result.stderr}")
    for name, (tfvars, expected) in TFVARS_BROKEN.items():
        result = run(ROOT_OK, tfvars)
        if result.returncode == 0 or expected not in result.stdout:
            failures.append(f"{name}: want a finding containing {expected!r}, got:\n{result.stdout}{result.stderr}")
    for failure in failures:
        print(f"FAILED: {failure}")
    total = len(BROKEN) + len(TFVARS_BROKEN) + 1
    print(f"check_terraform_refs self-test: {total - len(failures)} of {total} cases behave")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
