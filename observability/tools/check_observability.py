#!/usr/bin/env python3
"""Offline validation of the observability artefacts (run by scripts/check-observability.sh).

Static: metrics.txt, promtool check/test on every rule and test file, alert metadata and
runbook anchors, test coverage of every alert and recording rule, dashboard structure,
PromQL of every panel (parsed by promtool), metric names against metrics.txt and the
recording rules, docs coverage.

Live: synthetic OpenMetrics for every metric of metrics.txt (and the exporter series the
dashboards read) is backfilled into a real Prometheus through promfixture.py with the rule
files loaded; every recording rule and every dashboard query must return data.

Prints one line per check and ends with `observability: N passed, M failed`.
"""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
OBS = ROOT / "observability"
METRICS_TXT = OBS / "metrics.txt"
RULES_DIR = OBS / "prometheus" / "rules"
TESTS_DIR = OBS / "prometheus" / "tests"
DASH_DIR = OBS / "grafana" / "dashboards"
FIXTURE = OBS / "tools" / "promfixture.py"
SLO_DOC = ROOT / "docs" / "SLO_SLI_ALERTS.md"
OBS_DOC = ROOT / "docs" / "OBSERVABILITY.md"

RUNBOOK_BASE = "https://github.com/codigo/codigo/blob/main/docs/SLO_SLI_ALERTS.md#"
SLIS = ("producer_availability", "producer_latency", "job_success")
WINDOWS = ("5m", "30m", "1h", "6h", "3d", "30d")
SEVERITIES = ("page", "ticket")
DASHBOARDS = ("codigo-producer.json", "codigo-pipeline.json", "codigo-dependencies.json")

# Grafana's built-in variables, as the check substitutes them.
BUILTIN_VARS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def ok(self, name: str) -> None:
        self.passed += 1
        print(f"ok    {name}", flush=True)

    def fail(self, name: str, detail: str) -> None:
        self.failed += 1
        print(f"FAIL  {name}", flush=True)
        for line in detail.rstrip().splitlines():
            print(f"        {line}", flush=True)

    def check(self, name: str, problems: list[str]) -> bool:
        if problems:
            self.fail(name, "\n".join(problems))
            return False
        self.ok(name)
        return True


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


# ---------------------------------------------------------------------------------------
# metrics.txt

def load_metrics(rep: Report) -> dict[str, tuple[str, list[str]]]:
    metrics: dict[str, tuple[str, list[str]]] = {}
    problems = []
    for n, line in enumerate(METRICS_TXT.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) not in (2, 3):
            problems.append(f"line {n}: want '<name> <type> <labels>', got {line!r}")
            continue
        name, kind = parts[0], parts[1]
        labels = parts[2].split(",") if len(parts) == 3 else []
        if not re.fullmatch(r"codigo_[a-z0-9_]+", name):
            problems.append(f"line {n}: {name}: not a codigo_* metric name")
        if kind not in ("counter", "gauge", "histogram"):
            problems.append(f"line {n}: {name}: unknown type {kind}")
        if kind == "counter" and not name.endswith("_total"):
            problems.append(f"line {n}: counter {name} must end in _total")
        if kind == "histogram" and re.search(r"_(bucket|sum|count|total)$", name):
            problems.append(f"line {n}: list histogram {name} by its base name")
        for lbl in labels:
            if not re.fullmatch(r"[a-z_][a-z0-9_]*", lbl) or lbl in ("le", "job", "instance"):
                problems.append(f"line {n}: {name}: bad label {lbl!r}")
        if name in metrics:
            problems.append(f"line {n}: {name} listed twice")
        metrics[name] = (kind, labels)
    rep.check(f"metrics.txt: {len(metrics)} metrics well-formed", problems)
    return metrics


# ---------------------------------------------------------------------------------------
# rules

def rule_files() -> list[Path]:
    return sorted([*RULES_DIR.glob("*.yml"), *RULES_DIR.glob("*.yaml")])


