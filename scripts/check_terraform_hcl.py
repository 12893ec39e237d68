#!/usr/bin/env python3
"""Static checks of terraform/ that need no provider registry.

Parses every .tf and .tfvars file with python-hcl2 and checks the conventions
the Terraform code relies on. Prints one line per check, `ok <name>` or
`not ok <name>: <reason>`, and exits non-zero when any check fails.

Usage: check_terraform_hcl.py TERRAFORM_DIR
"""

from __future__ import annotations

import difflib
import re
import sys
from pathlib import Path

import hcl2

ENVIRONMENTS = ("dev", "qa", "preprod", "prod")
# The one root every environment applies; environments differ only in data:
# platform/environments/<env>.tfvars and <env>.gcs.tfbackend.
PLATFORM = "platform"
PLATFORM_FILES = ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "backend.tf")
# Directories that may hold .tf files: the two roots and the modules.
TF_DIRS = ("bootstrap", PLATFORM, "modules")
# Two .tf files this alike (share of identical lines) are copies of one shape.
COPY_RATIO = 0.6
COPY_MIN_LINES = 30
MODULE_FILES = ("versions.tf", "variables.tf", "outputs.tf")
# Outputs whose value is a credential or key material.
SENSITIVE_OUTPUT = re.compile(r"(^|_)(database_url|password|ca_certificate)$")


class Checks:
    def __init__(self) -> None:
        self.failed = 0
        self.passed = 0

    def record(self, name: str, problems: list[str]) -> None:
        if problems:
            self.failed += 1
            print(f"not ok {name}:")
            for problem in problems:
                print(f"    {problem}")
        else:
            self.passed += 1
            print(f"ok {name}")


