#!/usr/bin/env python3
"""One source of truth for what Terraform and GitOps share.

Terraform (terraform/platform with environments/<env>.tfvars and the module defaults)
decides the project, the network ranges, the Google service accounts, the secret IDs and
the backup bucket of every environment. The Kubernetes side must use exactly those; a
committed copy that disagrees (a guessed CIDR, a typo in an e-mail) fails here, with the
value Terraform would produce. Values Terraform learns only at apply time (the Cloud SQL
private address) must not be committed at all: the apps read them at sync time.

Also: no placeholder that a real provider refuses (example.* contact addresses, an
all-zero billing account or project number) in committed data; such settings are
variables with a validation that names them when unset.

Prints `ok <name>` / `not ok <name>:` lines; exit status 1 on any finding.

Usage: check_shared_values.py REPO_ROOT
"""

from __future__ import annotations

import ipaddress
import re
import sys
from pathlib import Path

import hcl2
import yaml

ENVIRONMENTS = ("dev", "qa", "preprod", "prod")
GSA_ANNOTATION = "iam.gke.io/gcp-service-account"
# Addresses and ids a provider refuses: reserved example domains (RFC 2606), all-zero ids.
PLACEHOLDER_EMAIL = re.compile(r"[\w.+-]+@(?:[\w-]+\.)*(?:example\.(?:com|org|net)|example|test|invalid|localhost)\b")
PLACEHOLDER_BILLING = re.compile(r"\b0{6}-0{6}-0{6}\b")
PLACEHOLDER_PROJECT_NUMBER = re.compile(r"projects/0+/")


def unquote(value):
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    if isinstance(value, dict):
        return {unquote(k): unquote(v) for k, v in value.items() if not str(k).startswith("__")}
    if isinstance(value, list):
        return [unquote(v) for v in value]
    return value


def load_hcl(path: Path) -> dict:
    with path.open(encoding="utf-8") as handle:
        return hcl2.load(handle)


def blocks(doc: dict, kind: str) -> dict[str, dict]:
    out = {}
    for entry in doc.get(kind, []):
        for label, body in entry.items():
            out[str(unquote(label))] = body
    return out


def module_defaults(module: Path) -> dict:
    defaults = {}
    for path in module.glob("*.tf"):
        for name, body in blocks(load_hcl(path), "variable").items():
            if "default" in body:
                defaults[name] = unquote(body["default"])
    return defaults


def module_locals(module: Path) -> dict:
    out = {}
    for path in module.glob("*.tf"):
        for entry in load_hcl(path).get("locals", []):
            out.update({k: v for k, v in entry.items() if not k.startswith("__")})
    return out


class Terraform:
    """What Terraform makes of one environment, from the code and the tfvars alone."""

    def __init__(self, tf: Path, env: str) -> None:
        platform = tf / "platform"
        self.tfvars = unquote(load_hcl(platform / "environments" / f"{env}.tfvars"))
        self.env = env
        self.project = self.tfvars["project_id"]
        self.name = f"codigo-{env}"  # local.name in platform/main.tf
        main = {}
        for path in platform.glob("*.tf"):
            main.update(blocks(load_hcl(path), "module"))
        self.modules = main
        network = self.tfvars["network"]
        self.psa_cidr = ipaddress.ip_network(network["private_service_access_cidr"])
        self.pods_cidr = ipaddress.ip_network(network["pods_cidr"])

        wi = main["workload_identity"]
        wi_defaults = module_defaults(tf / "modules" / "workload_identity")
        wi_name = unquote(wi["name"])
        wi_namespace = unquote(wi.get("namespace", wi_defaults.get("namespace")))
        # "<namespace>/<kubernetes service account>" -> Google service account e-mail
        self.gsa: dict[str, str] = {}
        for key, workload in unquote(wi["workloads"]).items():
            account = workload.get("account_id") or f"{wi_name}-{key}"
            namespace = workload.get("namespace") or wi_namespace
            self.gsa[f"{namespace}/{workload['kubernetes_service_account']}"] = f"{account}@{self.project}.iam.gserviceaccount.com"

        backup = module_defaults(tf / "modules" / "backup_bucket")
        call = unquote(main["jetstream_backups"])
        self.backup_bucket = f"{self.project}-jetstream-backups"
        self.backup_ksa = f"{call.get('namespace', backup['namespace'])}/{call.get('kubernetes_service_account', backup['kubernetes_service_account'])}"
        self.gsa[self.backup_ksa] = f"{call.get('service_account_id', backup['service_account_id'])}@{self.project}.iam.gserviceaccount.com"

        secrets = module_defaults(tf / "modules" / "app_secrets")
        app_call = unquote(main["app_secrets"])
        names = list(app_call.get("generated", secrets["generated"])) + list(app_call.get("provided", secrets["provided"]))
        database = module_locals(tf / "modules" / "cloudsql")["database_secrets"]
        names += [k for k in (database if isinstance(database, dict) else {})]
        self.secret_ids = {f"{self.name}-{n}" for n in names}