def test_files() -> list[Path]:
    return sorted([*TESTS_DIR.glob("*.yml"), *TESTS_DIR.glob("*.yaml")])


def load_rules() -> tuple[list[str], list[dict]]:
    records, alerts = [], []
    for path in rule_files():
        doc = yaml.safe_load(path.read_text()) or {}
        for group in doc.get("groups", []):
            for rule in group.get("rules", []):
                if "record" in rule:
                    records.append(rule["record"])
                else:
                    alerts.append({**rule, "_file": path.name})
    return records, alerts


def markdown_anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        m = None if in_code else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        text = re.sub(r"`", "", m.group(1)).strip().lower()
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        if slug in seen:
            seen[slug] += 1
            slug = f"{slug}-{seen[slug]}"
        else:
            seen[slug] = 0
        anchors.add(slug)
    return anchors


def check_yamllint(rep: Report) -> None:
    yamllint = Path(sys.executable).with_name("yamllint")
    config = ROOT / ".yamllint"
    cmd = [str(yamllint), "--strict"]
    cmd += ["-c", str(config)] if config.exists() else ["-d", "{extends: default, rules: {line-length: {max: 120}}}"]
    res = run([*cmd, str(OBS)])
    rep.check("yamllint observability/ (repository .yamllint)",
              [] if res.returncode == 0 else [res.stdout + res.stderr])


def check_rules(rep: Report) -> tuple[list[str], list[dict]]:
    files = rule_files()
    if not files:
        rep.fail("rule files present", f"no *.yml in {RULES_DIR}")
    for path in files:
        res = run(["promtool", "check", "rules", str(path)])
        name = f"promtool check rules {path.relative_to(ROOT)}"
        if res.returncode == 0:
            rep.ok(name)
        else:
            rep.fail(name, res.stdout + res.stderr)

    records, alerts = load_rules()
    problems = [r for r in sorted(set(records))
                if not re.fullmatch(r"codigo:[a-z0-9_]+:[0-9]+[smhdw]", r)]
    rep.check(f"recording rules: {len(set(records))} named codigo:<what>:<window>",
              [f"{r}: not codigo:<what>:<window>" for r in problems])

    wanted = {"codigo:slo_objective:30d"}
    for sli in SLIS:
        wanted.add(f"codigo:{sli}_error_budget_remaining:30d")
        for w in WINDOWS:
            wanted.update({f"codigo:{sli}:{w}", f"codigo:{sli}_burn_rate:{w}"})
    missing = sorted(wanted - set(records))
    rep.check("recording rules: every SLI, burn rate and budget over 5m..30d",
              [f"missing {m}" for m in missing])

    anchors = markdown_anchors(SLO_DOC) if SLO_DOC.exists() else set()
    names = [a["alert"] for a in alerts]
    dups = {n for n in names if names.count(n) > 1}
    if dups:
        rep.fail("alert names unique", ", ".join(sorted(dups)))
    for a in alerts:
        p = []
        labels, ann = a.get("labels") or {}, a.get("annotations") or {}
        if labels.get("severity") not in SEVERITIES:
            p.append(f"severity {labels.get('severity')!r} not one of {SEVERITIES}")
        for key in ("summary", "description", "runbook_url"):
            if not str(ann.get(key, "")).strip():
                p.append(f"annotation {key} missing")
        url = str(ann.get("runbook_url", ""))
        if url and not url.startswith(RUNBOOK_BASE):
            p.append(f"runbook_url {url} does not start with {RUNBOOK_BASE}")
        elif url:
            anchor = url[len(RUNBOOK_BASE):]
            if anchor not in anchors:
                p.append(f"runbook anchor #{anchor} is not a heading in {SLO_DOC.relative_to(ROOT)}")
        rep.check(f"alert {a['alert']}: severity, summary, description, runbook anchor", p)
    return records, alerts


