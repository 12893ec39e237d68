"""Runbooks that run: every `kubectl` command in the docs names objects (kind, name,
namespace, label selector) that the rendered manifests contain, never scales what an
autoscaler owns (KEDA ScaledObject or HPA: the scaler undoes it within seconds) and never
rolls back with `rollout undo` (Argo CD's self-heal restores what git says; a rollback is a
revert in git).

The inventory is what `make test` renders (the codigo chart per environment, the
platform chart) plus REMOTE_OBJECTS: the objects of the remote charts (release names
fixed by gitops/apps) that runbooks may name, since those charts cannot be rendered
offline.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

KINDS = {
    "deploy": "Deployment", "deployment": "Deployment", "deployments": "Deployment",
    "sts": "StatefulSet", "statefulset": "StatefulSet", "statefulsets": "StatefulSet",
    "svc": "Service", "service": "Service", "services": "Service",
    "job": "Job", "jobs": "Job",
    "po": "Pod", "pod": "Pod", "pods": "Pod",
    "scaledobject": "ScaledObject", "scaledobjects": "ScaledObject",
    "hpa": "HorizontalPodAutoscaler",
    "pdb": "PodDisruptionBudget",
    "externalsecret": "ExternalSecret", "externalsecrets": "ExternalSecret",
    "certificate": "Certificate", "certificates": "Certificate",
    "ingress": "Ingress", "ingresses": "Ingress",
    "pvc": "PersistentVolumeClaim",
    "application": "Application", "applications": "Application",
    "cm": "ConfigMap", "configmap": "ConfigMap",
    "secret": "Secret", "secrets": "Secret",
    "cronjob": "CronJob", "cronjobs": "CronJob",
    "networkpolicy": "NetworkPolicy", "netpol": "NetworkPolicy",
    "events": "Event", "event": "Event",
}
# Kinds whose objects exist at run time without being rendered (pods of a workload, events).
RUNTIME_KINDS = {"Pod", "Event", "PersistentVolumeClaim", "Secret"}
# Verbs that take resources; others (apply -f, run, create -f -, config) name none.
RESOURCE_VERBS = {"get", "describe", "logs", "exec", "delete", "scale", "rollout", "port-forward",
                  "annotate", "label", "top", "wait", "edit", "patch"}

# name, namespace, kind, labels (pod labels for workloads). Release names: gitops/apps.
REMOTE_OBJECTS: list[tuple[str, str, str, dict]] = [
    ("nats", "nats", "StatefulSet", {"app.kubernetes.io/name": "nats", "app.kubernetes.io/instance": "nats"}),
    ("nats", "nats", "Service", {}),
    ("nats-headless", "nats", "Service", {}),
    ("kube-prometheus-stack-grafana", "monitoring", "Service", {}),
    ("kube-prometheus-stack-grafana", "monitoring", "Deployment", {"app.kubernetes.io/name": "grafana"}),
    ("prometheus-operated", "monitoring", "Service", {}),
    ("alertmanager-operated", "monitoring", "Service", {}),
    ("loki-gateway", "monitoring", "Service", {}),
    ("loki", "monitoring", "Service", {}),
    ("tempo", "monitoring", "Service", {}),
    ("traefik", "traefik", "Service", {}),
    ("traefik", "traefik", "Deployment", {"app.kubernetes.io/name": "traefik"}),
    ("keda-operator", "keda", "Deployment", {"app": "keda-operator"}),
]


@dataclass
class Obj:
    kind: str
    name: str
    namespace: str
    labels: dict = field(default_factory=dict)
    pod_labels: dict = field(default_factory=dict)


@dataclass
class Inventory:
    objs: list[Obj]
    scaled: set[tuple[str, str]]  # (namespace, deployment) owned by a ScaledObject or HPA

    @classmethod
    def build(cls, rendered: list[tuple[str, dict]]) -> "Inventory":
        objs, scaled = [], set()
        for namespace, o in rendered:
            md = o.get("metadata", {})
            ns = md.get("namespace") or namespace
            spec = o.get("spec") if isinstance(o.get("spec"), dict) else {}
            pod_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
            objs.append(Obj(o["kind"], md["name"], ns, md.get("labels") or {}, pod_labels))
            if o["kind"] in ("ScaledObject", "HorizontalPodAutoscaler"):
                target = spec.get("scaleTargetRef") or {}
                if target.get("kind", "Deployment") == "Deployment":
                    scaled.add((ns, target.get("name")))
        for name, ns, kind, labels in REMOTE_OBJECTS:
            objs.append(Obj(kind, name, ns, labels, labels))
        return cls(objs, scaled)

    def namespaces(self) -> set[str]:
        return {o.namespace for o in self.objs}

    def find(self, kind: str, name: str, ns: str) -> bool:
        if "<" in name:
            # a placeholder (codigo-consumer-<group>) stands for any name of that shape
            pattern = "".join("[\\w-]+" if part.startswith("<") else re.escape(part)
                              for part in re.split(r"(<[^>]*>)", name))
            return any(o.kind == kind and o.namespace == ns and re.fullmatch(pattern, o.name) for o in self.objs)
        if kind == "Pod":
            # pods of a StatefulSet (name-0, name-N) or of a Deployment (name-<hash>-<id>)
            return any(o.namespace == ns and o.kind in ("StatefulSet", "Deployment", "Job")
                       and re.fullmatch(re.escape(o.name) + r"-(\d+|N|[\w-]+)", name) for o in self.objs)
        return any(o.kind == kind and o.name == name and o.namespace == ns for o in self.objs)

    def select(self, kinds: list[str], selector: dict, ns: str) -> bool:
        for o in self.objs:
            if o.namespace != ns:
                continue
            for kind in kinds:
                labels = o.pod_labels if kind == "Pod" and o.kind in ("Deployment", "StatefulSet", "Job") else (
                    o.labels if o.kind == kind else None)
                if labels is not None and all(labels.get(k) == v for k, v in selector.items()):
                    return True
        return False


def kubectl_commands(text: str) -> list[tuple[int, str]]:
    """(line number, command) of every kubectl invocation in fenced blocks and inline code."""
    out = []
    in_fence = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        chunks = [line] if in_fence else re.findall(r"`([^`]*kubectl[^`]*)`", line)
        for chunk in chunks:
            for part in re.split(r"\s*(?:\||&&|;|\$\(|&(?!\w))\s*", chunk):
                part = part.strip()
                if part.startswith("kubectl "):
                    out.append((number, part.split(" #")[0].strip()))
    return out


def check_command(cmd: str, inv: Inventory) -> list[str]:
    try:
        words = shlex.split(cmd)
    except ValueError:
        words = cmd.split()
    # shell redirections end the command; annotations/labels (k=v) and shell variables
    # are not object names
    for index, w in enumerate(words):
        if re.match(r"^\d*[<>]", w):
            words = words[:index]
            break
    ns = "default"
    selector: dict | None = None
    args: list[str] = []
    i = 1
    while i < len(words):
        w = words[i]
        if w in ("-n", "--namespace"):
            ns = words[i + 1] if i + 1 < len(words) else ns
            i += 2
            continue
        if w.startswith("--namespace="):
            ns = w.split("=", 1)[1]
        elif w in ("-l", "--selector"):
            raw = words[i + 1] if i + 1 < len(words) else ""
            selector = dict(p.split("=", 1) for p in raw.split(",") if "=" in p)
            i += 2
            continue
        elif w == "--":
            break
        elif w.startswith("-"):
            # flags with a separate value
            if w in ("-c", "--container", "-o", "--output", "--replicas", "--since", "--tail", "--timeout",
                     "--for", "--sort-by", "--image", "--restart"):
                i += 2
                continue
        elif "=" not in w:
            args.append(w)
        i += 1
    if not args:
        return []
    verb, rest = args[0], args[1:]
    problems = []
    if verb == "rollout" and rest[:1] == ["undo"]:
        return [f"`{cmd}`: Argo CD's self-heal puts back what git says within minutes; roll back by reverting in git"]
    if verb == "rollout":
        rest = rest[1:]
    if verb not in RESOURCE_VERBS or (not rest and not selector):
        return []  # names no object (prose such as `kubectl scale`, or apply -f / run)
    if ns not in inv.namespaces():
        return [f"`{cmd}`: namespace {ns!r} holds nothing the manifests deploy"]
    refs: list[tuple[str, str | None]] = []
    if rest and "/" in rest[0]:
        for token in rest:
            if "/" in token:
                kind, name = token.split("/", 1)
                refs.append((KINDS.get(kind.lower(), kind), name))
    elif rest:
        kinds = [KINDS.get(k.lower()) for k in rest[0].split(",")]
        if verb in ("logs", "exec", "port-forward", "top") and verb != "top":
            kinds, names = ["Pod"], rest[:1]
        elif verb == "top":
            kinds, names = [KINDS.get(rest[0].lower(), "Pod")], rest[1:2]
        else:
            names = rest[1:2] if len(rest) > 1 and not rest[1].startswith("<") else []
        if None in kinds:
            return [f"`{cmd}`: unknown kind in {rest[0]!r}"]
        if names and names[0] not in ("--all",):
            refs.extend((k, names[0]) for k in kinds)
        elif selector and any("$" in v for v in selector.values()):
            pass  # selects what the command itself created
        elif selector:
            if not inv.select(kinds, selector, ns):
                problems.append(f"`{cmd}`: no {'/'.join(kinds)} in {ns} has labels {selector}")
        else:
            for k in kinds:
                if k not in RUNTIME_KINDS and not any(o.kind == k and o.namespace == ns for o in inv.objs):
                    problems.append(f"`{cmd}`: the manifests deploy no {k} in {ns}")
    for kind, name in refs:
        if name.startswith("<") or "$" in name:  # the whole name is the reader's to fill in
            continue
        if not inv.find(kind, name, ns):
            problems.append(f"`{cmd}`: no {kind} {name!r} in namespace {ns} in the rendered manifests")
    if verb == "scale":
        targets = [(k, n) for k, n in refs if k == "Deployment"]
        if selector:
            targets += [("Deployment", o.name) for o in inv.objs if o.kind == "Deployment" and o.namespace == ns
                        and all(o.labels.get(k) == v for k, v in selector.items())]
        for _, name in targets:
            if (ns, name) in inv.scaled:
                problems.append(
                    f"`{cmd}`: {ns}/{name} is scaled by KEDA or an HPA, which undoes a manual scale; "
                    "change the ScaledObject/HPA bounds in git (or pause the ScaledObject) instead"
                )
    return problems


def check_docs(paths: list[Path], inv: Inventory, root: Path) -> list[str]:
    problems = []
    count = 0
    for path in paths:
        for number, cmd in kubectl_commands(path.read_text()):
            count += 1
            for problem in dict.fromkeys(check_command(cmd, inv)):
                problems.append(f"{path.relative_to(root)}:{number}: {problem}")
    if count == 0:
        problems.append("no kubectl command found in the runbooks: the check read nothing")
    return problems
