#!/usr/bin/env python3
"""Alerts reach people: the Alertmanager configuration that kube-prometheus-stack deploys
(gitops/values/kube-prometheus-stack.yaml, merged with each environment's values) is
accepted by `amtool check-config`, and `amtool config routes test` sends every alert of
observability/prometheus/rules to the receiver its severity names (page -> PagerDuty,
ticket -> Slack; the chart's stock critical/warning likewise). Receivers read their
credentials from files mounted from a Secret that the platform app syncs from the secret
store, never from inline values. Stock alerts for control-plane components that GKE
manages (and does not expose) are switched off.

Usage: check_alertmanager.py AMTOOL
"""

from __future__ import annotations

import copy
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
KPS = ROOT / "gitops" / "values" / "kube-prometheus-stack.yaml"
RULES = ROOT / "observability" / "prometheus" / "rules"
ENVS = ("dev", "qa", "preprod", "prod")
# severity -> the kind of receiver it must reach
SEVERITY_RECEIVER = {"page": "pagerduty", "critical": "pagerduty", "ticket": "slack", "warning": "slack"}
# Alerts of the chart that only signal the pipeline works; they must not page anyone.
SILENT = {"Watchdog": "null", "InfoInhibitor": "null"}
# GKE runs these outside the cluster and exposes no metrics for them: their stock alerts
# would fire (TargetDown, *Absent) forever. Switched off in the chart and in defaultRules.
GKE_MANAGED_COMPONENTS = ("kubeControllerManager", "kubeScheduler", "kubeEtcd", "kubeProxy")
GKE_MANAGED_RULE_GROUPS = ("etcd", "kubeControllerManager", "kubeSchedulerAlerting", "kubeSchedulerRecording", "kubeProxy")


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def our_alerts() -> list[tuple[str, str]]:
    alerts = []
    for path in sorted(RULES.glob("*.yml")):
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups", []):
            for rule in group.get("rules", []):
                if "alert" in rule:
                    alerts.append((rule["alert"], str((rule.get("labels") or {}).get("severity", ""))))
    return alerts


def receiver_kind(receiver: dict) -> str:
    kinds = [k.removesuffix("_configs") for k in receiver if k.endswith("_configs")]
    return kinds[0] if len(kinds) == 1 else ("null" if not kinds else "mixed")


def mounted_dirs(values: dict) -> set[str]:
    spec = values.get("alertmanager", {}).get("alertmanagerSpec", {})
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    dirs = {f"/etc/alertmanager/secrets/{s}" for s in spec.get("secrets", [])}
    for mount in spec.get("volumeMounts", []):
        if "secret" in volumes.get(mount["name"], {}):
            dirs.add(mount["mountPath"].rstrip("/"))
    return dirs


def check_env(env: str, amtool: str, alerts: list[tuple[str, str]]) -> list[str]:
    problems = []
    values = yaml.safe_load(KPS.read_text()) or {}
    env_file = ROOT / "gitops" / "environments" / env / "values" / "kube-prometheus-stack.yaml"
    if env_file.is_file():
        values = deep_merge(values, yaml.safe_load(env_file.read_text()) or {})
    config = values.get("alertmanager", {}).get("config")
    if not config:
        return ["alertmanager.config is not set: the chart's default routes every alert to a receiver that sends nothing"]

    for component in GKE_MANAGED_COMPONENTS:
        if values.get(component, {}).get("enabled", True) is not False:
            problems.append(f"{component}.enabled must be false: GKE manages it and exposes no metrics, so its stock alerts always fire")
    rules = values.get("defaultRules", {}).get("rules", {})
    for group in GKE_MANAGED_RULE_GROUPS:
        if rules.get(group, True) is not False:
            problems.append(f"defaultRules.rules.{group} must be false on GKE's managed control plane")

    receivers = {r["name"]: r for r in config.get("receivers", [])}
    dirs = mounted_dirs(values)
    for name, receiver in receivers.items():
        for kind_key, confs in receiver.items():
            if not kind_key.endswith("_configs"):
                continue
            for conf in confs:
                for inline in ("routing_key", "service_key", "api_url", "url"):
                    if inline in conf:
                        problems.append(f"receiver {name}: {inline} is inline; use {inline}_file from the mounted Secret")
                for key, value in conf.items():
                    if key.endswith("_file") and str(value).rsplit("/", 1)[0] not in dirs:
                        problems.append(f"receiver {name}: {key} {value} is not in a mounted Secret ({sorted(dirs)})")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "alertmanager.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        p = subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True)
        if p.returncode != 0:
            return problems + [f"amtool check-config: {p.stdout}{p.stderr}".strip()]
        cases = [(a, s) for a, s in alerts] + [("KubePodCrashLooping", "warning"), ("KubeNodeNotReady", "critical")]
        cases += [(a, "none") for a in SILENT]
        for alert, severity in cases:
            p = subprocess.run(
                [amtool, "config", "routes", "test", "--config.file", str(path), f"alertname={alert}", f"severity={severity}"],
                capture_output=True, text=True,
            )
            got = p.stdout.strip().split(",")
            if p.returncode != 0 or not got or not got[0]:
                problems.append(f"{alert} (severity={severity}): amtool config routes test failed: {p.stdout}{p.stderr}".strip())
                continue
            want = SILENT.get(alert) or SEVERITY_RECEIVER.get(severity)
            if want is None:
                problems.append(f"{alert}: severity {severity!r} names no receiver (use one of {sorted(SEVERITY_RECEIVER)})")
                continue
            kinds = {receiver_kind(receivers.get(r, {})) for r in got}
            if kinds != {want}:
                problems.append(f"{alert} (severity={severity}) reaches {got} ({sorted(kinds)}), want a {want} receiver")
    return problems


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    alerts = our_alerts()
    failed = 0
    if not alerts:
        print("not ok alertmanager: no alerts found under observability/prometheus/rules")
        return 1
    for env in ENVS:
        problems = check_env(env, sys.argv[1], alerts)
        name = f"alertmanager {env}: amtool check-config; {len(alerts)} alerts routed by severity; GKE-managed components off"
        if problems:
            failed += 1
            print(f"not ok {name}:")
            for problem in problems:
                print(f"    {problem}")
        else:
            print(f"ok {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