def check_rule_tests(rep: Report, records: list[str], alerts: list[dict]) -> None:
    files = test_files()
    if not files:
        rep.fail("rule tests present", f"no tests in {TESTS_DIR}")
    for path in files:
        res = run(["promtool", "test", "rules", path.name], cwd=TESTS_DIR)
        name = f"promtool test rules {path.relative_to(ROOT)}"
        if res.returncode == 0:
            rep.ok(name)
        else:
            rep.fail(name, res.stdout + res.stderr)

    fired: set[str] = set()
    quiet: set[str] = set()
    exprs: list[str] = []
    for path in files:
        doc = yaml.safe_load(path.read_text()) or {}
        for t in doc.get("tests", []):
            for at in t.get("alert_rule_test", []) or []:
                (fired if at.get("exp_alerts") else quiet).add(at["alertname"])
            exprs += [e["expr"] for e in t.get("promql_expr_test", []) or []]
    for a in alerts:
        n = a["alert"]
        p = []
        if n not in fired:
            p.append("no alert_rule_test expects it to fire")
        if n not in quiet:
            p.append("no alert_rule_test expects it to stay quiet")
        rep.check(f"alert {n}: unit-tested firing and not firing", p)
    untested = [r for r in sorted(set(records))
                if not any(re.search(rf"(?<![\w:]){re.escape(r)}(?![\w:])", e) for e in exprs)]
    rep.check(f"recording rules: all {len(set(records))} value-tested in promql_expr_test",
              [f"{r} has no promql_expr_test" for r in untested])


# ---------------------------------------------------------------------------------------
# dashboards

def dashboard_vars(dash: dict) -> tuple[dict[str, str], list[str]]:
    """Values to substitute for the dashboard's variables, and the metrics they query."""
    values = dict(BUILTIN_VARS)
    metrics = []
    for v in dash.get("templating", {}).get("list", []):
        name, kind = v.get("name"), v.get("type")
        if kind == "datasource":
            continue
        if kind == "query":
            values[name] = v.get("allValue") or ".+"
            q = v.get("query")
            q = q.get("query", "") if isinstance(q, dict) else str(q or "")
            m = re.match(r"\s*label_values\(\s*([a-zA-Z_:][\w:]*)", q)
            if m:
                metrics.append(m.group(1))
        else:
            cur = (v.get("current") or {}).get("value") or v.get("query", "")
            values[name] = cur[0] if isinstance(cur, list) else str(cur)
    return values, metrics


def substitute(expr: str, values: dict[str, str]) -> tuple[str, list[str]]:
    unknown = []

    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            unknown.append(name)
            return m.group(0)
        return values[name]

    out = re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", repl, expr)
    return out, unknown


def panels_of(dash: dict):
    for p in dash.get("panels", []):
        yield p
        yield from p.get("panels", []) or []


def metric_names(expr: str) -> set[str]:
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    return set(re.findall(r"(?<![\w:])codigo[_:][\w:]*", bare))


