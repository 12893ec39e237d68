"""The NATS cluster is closed to strangers: evaluate the NetworkPolicies rendered for the
nats namespace (ingress, as Kubernetes does: a pod selected by any policy admits only
what some policy's rule allows) for the peers that exist, and check that cluster routes
are TLS with verified peer certificates.

Peers are described by namespace and pod labels, as the charts label them.
"""

from __future__ import annotations

from dataclasses import dataclass

NATS_SERVER = {"app.kubernetes.io/name": "nats", "app.kubernetes.io/instance": "nats",
               "app.kubernetes.io/component": "nats"}
PORTS = {"client": 4222, "cluster": 6222, "monitor": 8222, "metrics": 7777}


@dataclass(frozen=True)
class Peer:
    name: str
    namespace: str
    labels: tuple[tuple[str, str], ...]

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


PEERS = {
    "codigo producer": Peer("codigo producer", "codigo", (("app.kubernetes.io/component", "producer"), ("app.kubernetes.io/name", "codigo"))),
    "codigo consumer": Peer("codigo consumer", "codigo", (("app.kubernetes.io/component", "consumer"), ("app.kubernetes.io/name", "codigo"))),
    "nats server": Peer("nats server", "nats", tuple(sorted(NATS_SERVER.items()))),
    "keda operator": Peer("keda operator", "keda", (("app", "keda-operator"), ("app.kubernetes.io/name", "keda-operator"))),
    "prometheus": Peer("prometheus", "monitoring", (("app.kubernetes.io/name", "prometheus"),)),
    "grafana": Peer("grafana", "monitoring", (("app.kubernetes.io/name", "grafana"),)),
    "a pod in default": Peer("a pod in default", "default", (("run", "curl"),)),
    "another codigo-namespace pod": Peer("another codigo-namespace pod", "codigo", (("run", "debug"),)),
}
# peer -> the ports it must reach; every other (peer, port) pair must be refused.
NEEDS = {
    "codigo producer": {"client"},
    "codigo consumer": {"client"},
    "nats server": {"cluster"},
    "keda operator": {"monitor"},
    "prometheus": {"metrics"},
}


def matches(selector: dict | None, labels: dict) -> bool:
    if selector is None:
        return True
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        value = labels.get(expr["key"])
        op = expr["operator"]
        if op == "In" and value not in expr.get("values", []):
            return False
        if op == "NotIn" and value in expr.get("values", []):
            return False
        if op == "Exists" and expr["key"] not in labels:
            return False
        if op == "DoesNotExist" and expr["key"] in labels:
            return False
    return True


def allowed(policies: list[dict], target_ns: str, target_labels: dict, src: Peer, port: int) -> bool:
    selecting = [p for p in policies
                 if p["metadata"].get("namespace") == target_ns
                 and "Ingress" in (p["spec"].get("policyTypes") or ["Ingress"])
                 and matches(p["spec"].get("podSelector") or {}, target_labels)]
    if not selecting:
        return True  # no policy selects the pod: everything may connect
    ns_labels = {"kubernetes.io/metadata.name": src.namespace}
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(p.get("port") in (port, None) for p in ports):
                continue
            froms = rule.get("from")
            if not froms:
                return True
            for f in froms:
                if "ipBlock" in f:
                    return True  # an address range admits pods too; refuse to reason further
                ns_sel, pod_sel = f.get("namespaceSelector"), f.get("podSelector")
                same_ns = ns_sel is None
                if same_ns and src.namespace != target_ns:
                    continue
                if ns_sel is not None and not matches(ns_sel, ns_labels):
                    continue
                if matches(pod_sel or {}, src.label_map):
                    return True
    return False


def findings(objs: list[dict], nats_values: dict) -> list[str]:
    policies = [o for o in objs if o.get("kind") == "NetworkPolicy"]
    problems = []
    for name, src in PEERS.items():
        for port_name, port in PORTS.items():
            ok = allowed(policies, "nats", NATS_SERVER, src, port)
            want = port_name in NEEDS.get(name, set())
            if ok and not want:
                problems.append(f"{name} ({src.namespace}) reaches the NATS servers' {port_name} port {port}; it must not")
            if want and not ok:
                problems.append(f"{name} ({src.namespace}) cannot reach the NATS servers' {port_name} port {port}; it needs it")
    cluster = nats_values.get("config", {}).get("cluster", {})
    tls = cluster.get("tls", {})
    if not tls.get("enabled"):
        problems.append("config.cluster.tls.enabled must be true: routes carry every message in clear otherwise")
    elif not (tls.get("merge") or {}).get("verify"):
        problems.append("config.cluster.tls.merge.verify must be true: a route must present a certificate of the internal CA")
    if not nats_values.get("tlsCA", {}).get("enabled"):
        problems.append("tlsCA must name the internal CA so that servers can verify each other's route certificates")
    return problems
