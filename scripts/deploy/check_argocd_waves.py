"""Argo CD converges on an empty cluster: order the Applications of gitops/apps by sync
wave and prove that every custom resource an application renders has its CRD installed by
an application of an earlier wave (or by itself).

Sync waves between Applications are gates (gitops/bootstrap/argocd-values.yaml makes a
child Application's health count): wave N+1 starts only once every application of wave N
is Healthy. So an application that renders a kind whose CRD arrives only in a later wave
can never become Healthy, and the first sync deadlocks. A CRD from an application of the
same wave races: it converges only when the consumer skips the dry run
(SkipDryRunOnMissingResource) and retries until the CRD is there.

Remote charts cannot be rendered here (no chart repositories), so REMOTE_CHARTS says, per
chart, which CRD groups it installs and which custom resources it renders under which
values; an application on a chart missing from it fails the check. Local charts (path
sources) are rendered with the Helm SDK and their kinds read from the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

# Kinds every cluster has (no CRD needed): the core and built-in API groups.
BUILTIN_GROUPS = {
    "", "apps", "batch", "policy", "autoscaling", "networking.k8s.io", "rbac.authorization.k8s.io",
    "storage.k8s.io", "scheduling.k8s.io", "coordination.k8s.io", "admissionregistration.k8s.io",
    "apiextensions.k8s.io", "apiregistration.k8s.io", "discovery.k8s.io", "certificates.k8s.io",
    "node.k8s.io", "flowcontrol.apiserver.k8s.io",
}


@dataclass(frozen=True)
class When:
    """A values condition: every path true (dotted path, chart default when unset)."""

    paths: tuple[tuple[str, bool], ...] = ()

    def holds(self, values: dict) -> bool:
        return all(bool(lookup(values, path, default)) for path, default in self.paths)


ALWAYS = When()


def when(*paths: tuple[str, bool]) -> When:
    return When(tuple(paths))


# chart name -> (CRD groups it installs, under which values), [(group, kind, under which values)]
REMOTE_CHARTS: dict[str, dict] = {
    "cert-manager": {
        "crds": [(("cert-manager.io", "acme.cert-manager.io"), when(("crds.enabled", False))),
                 (("cert-manager.io", "acme.cert-manager.io"), when(("installCRDs", False)))],
        "renders": [("monitoring.coreos.com", "ServiceMonitor",
                     when(("prometheus.enabled", True), ("prometheus.servicemonitor.enabled", False))),
                    ("monitoring.coreos.com", "PodMonitor",
                     when(("prometheus.enabled", True), ("prometheus.podmonitor.enabled", False)))],
    },
    "external-secrets": {
        "crds": [(("external-secrets.io", "generators.external-secrets.io"), when(("installCRDs", True)))],
        "renders": [("monitoring.coreos.com", "ServiceMonitor", when(("serviceMonitor.enabled", False)))],
    },
    "keda": {
        "crds": [(("keda.sh", "eventing.keda.sh"), when(("crds.install", True)))],
        "renders": [
            ("monitoring.coreos.com", "ServiceMonitor",
             when(("prometheus.operator.enabled", False), ("prometheus.operator.serviceMonitor.enabled", False))),
            ("monitoring.coreos.com", "ServiceMonitor",
             when(("prometheus.metricServer.enabled", False), ("prometheus.metricServer.serviceMonitor.enabled", False))),
            ("monitoring.coreos.com", "ServiceMonitor",
             when(("prometheus.webhooks.enabled", False), ("prometheus.webhooks.serviceMonitor.enabled", False))),
            ("monitoring.coreos.com", "PodMonitor",
             when(("prometheus.operator.enabled", False), ("prometheus.operator.podMonitor.enabled", False))),
            ("monitoring.coreos.com", "PrometheusRule",
             when(("prometheus.operator.enabled", False), ("prometheus.operator.prometheusRules.enabled", False))),
        ],
    },
    "kube-prometheus-stack": {
        "crds": [(("monitoring.coreos.com",), when(("crds.enabled", True)))],
        "renders": [("monitoring.coreos.com", "Prometheus", when(("prometheus.enabled", True))),
                    ("monitoring.coreos.com", "Alertmanager", when(("alertmanager.enabled", True))),
                    ("monitoring.coreos.com", "PrometheusRule", when(("defaultRules.create", True))),
                    ("monitoring.coreos.com", "ServiceMonitor", ALWAYS)],
    },
    "traefik": {
        # CRDs come from the chart's crds/ directory, which Argo CD always applies.
        "crds": [(("traefik.io", "hub.traefik.io"), ALWAYS)],
        "renders": [("monitoring.coreos.com", "ServiceMonitor", when(("metrics.prometheus.serviceMonitor.enabled", False))),
                    ("monitoring.coreos.com", "PrometheusRule", when(("metrics.prometheus.prometheusRule.enabled", False)))],
    },
    "nats": {
        "crds": [],
        "renders": [("monitoring.coreos.com", "PodMonitor",
                     when(("promExporter.enabled", False), ("promExporter.podMonitor.enabled", False)))],
    },
    "loki": {
        "crds": [],
        "renders": [("monitoring.coreos.com", "ServiceMonitor", when(("monitoring.serviceMonitor.enabled", False))),
                    ("monitoring.coreos.com", "PrometheusRule", when(("monitoring.rules.enabled", False)))],
    },
    "alloy": {
        "crds": [],
        "renders": [("monitoring.coreos.com", "ServiceMonitor", when(("serviceMonitor.enabled", False)))],
    },
    "tempo": {
        "crds": [],
        "renders": [("monitoring.coreos.com", "ServiceMonitor", when(("serviceMonitor.enabled", False)))],
    },
    "opentelemetry-collector": {
        "crds": [],
        "renders": [("monitoring.coreos.com", "ServiceMonitor", when(("serviceMonitor.enabled", False))),
                    ("monitoring.coreos.com", "PodMonitor", when(("podMonitor.enabled", False))),
                    ("monitoring.coreos.com", "PrometheusRule", when(("prometheusRule.enabled", False)))],
    },
    "prometheus-postgres-exporter": {
        "crds": [],
        "renders": [("monitoring.coreos.com", "ServiceMonitor", when(("serviceMonitor.enabled", False))),
                    ("monitoring.coreos.com", "PrometheusRule", when(("prometheusRule.enabled", False)))],
    },
    "opencost": {
        "crds": [],
        "renders": [("monitoring.coreos.com", "ServiceMonitor", when(("opencost.metrics.serviceMonitor.enabled", False)))],
    },
}


def lookup(values: dict, path: str, default):
    node = values
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def group_of(api_version: str) -> str:
    return api_version.split("/")[0] if "/" in api_version else ""


@dataclass
class App:
    name: str
    wave: int
    sync_options: list[str]
    provides: set[str]
    renders: set[tuple[str, str]]  # (group, kind)


def remote_app(name: str, wave: int, spec: dict, root: Path, deep_merge) -> App:
    chart_src = [s for s in spec["sources"] if s.get("chart")][0]
    chart = chart_src["chart"]
    if chart not in REMOTE_CHARTS:
        raise AssertionError(
            f"{name}: chart {chart!r} is not in REMOTE_CHARTS of scripts/deploy/check_argocd_waves.py; "
            "add the CRD groups it installs and the custom resources it renders"
        )
    values: dict = {}
    for vf in chart_src.get("helm", {}).get("valueFiles", []):
        values = deep_merge(values, yaml.safe_load((root / vf.removeprefix("$values/")).read_text()) or {})
    info = REMOTE_CHARTS[chart]
    provides = {g for groups, cond in info["crds"] if cond.holds(values) for g in groups}
    renders = {(g, k) for g, k, cond in info["renders"] if cond.holds(values)}
    return App(name, wave, spec.get("syncPolicy", {}).get("syncOptions", []), provides, renders)


def local_app(name: str, wave: int, spec: dict, objs: list[dict]) -> App:
    provides = {o["spec"]["group"] for o in objs if o.get("kind") == "CustomResourceDefinition"}
    renders = {(group_of(o.get("apiVersion", "")), o["kind"]) for o in objs}
    return App(name, wave, spec.get("syncPolicy", {}).get("syncOptions", []), provides, renders)


def findings(apps: list[App]) -> list[str]:
    """Why the first sync on an empty cluster would not converge (empty: it converges)."""
    problems = []
    for app in sorted(apps, key=lambda a: (a.wave, a.name)):
        for group, kind in sorted(app.renders):
            if group in BUILTIN_GROUPS or group in app.provides:
                continue
            providers = [p for p in apps if group in p.provides]
            if not providers:
                problems.append(
                    f"{app.name} (wave {app.wave}) renders {kind} ({group}), whose CRD no application installs: "
                    "add the application that brings it, or switch the resource off"
                )
                continue
            first = min(providers, key=lambda p: p.wave)
            if first.wave > app.wave:
                problems.append(
                    f"{app.name} (wave {app.wave}) renders {kind} ({group}), whose CRD arrives with {first.name} "
                    f"in the later wave {first.wave}: {app.name} can never become Healthy, so wave {first.wave} "
                    "never starts (deadlock). Move the resource to an application after the CRD, or the CRD earlier"
                )
            elif first.wave == app.wave and "SkipDryRunOnMissingResource=true" not in app.sync_options:
                problems.append(
                    f"{app.name} (wave {app.wave}) renders {kind} ({group}), whose CRD arrives with {first.name} "
                    f"in the same wave: the dry run fails before the CRD exists. Sync {app.name} after "
                    f"{first.name}, or give it SkipDryRunOnMissingResource=true"
                )
    return problems