def check_dashboards(rep: Report, metrics: dict, records: list[str]) -> list[tuple[str, str, str]]:
    """Returns (dashboard, panel title, substituted expr) for every panel target."""
    queries: list[tuple[str, str, str]] = []
    record_set = set(records)
    for fname in DASHBOARDS:
        path = DASH_DIR / fname
        label = f"dashboard {fname}"
        try:
            dash = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            rep.fail(f"{label}: parses as JSON", str(exc))
            continue
        p = []
        if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
            p.append(f"schemaVersion {dash.get('schemaVersion')!r} (want >= 36)")
        if not dash.get("uid") or not dash.get("title"):
            p.append("uid and title required")
        dsvars = [v for v in dash.get("templating", {}).get("list", [])
                  if v.get("type") == "datasource" and v.get("name") == "datasource"]
        if not dsvars or dsvars[0].get("query") != "prometheus":
            p.append("no 'datasource' template variable of type datasource/prometheus")
        ids = []
        values, var_metrics = dashboard_vars(dash)
        own: list[tuple[str, str, str]] = []
        for panel in panels_of(dash):
            ids.append(panel.get("id"))
            if panel.get("type") == "row":
                continue
            title = panel.get("title", "?")
            if (panel.get("datasource") or {}).get("uid") != "${datasource}":
                p.append(f"panel {title!r}: datasource is not ${{datasource}}")
            targets = panel.get("targets") or []
            if not targets:
                p.append(f"panel {title!r}: no targets")
            for t in targets:
                if (t.get("datasource") or {}).get("uid") != "${datasource}":
                    p.append(f"panel {title!r} target {t.get('refId')}: datasource is not ${{datasource}}")
                expr, unknown = substitute(t.get("expr", ""), values)
                if unknown:
                    p.append(f"panel {title!r}: unknown variables {unknown}")
                if not expr.strip():
                    p.append(f"panel {title!r} target {t.get('refId')}: empty expr")
                own.append((fname, title, expr))
        if len(ids) != len(set(ids)):
            p.append("panel ids not unique")
        rep.check(f"{label}: structure, ${{datasource}} on every panel and target", p)

        # Metric names: codigo_* from metrics.txt, codigo:* from the rule files.
        p = []
        for _, title, expr in own + [(fname, "variable", m) for m in var_metrics]:
            for name in sorted(metric_names(expr)):
                if name.startswith("codigo:"):
                    if name not in record_set:
                        p.append(f"{title!r}: {name} is not a recording rule")
                    continue
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                if name in metrics or (base in metrics and metrics[base][0] == "histogram"):
                    continue
                p.append(f"{title!r}: {name} is not in metrics.txt")
        rep.check(f"{label}: every codigo_* metric in metrics.txt, codigo:* in rules", p)

        # PromQL parse with promtool: every expression as a recording rule.
        with tempfile.TemporaryDirectory(prefix="obs-parse-") as tmp:
            rules = {"groups": [{"name": "dashboard", "rules": [
                {"record": f"dashboard_query_{i}", "expr": e} for i, (_, _, e) in enumerate(own)]}]}
            f = Path(tmp) / "dashboard.rules.yml"
            f.write_text(yaml.safe_dump(rules, sort_keys=False))
            res = run(["promtool", "check", "rules", str(f)])
            detail = res.stdout + res.stderr
            if res.returncode != 0:
                # Map dashboard_query_N back to its panel for a readable failure.
                bad = sorted({int(i) for i in re.findall(r'"dashboard_query_(\d+)"', detail)})
                detail += "\n" + "\n".join(f"dashboard_query_{i} is panel {own[i][1]!r}: {own[i][2]}"
                                           for i in bad)
            rep.check(f"{label}: all {len(own)} PromQL queries parse (promtool)",
                      [] if res.returncode == 0 else [detail])
        queries += own
    return queries


def check_docs(rep: Report, metrics: dict, alerts: list[dict]) -> None:
    p = []
    if not OBS_DOC.exists():
        p.append(f"{OBS_DOC.relative_to(ROOT)} missing")
    else:
        text = OBS_DOC.read_text()
        p += [f"metric {m} not described" for m in metrics if m not in text]
        p += [f"dashboard {d} not described" for d in DASHBOARDS if d not in text]
    rep.check("docs/OBSERVABILITY.md: every metric and dashboard described", p)
    p = []
    if not SLO_DOC.exists():
        p.append(f"{SLO_DOC.relative_to(ROOT)} missing")
    else:
        text = SLO_DOC.read_text()
        for a in alerts:
            body = text.split(f"### {a['alert']}\n", 1)
            if len(body) != 2:
                p.append(f"no runbook section '### {a['alert']}'")
                continue
            section = body[1].split("\n### ", 1)[0]
            for part in ("Symptom", "First look", "Commands", "Mitigation", "Escalation"):
                if f"**{part}" not in section:
                    p.append(f"{a['alert']}: runbook has no **{part}** part")
    rep.check("docs/SLO_SLI_ALERTS.md: a complete runbook per alert", p)


# ---------------------------------------------------------------------------------------
# synthetic data