def values(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {} if path.is_file() else {}


def get(tree: dict, dotted: str, default=None):
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def check_env(root: Path, env: str) -> list[str]:
    tf = Terraform(root / "terraform", env)
    problems = []
    gitops = root / "gitops" / "environments" / env / "values"
    chart = values(root / "helm" / "codigo" / f"values-{env}.yaml")
    chart_defaults = values(root / "helm" / "codigo" / "values.yaml")

    def where(path: Path) -> str:
        return str(path.relative_to(root))

    # project id
    platform_values = gitops / "platform.yaml"
    got = values(platform_values).get("gcpProjectId")
    if got != tf.project:
        problems.append(f"{where(platform_values)}: gcpProjectId {got!r}, Terraform's project_id is {tf.project!r}")

    # Workload Identity: each annotated Kubernetes SA names the Google SA Terraform binds to it
    for component, sa in (chart.get("serviceAccounts") or {}).items():
        email = (sa.get("annotations") or {}).get(GSA_ANNOTATION)
        if not email:
            continue
        ksa = sa.get("name") or f"codigo-{component}"
        want = tf.gsa.get(f"codigo/{ksa}")
        if email != want:
            problems.append(
                f"helm/codigo/values-{env}.yaml: serviceAccounts.{component} ({ksa}) is annotated {email!r}; "
                f"Terraform binds {want or 'no Google service account'} to codigo/{ksa}"
            )
    es_values = gitops / "external-secrets.yaml"
    email = ((values(es_values).get("serviceAccount") or {}).get("annotations") or {}).get(GSA_ANNOTATION)
    want = tf.gsa.get("external-secrets/external-secrets")
    if email != want:
        problems.append(f"{where(es_values)}: {GSA_ANNOTATION} is {email!r}, Terraform binds {want!r}")

    # Secret Manager IDs the chart reads exist in Terraform
    for key, secret_id in (get(chart, "externalSecrets.remoteKeys") or {}).items():
        if secret_id not in tf.secret_ids:
            problems.append(
                f"helm/codigo/values-{env}.yaml: externalSecrets.remoteKeys.{key} = {secret_id!r} is not a secret "
                f"Terraform creates in {tf.project} (it creates: {', '.join(sorted(tf.secret_ids))})"
            )

    # Function secrets (values-functions.yaml and the like): created by hand, readable by the
    # External Secrets controller only under Terraform's prefix for it (codigo-<env>-)
    codigo_app = get(values(root / "gitops" / "apps" / "values.yaml"), "apps.codigo", {}) or {}
    layers = [chart_defaults] + [values(root / "helm" / "codigo" / f.replace("<env>", env))
                                 for f in codigo_app.get("helmValueFiles", [])]
    functions, prefix, external = [], None, False
    for layer in layers:
        functions = layer.get("functions", functions) or []
        prefix = get(layer, "externalSecrets.functionRemoteKeyPrefix", prefix)
        external = get(layer, "externalSecrets.enabled", external)
    for item in functions if external else []:
        if "image" not in item:
            continue  # an existing Service: its secret is its owners' business
        name = item.get("name") or re.sub(r"[._]", "-", item["type"])
        secret_id = (item.get("secret") or {}).get("remoteKey") or f"{prefix}{name}"
        if not secret_id.startswith(f"{tf.name}-"):
            problems.append(
                f"helm/codigo: function {item['type']} reads secret {secret_id!r}; the External Secrets controller "
                f"may read only {tf.name}-* in {tf.project} (set externalSecrets.functionRemoteKeyPrefix in values-{env}.yaml)"
            )

    # ... and those the platform chart's ExternalSecrets read (remoteRef key: printf "codigo-%s-...")
    for template in sorted((root / "gitops" / "platform" / "templates").glob("*.yaml")):
        for suffix in re.findall(r'key:\s*\{\{-?\s*printf\s+"codigo-%s-([\w%-]+)"', template.read_text()):
            users = ("producer", "consumer", "ctl") if "%s" in suffix else ("",)
            for user in users:
                secret_id = f"{tf.name}-{suffix.replace('%s', user)}"
                if secret_id not in tf.secret_ids:
                    problems.append(f"{where(template)}: reads {secret_id!r}, which Terraform does not create")

    # Network: Postgres egress is exactly Terraform's private service access range
    cidrs = get(chart, "networkPolicy.postgres.cidrs", get(chart_defaults, "networkPolicy.postgres.cidrs", []))
    nets = []
    for cidr in cidrs or []:
        try:
            nets.append(ipaddress.ip_network(str(cidr)))
        except ValueError:
            problems.append(f"helm/codigo/values-{env}.yaml: networkPolicy.postgres.cidrs has {cidr!r}, not a CIDR")
    if nets != [tf.psa_cidr]:
        problems.append(
            f"helm/codigo/values-{env}.yaml: networkPolicy.postgres.cidrs is {[str(n) for n in nets]}; Cloud SQL lives "
            f"in Terraform's private_service_access_cidr {tf.psa_cidr} ({env}.tfvars)"
        )

    # Cloud SQL private address: allocated by Google at apply time, so never committed
    exporter_values = gitops / "postgres-exporter.yaml"
    host = get(values(exporter_values), "config.datasource.host")
    if host:
        inside = ""
        try:
            inside = "inside" if ipaddress.ip_address(str(host)) in tf.psa_cidr else "outside"
        except ValueError:
            inside = "not an address, and"
        problems.append(
            f"{where(exporter_values)}: config.datasource.host {host!r} is a committed guess ({inside} Terraform's "
            f"{tf.psa_cidr}); Google assigns the address at apply time, so read it from Secret Manager at sync time"
        )

    # JetStream backups: the CronJob (gitops/platform) runs as the identity Terraform binds
    # and writes to the bucket Terraform creates; the template derives both from the
    # project with Terraform's formulas, from these values:
    platform_defaults = values(root / "gitops" / "platform" / "values.yaml")
    backup = {**(platform_defaults.get("natsBackup") or {}), **(values(platform_values).get("natsBackup") or {})}
    if not backup.get("enabled"):
        problems.append("gitops/platform: natsBackup.enabled is false: docs/DR.md promises JetStream snapshots")
    else:
        namespace = (platform_defaults.get("namespaces") or {}).get("codigo")
        ksa = f"{namespace}/{backup.get('kubernetesServiceAccount')}"
        email = f"{backup.get('serviceAccountId')}@{tf.project}.iam.gserviceaccount.com"
        if ksa != tf.backup_ksa or tf.gsa.get(ksa) != email:
            problems.append(
                f"gitops/platform natsBackup runs as {ksa} annotated {email}; Terraform binds "
                f"{tf.gsa[tf.backup_ksa]} to {tf.backup_ksa}"
            )
        template = (root / "gitops" / "platform" / "templates" / "nats-backup.yaml").read_text()
        if '"%s-jetstream-backups"' not in template or tf.backup_bucket != f"{tf.project}-jetstream-backups":
            problems.append(f"gitops/platform/templates/nats-backup.yaml must write to Terraform's bucket {tf.backup_bucket}")
    return problems


def check_placeholders(root: Path) -> list[str]:
    problems = []
    paths = sorted(
        list((root / "terraform").rglob("*.tfvars"))
        + list((root / "gitops").rglob("*.yaml"))
        + list((root / "helm" / "codigo").glob("values*.yaml"))
    )
    for path in paths:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            for pattern, what in (
                (PLACEHOLDER_EMAIL, "an example.* contact address (providers refuse it)"),
                (PLACEHOLDER_BILLING, "an all-zero billing account"),
                (PLACEHOLDER_PROJECT_NUMBER, "an all-zero project number"),
            ):
                match = pattern.search(code)
                if match:
                    problems.append(
                        f"{path.relative_to(root)}:{number}: {match.group(0)!r} is {what}; make it a variable that "
                        "fails with a clear error when unset"
                    )
    return problems


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(sys.argv[1]).resolve()
    failed = 0
    results = [(f"GitOps and Helm values agree with Terraform ({env})", lambda env=env: check_env(root, env)) for env in ENVIRONMENTS]
    results.append(("no placeholder a provider would refuse in committed data", lambda: check_placeholders(root)))
    for name, run in results:
        try:
            problems = run()
        except (KeyError, OSError, ValueError) as exc:
            problems = [f"cannot read what Terraform decides: {exc!r}"]
        if problems:
            failed += 1
            print(f"not ok {name}:")
            for problem in problems:
                print(f"    {problem}")
        else:
            print(f"ok {name}")
    print(f"summary: {len(results) - failed} ok, {failed} not ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
