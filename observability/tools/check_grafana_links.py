#!/usr/bin/env python3
"""Logs and traces link both ways in Grafana (docs/OBSERVABILITY.md, "Log to trace" and
"Trace to logs"): the Loki data source's derived field finds the trace id in the log line
the services actually write (the example in the docs) and opens it in the Tempo data source;
the Tempo data source's trace-to-logs query points at Loki and filters on that trace id.
Grafana's own ${...} variables are escaped ($$) because provisioning expands $VAR."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    problems = []
    values = yaml.safe_load((ROOT / "gitops" / "values" / "kube-prometheus-stack.yaml").read_text())
    sources = {d.get("type"): d for d in values.get("grafana", {}).get("additionalDataSources", [])}
    loki, tempo = sources.get("loki"), sources.get("tempo")
    if not loki or not tempo:
        problems.append("grafana.additionalDataSources needs a loki and a tempo data source")
    else:
        doc = (ROOT / "docs" / "OBSERVABILITY.md").read_text()
        line = next((l for l in doc.splitlines() if l.startswith("{") and '"trace_id"' in l), None)
        if line is None:
            problems.append("docs/OBSERVABILITY.md shows no JSON log line with trace_id to test against")
        derived = (loki.get("jsonData") or {}).get("derivedFields") or []
        to_tempo = [d for d in derived if d.get("datasourceUid") == tempo.get("uid")]
        if not to_tempo:
            problems.append(f"Loki has no derived field linking to the Tempo data source (uid {tempo.get('uid')!r})")
        for field in to_tempo:
            if line is not None:
                match = re.search(field.get("matcherRegex", "$^"), line)
                want = json.loads(line)["trace_id"]
                if not match or match.group(1) != want:
                    problems.append(f"derived field {field.get('name')!r}: regex {field.get('matcherRegex')!r} does not capture "
                                    f"trace_id {want} from the documented log line")
            url = str(field.get("url", ""))
            if "${__value.raw}" in url.replace("$${", "") or "$${__value.raw}" not in url:
                problems.append("derived field url must be $${__value.raw} (escaped: provisioning expands ${...})")
        v2 = (tempo.get("jsonData") or {}).get("tracesToLogsV2") or {}
        if v2.get("datasourceUid") != loki.get("uid"):
            problems.append(f"Tempo tracesToLogsV2.datasourceUid is {v2.get('datasourceUid')!r}, the Loki uid is {loki.get('uid')!r}")
        query = str(v2.get("query", ""))
        if not v2.get("filterByTraceID") and not (v2.get("customQuery") and "$${__trace.traceId}" in query and "trace_id" in query):
            problems.append("Tempo's trace-to-logs finds no lines of the trace: set filterByTraceID, or a customQuery on "
                            "trace_id=\"$${__trace.traceId}\" (the services log trace_id as a JSON field)")
    # The admin password comes from the secret store, not the chart's default or a value.
    grafana = values.get("grafana", {})
    secret = (grafana.get("admin") or {}).get("existingSecret")
    if grafana.get("adminPassword") or not secret:
        problems.append("grafana.admin.existingSecret must name the Secret synced from Secret Manager "
                        "(the chart otherwise uses adminPassword, default prom-operator)")
    else:
        platform = (ROOT / "gitops" / "platform" / "templates" / "secrets.yaml").read_text()
        docs = [d for d in platform.split("\n---") if "kind: ExternalSecret" in d and f"name: {secret}" in d]
        key = (grafana.get("admin") or {}).get("passwordKey", "admin-password")
        if not docs or f"{key}:" not in docs[0] or "namespaces.monitoring" not in docs[0]:
            problems.append(f"no ExternalSecret in gitops/platform makes Secret {secret} (key {key}) in the monitoring namespace")
    for problem in problems:
        print(f"    {problem}")
    print(("not ok" if problems else "ok") + " grafana: Loki -> Tempo derived field, Tempo -> Loki query, admin password from the secret store")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