LABEL_VALUES = {
    "route": ["/v1/jobs", "/v1/jobs/{id}", "/healthz"],
    "method": ["POST", "GET"],
    "status": ["202", "429", "503"],
    "job_type": ["ledger.post", "webhook.deliver"],
    "result": ["accepted", "duplicate", "rejected", "error"],
    "outcome": ["ack", "nak", "term"],
    "reason": ["schema", "decode", "permanent", "max_deliveries"],
    "class": ["transient", "deployment", "job"],
}
# Relative rates, so the SLIs come out like a healthy system's (and finite).
WEIGHTS = {"429": 0.02, "503": 0.001, "duplicate": 0.05, "rejected": 0.01, "error": 0.001,
           "nak": 0.05, "term": 0.002, "schema": 0.001, "decode": 0.0005, "permanent": 0.001,
           "max_deliveries": 0.001, "transient": 0.01, "deployment": 0.0, "job": 0.001}
BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
HIST_SCALE = {"codigo_gateway_request_duration_seconds": 0.05,
              "codigo_job_processing_duration_seconds": 0.04,
              "codigo_job_end_to_end_duration_seconds": 0.3}

# Exporter and cAdvisor series the dashboards and alerts read: (name, monotonic, labels, level).
NATS = {"job": "nats", "instance": "nats-0", "server_id": "nats-0"}
JOBS = {**NATS, "stream_name": "CODIGO_JOBS"}
PG = {"job": "postgres-exporter", "instance": "postgres-exporter-0"}
POD = {"job": "kubelet", "container": "producer", "pod": "codigo-producer-0"}
DEPENDENCY_SERIES = [
    ("up", False, [{"job": "codigo-producer", "instance": "producer-0"},
                   {"job": "codigo-consumer", "instance": "consumer-0"},
                   {"job": "nats", "instance": "nats-0"}, PG], 1),
    ("container_cpu_usage_seconds_total", True, [POD], 0.3),
    ("container_cpu_cfs_periods_total", True, [POD], 10),
    ("container_cpu_cfs_throttled_periods_total", True, [POD], 0.2),
    ("container_memory_working_set_bytes", False, [POD], 80e6),
    ("nats_varz_connections", False, [NATS], 12),
    ("nats_varz_in_msgs", True, [NATS], 500),
    ("nats_varz_out_msgs", True, [NATS], 900),
    ("nats_varz_slow_consumers", False, [NATS], 0),
    ("nats_varz_jetstream_stats_storage", False, [NATS], 2e9),
    ("nats_server_max_storage", False, [NATS], 10e9),
    ("nats_stream_total_messages", False, [JOBS, {**NATS, "stream_name": "CODIGO_DLQ"}], 1000),
    ("nats_stream_total_bytes", False, [JOBS, {**NATS, "stream_name": "CODIGO_DLQ"}], 1e6),
    ("nats_consumer_num_pending", False,
     [{**JOBS, "consumer_name": "codigo-ledger-post", "is_consumer_leader": "true"},
      {**JOBS, "consumer_name": "codigo-webhook-deliver", "is_consumer_leader": "true"}], 100),
    ("nats_consumer_num_ack_pending", False,
     [{**JOBS, "consumer_name": "codigo-ledger-post", "is_consumer_leader": "true"}], 64),
    ("nats_consumer_num_redelivered", False,
     [{**JOBS, "consumer_name": "codigo-ledger-post", "is_consumer_leader": "true"}], 3),
    ("pg_up", False, [PG], 1),
    ("pg_settings_max_connections", False, [PG], 100),
    ("pg_stat_database_numbackends", False, [{**PG, "datname": "codigo"}], 20),
    ("pg_stat_database_xact_commit", True, [{**PG, "datname": "codigo"}], 400),
    ("pg_stat_database_xact_rollback", True, [{**PG, "datname": "codigo"}], 2),
    ("pg_stat_database_deadlocks", True, [{**PG, "datname": "codigo"}], 0.001),
    ("pg_stat_database_blks_hit", True, [{**PG, "datname": "codigo"}], 10000),
    ("pg_stat_database_blks_read", True, [{**PG, "datname": "codigo"}], 50),
    ("pg_stat_activity_max_tx_duration", False, [{**PG, "datname": "codigo", "state": "active"}], 0.5),
    ("pg_locks_count", False, [{**PG, "datname": "codigo", "mode": "rowexclusivelock"}], 10),
    ("pg_database_size_bytes", False, [{**PG, "datname": "codigo"}], 5e9),
]