def unquote(value: object) -> object:
    """python-hcl2 keeps the quotes of string literals; strip them."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def blocks(doc: dict, kind: str) -> list[tuple[str, dict]]:
    """Labelled top-level blocks of one kind, as (label, body) pairs."""
    out = []
    for entry in doc.get(kind, []):
        for label, body in entry.items():
            out.append((str(unquote(label)), body))
    return out


def load_all(root: Path) -> tuple[dict[Path, dict], list[str]]:
    docs: dict[Path, dict] = {}
    errors: list[str] = []
    for path in sorted(list(root.rglob("*.tf")) + list(root.rglob("*.tfvars")) + list(root.rglob("*.tfbackend"))):
        if ".terraform" in path.parts:
            continue
        try:
            with path.open(encoding="utf-8") as handle:
                docs[path] = hcl2.load(handle)
        except Exception as exc:  # the parser raises several exception types
            errors.append(f"{path.relative_to(root)}: {exc}")
    return docs, errors


def check_descriptions(root: Path, docs: dict[Path, dict]) -> list[str]:
    problems = []
    for path, doc in docs.items():
        if path.suffix != ".tf":
            continue
        for kind in ("variable", "output"):
            for label, body in blocks(doc, kind):
                description = unquote(body.get("description", ""))
                if not isinstance(description, str) or not description.strip():
                    problems.append(f"{path.relative_to(root)}: {kind} {label!r} has no description")
    return problems


def check_sensitive_outputs(root: Path, docs: dict[Path, dict]) -> list[str]:
    problems = []
    for path, doc in docs.items():
        for label, body in blocks(doc, "output"):
            value = str(body.get("value", ""))
            if (SENSITIVE_OUTPUT.search(label) or "random_password" in value) and body.get("sensitive") is not True:
                problems.append(f"{path.relative_to(root)}: output {label!r} must be sensitive = true")
    return problems


def check_module_layout(root: Path) -> list[str]:
    problems = []
    modules = sorted(p for p in (root / "modules").iterdir() if p.is_dir())
    if not modules:
        problems.append("no modules under terraform/modules")
    for module in modules:
        for name in MODULE_FILES:
            if not (module / name).is_file():
                problems.append(f"modules/{module.name}: missing {name}")
        if not [p for p in module.glob("*.tf") if p.name not in MODULE_FILES]:
            problems.append(f"modules/{module.name}: no resource file besides {', '.join(MODULE_FILES)}")
    return problems


def version_constraint_bounded(constraint: str) -> bool:
    return "~>" in constraint or "<" in constraint


def check_versions(root: Path, docs: dict[Path, dict]) -> list[str]:
    problems = []
    version_files = [p for p in docs if p.name == "versions.tf"]
    expected_roots = [root / "bootstrap", root / PLATFORM]
    expected = expected_roots + sorted(p for p in (root / "modules").iterdir() if p.is_dir())
    for directory in expected:
        if directory / "versions.tf" not in docs:
            problems.append(f"{directory.relative_to(root)}: missing versions.tf")
    for path in version_files:
        rel = path.relative_to(root)
        terraform = (docs[path].get("terraform") or [{}])[0]
        required = unquote(terraform.get("required_version", ""))
        if not isinstance(required, str) or not version_constraint_bounded(required):
            problems.append(f"{rel}: required_version must have an upper bound, got {required!r}")
        providers = (terraform.get("required_providers") or [{}])[0]
        if "google" not in providers:
            problems.append(f"{rel}: google provider not declared")
        for name, spec in providers.items():
            if name.startswith("__"):
                continue
            version = unquote(spec.get("version", "")) if isinstance(spec, dict) else ""
            if not isinstance(version, str) or not version_constraint_bounded(version):
                problems.append(f"{rel}: provider {name} version must be bounded, got {version!r}")
            elif name == "google" and not re.search(r"(~>\s*6\.|<\s*7\.0)", version):
                problems.append(f"{rel}: google provider must stay on 6.x, got {version!r}")
    return problems


def check_no_keys(root: Path, docs: dict[Path, dict]) -> list[str]:
    problems = []
    for path, doc in docs.items():
        for entry in doc.get("resource", []):
            for rtype in entry:
                if unquote(rtype) in ("google_service_account_key", "google_iam_workload_identity_pool_key"):
                    problems.append(f"{path.relative_to(root)}: {unquote(rtype)} is forbidden (use federation)")
    return problems


def check_one_root(root: Path, docs: dict[Path, dict]) -> list[str]:
    """One root module for the four environments; each environment is only data."""
    problems = []
    platform = root / PLATFORM
    for name in PLATFORM_FILES:
        if not (platform / name).is_file():
            problems.append(f"{PLATFORM}: missing {name}")
    for env in ENVIRONMENTS:
        for suffix in (".tfvars", ".gcs.tfbackend"):
            if not (platform / "environments" / f"{env}{suffix}").is_file():
                problems.append(f"{PLATFORM}/environments: missing {env}{suffix}")
    for path in sorted(root.rglob("*.tf")):
        rel = path.relative_to(root)
        if ".terraform" not in rel.parts and rel.parts[0] not in TF_DIRS:
            problems.append(f"{rel}: Terraform outside {', '.join(TF_DIRS)}; an environment is a .tfvars, not a root")
    for path in sorted(platform.glob("environments/*")):
        if path.suffix == ".tf":
            problems.append(f"{path.relative_to(root)}: environments/ holds data only (.tfvars, .gcs.tfbackend)")
    backend = (docs.get(platform / "backend.tf", {}).get("terraform") or [{}])[0]
    gcs = dict(blocks(backend, "backend")).get("gcs")
    if gcs is None:
        problems.append(f"{PLATFORM}/backend.tf: no gcs backend")
    elif any(not k.startswith("__") for k in gcs):
        problems.append(f"{PLATFORM}/backend.tf: the gcs backend must be partial; bucket and prefix come from -backend-config")
    return problems


def check_no_copies(root: Path) -> list[str]:
    """A shape written twice drifts: no .tf file may be a near-copy of another."""
    problems = []
    files = {}
    for path in sorted(root.rglob("*.tf")):
        if ".terraform" in path.parts:
            continue
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        lines = [line for line in lines if line and not line.startswith(("#", "//"))]
        if len(lines) >= COPY_MIN_LINES:
            files[path.relative_to(root)] = lines
    names = sorted(files)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            matcher = difflib.SequenceMatcher(None, files[first], files[second], autojunk=False)
            if matcher.real_quick_ratio() < COPY_RATIO or matcher.quick_ratio() < COPY_RATIO:
                continue
            ratio = matcher.ratio()
            if ratio >= COPY_RATIO:
                problems.append(
                    f"{first} and {second} are {ratio:.0%} the same lines: keep one root and put what differs in data"
                )
    return problems


def env_docs(root: Path, docs: dict[Path, dict], env: str) -> tuple[dict, dict, dict]:
    platform = root / PLATFORM
    return (
        docs.get(platform / "environments" / f"{env}.gcs.tfbackend", {}),
        docs.get(platform / "environments" / f"{env}.tfvars", {}),
        docs.get(platform / "variables.tf", {}),
    )


def check_backends(root: Path, docs: dict[Path, dict]) -> list[str]:
    problems = []
    buckets = set()
    for env in ENVIRONMENTS:
        gcs, tfvars, _ = env_docs(root, docs, env)
        where = f"{PLATFORM}/environments/{env}"
        if not gcs:
            problems.append(f"{where}.gcs.tfbackend: missing or empty")
            continue
        bucket, prefix = unquote(gcs.get("bucket")), unquote(gcs.get("prefix"))
        buckets.add(bucket)
        if prefix != f"codigo/{env}":
            problems.append(f"{where}.gcs.tfbackend: prefix {prefix!r}, want 'codigo/{env}'")
        if unquote(tfvars.get("state_bucket")) != bucket:
            problems.append(f"{where}.tfvars: state_bucket != backend bucket {bucket!r}")
        if unquote(tfvars.get("state_prefix")) != prefix:
            problems.append(f"{where}.tfvars: state_prefix != backend prefix {prefix!r}")
        if unquote(tfvars.get("environment")) != env:
            problems.append(f"{where}.tfvars: environment is {unquote(tfvars.get('environment'))!r}")
    if len(buckets) > 1:
        problems.append(f"environments use different state buckets: {sorted(map(str, buckets))}")
    bootstrap = docs.get(root / "bootstrap" / "backend.tf", {})
    gcs = dict(blocks((bootstrap.get("terraform") or [{}])[0], "backend")).get("gcs", {})
    if buckets and unquote(gcs.get("bucket")) not in buckets:
        problems.append("bootstrap/backend.tf must use the same state bucket as the environments")
    return problems


def ci_supplied_variables(root: Path) -> set[str]:
    """Variables every workflow that plans passes as TF_VAR_<name> (not in the tfvars)."""
    workflows = root.parent / ".github" / "workflows"
    names: set[str] | None = None
    for path in sorted(workflows.glob("*.yml")):
        text = path.read_text(encoding="utf-8")
        if "terraform plan" not in text:
            continue
        found = set(re.findall(r"^\s*TF_VAR_(\w+):", text, re.M))
        names = found if names is None else names & found
    return names or set()


def check_tfvars_match_variables(root: Path, docs: dict[Path, dict]) -> list[str]:
    problems = []
    from_ci = ci_supplied_variables(root)
    for env in ENVIRONMENTS:
        _, tfvars, variables = env_docs(root, docs, env)
        declared = dict(blocks(variables, "variable"))
        for key in tfvars:
            if not key.startswith("__") and key not in declared:
                problems.append(f"{PLATFORM}/environments/{env}.tfvars: {key} is not a declared variable")
        for name, body in declared.items():
            if "default" not in body and name not in tfvars and name not in from_ci:
                problems.append(f"{PLATFORM}/environments/{env}.tfvars: required variable {name} is not set")
    return problems


def check_environment_shapes(root: Path, docs: dict[Path, dict]) -> list[str]:
    """Cheap where it may be, highly available where it must be."""
    problems = []
    for env in ENVIRONMENTS:
        _, tfvars, _ = env_docs(root, docs, env)
        if not tfvars:
            continue
        gke, sql = tfvars.get("gke", {}), tfvars.get("cloudsql", {})
        regional = tfvars.get("regional_cluster")
        availability = unquote(sql.get("availability_type"))
        spot_min = gke.get("spot_pool", {}).get("min_node_count")
        if spot_min != 0:
            problems.append(f"{env}: the consumer Spot pool must scale to zero (min_node_count = 0)")
        if env in ("preprod", "prod"):
            if regional is not True:
                problems.append(f"{env}: GKE cluster must be regional")
            if availability != "REGIONAL":
                problems.append(f"{env}: Cloud SQL must be REGIONAL (HA)")
            if sql.get("deletion_protection") is not True or gke.get("deletion_protection") is not True:
                problems.append(f"{env}: deletion protection must be on")
            if sql.get("pitr_log_retention_days", 0) < 7:
                problems.append(f"{env}: keep 7 days of point-in-time recovery logs")
        if env == "dev":
            if regional is not False:
                problems.append("dev: GKE cluster must be zonal (free tier, one control plane)")
            if availability != "ZONAL":
                problems.append("dev: Cloud SQL must be ZONAL")
            if gke.get("general_pool", {}).get("spot") is not True:
                problems.append("dev: general pool must run on Spot")
    return problems


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(sys.argv[1]).resolve()
    checks = Checks()
    docs, parse_errors = load_all(root)
    checks.record(f"hcl parses ({len(docs)} files)", parse_errors if docs else ["no Terraform files found"])
    checks.record("every variable and output has a description", check_descriptions(root, docs))
    checks.record("credential outputs are sensitive", check_sensitive_outputs(root, docs))
    checks.record("modules have versions.tf, variables.tf, outputs.tf and resource files", check_module_layout(root))
    checks.record("terraform and providers are version-bounded (google 6.x)", check_versions(root, docs))
    checks.record("no service account keys", check_no_keys(root, docs))
    checks.record("one root for all environments, which differ only in data", check_one_root(root, docs))
    checks.record("no .tf file is a copy of another", check_no_copies(root))
    checks.record("backends: one GCS bucket, prefix per environment, tfvars agree", check_backends(root, docs))
    checks.record("tfvars set every required variable and nothing undeclared", check_tfvars_match_variables(root, docs))
    checks.record("dev is zonal and Spot, preprod/prod are HA", check_environment_shapes(root, docs))
    print(f"summary: {checks.passed} ok, {checks.failed} not ok")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