def timeline(now: int) -> list[int]:
    """Daily samples over 31 days (the 30d windows), then every minute for the last 7 h
    (the 5m..6h windows). Few samples in few 2 h blocks keeps the backfill fast."""
    dense_from = now - 7 * 3600
    sparse = list(range(now - 31 * 86400, dense_from, 86400))
    return sparse + list(range(dense_from, now + 1, 60))


def fmt_labels(labels: dict[str, str]) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return "{" + ",".join(f'{k}="{esc(str(v))}"' for k, v in labels.items()) + "}" if labels else ""


def synthetic_openmetrics(metrics: dict, now: int) -> str:
    ts = timeline(now)
    t0 = ts[0] - 3600
    out: list[str] = []
    base = {"job": "codigo-consumer", "instance": "consumer-0"}

    def wave(t: int) -> float:
        return 1 + 0.1 * math.sin(t / 900)

    def series(name: str, labels: dict, value) -> None:
        lab = fmt_labels(labels)
        out.extend(f"{name}{lab} {value(t):.6g} {t}" for t in ts)

    for name, (kind, label_names) in metrics.items():
        for lbl in label_names:
            if lbl not in LABEL_VALUES:
                raise SystemExit(f"no synthetic values for label {lbl!r} of {name}: add it to LABEL_VALUES")
        combos: list[dict] = [{}]
        for lbl in label_names:
            combos = [{**c, lbl: v} for c in combos for v in LABEL_VALUES[lbl]]
        job = {"job": "codigo-producer", "instance": "producer-0"} if "gateway" in name else base
        if kind == "counter":
            out.append(f"# TYPE {name[:-len('_total')]} counter")
            for c in combos:
                rate = 10 * math.prod(WEIGHTS.get(v, 1.0) for v in c.values())
                series(name, {**job, **c}, lambda t, r=rate: r * (t - t0))
        elif kind == "gauge":
            out.append(f"# TYPE {name} gauge")
            for c in combos:
                series(name, {**job, **c}, lambda t: 50 * wave(t))
        else:
            out.append(f"# TYPE {name} histogram")
            scale = HIST_SCALE.get(name, 0.1)
            for c in combos:
                rate = 10.0
                for b in BUCKETS:
                    share = 1 - math.exp(-b / scale)
                    series(f"{name}_bucket", {**job, **c, "le": f"{b:g}"},
                           lambda t, s=share: rate * s * (t - t0))
                series(f"{name}_bucket", {**job, **c, "le": "+Inf"}, lambda t: rate * (t - t0))
                series(f"{name}_count", {**job, **c}, lambda t: rate * (t - t0))
                series(f"{name}_sum", {**job, **c}, lambda t: rate * scale * (t - t0))
    for name, monotonic, label_sets, level in DEPENDENCY_SERIES:
        out.append(f"# TYPE {name} unknown")
        for labels in label_sets:
            if monotonic:
                series(name, labels, lambda t, r=level: r * (t - t0))
            else:
                series(name, labels, lambda t, v=level: v * (wave(t) if v not in (0, 1) else 1))
    out.append("# EOF")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------
# live Prometheus

# Loopback only: never through an HTTP(S)_PROXY from the environment.
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def query(url: str, expr: str) -> tuple[list, str]:
    q = urllib.parse.urlencode({"query": expr})
    try:
        with _LOCAL.open(f"{url}/api/v1/query?{q}", timeout=30) as resp:
            body = json.load(resp)
    except urllib.error.HTTPError as exc:
        return [], exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        return [], str(exc)
    if body.get("status") != "success":
        return [], body.get("error", "query failed")
    return body["data"]["result"], ""


def finite(result: list) -> bool:
    return any(math.isfinite(float(r["value"][1])) for r in result)


def check_live(rep: Report, metrics: dict, records: list[str],
               queries: list[tuple[str, str, str]]) -> None:
    with tempfile.TemporaryDirectory(prefix="obs-live-") as tmp:
        om = Path(tmp) / "synthetic.om"
        started = time.monotonic()
        om.write_text(synthetic_openmetrics(metrics, int(time.time())))
        stderr_path = Path(tmp) / "fixture.err"
        with open(stderr_path, "w") as err:
            proc = subprocess.Popen(
                [sys.executable, str(FIXTURE), "serve", "--openmetrics", str(om),
                 "--rules", str(RULES_DIR)],
                stdout=subprocess.PIPE, stderr=err, text=True, stdin=subprocess.DEVNULL)
        try:
            url = ""
            assert proc.stdout
            line = proc.stdout.readline()  # blocks until the URL line or the fixture's exit
            if line.startswith("PROMETHEUS_URL="):
                url = line.strip().split("=", 1)[1]
            if not url:
                proc.wait(timeout=30)
                rep.fail("promfixture: real Prometheus serving backfilled series and rules",
                         f"exit {proc.returncode}\n{stderr_path.read_text()}")
                return
            rep.ok(f"promfixture: Prometheus at {url} ready in {time.monotonic() - started:.0f}s "
                   f"with {len(metrics)} codigo metrics backfilled over 31 days")

            with _LOCAL.open(f"{url}/api/v1/rules", timeout=30) as resp:
                groups = json.load(resp)["data"]["groups"]
            p = [f"{r.get('name')}: {r.get('lastError')}" for g in groups for r in g["rules"]
                 if r.get("health") != "ok"]
            loaded = sum(len(g["rules"]) for g in groups)
            rep.check(f"live: all {loaded} rules loaded and evaluating without error", p)

            p = []
            for name in metrics:
                sel = f"{name}_count" if metrics[name][0] == "histogram" else name
                res, err = query(url, f"count({sel})")
                if err or not res:
                    p.append(f"{name}: no series {err}")
            for rec in sorted(set(records)):
                res, err = query(url, rec)
                if err or not finite(res):
                    p.append(f"{rec}: {'error ' + err if err else 'no finite value'}")
            rep.check(f"live: every metrics.txt metric and all {len(set(records))} recording rules "
                      "return data", p)

            for fname in DASHBOARDS:
                own = [(t, e) for d, t, e in queries if d == fname]
                p = []
                for title, expr in own:
                    res, err = query(url, expr)
                    if err or not finite(res):
                        p.append(f"{title!r}: {'error ' + err if err else 'no data'}\n  {expr}")
                rep.check(f"live: all {len(own)} queries of {fname} return data", p)
        finally:
            workdir = ""
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
            m = re.search(r"workdir (\S+)", stderr_path.read_text())
            workdir = m.group(1) if m else ""
        p = []
        if rc != 0:
            p.append(f"fixture exit status {rc}\n{stderr_path.read_text()}")
        if not workdir:
            p.append("fixture did not report its workdir")
        elif Path(workdir).exists():
            p.append(f"{workdir} left behind")
        rep.check("promfixture: SIGTERM stops Prometheus and removes its temp dir", p)


def main() -> int:
    # Stop through `finally` (and so stop Prometheus) on SIGTERM too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rep = Report()
    print("== metrics, rules and rule tests")
    metrics = load_metrics(rep)
    check_yamllint(rep)
    records, alerts = check_rules(rep)
    check_rule_tests(rep, records, alerts)
    print("== dashboards and docs")
    queries = check_dashboards(rep, metrics, records)
    check_docs(rep, metrics, alerts)
    print("== live Prometheus (backfilled synthetic series, rules loaded)")
    check_live(rep, metrics, records, queries)
    print(f"observability: {rep.passed} passed, {rep.failed} failed")
    return 0 if rep.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
