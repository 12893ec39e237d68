#!/usr/bin/env bash
# Offline validation of observability/ (Prometheus rules and their unit tests, Grafana
# dashboards, runbook links) and of the dashboards' and rules' queries against a real,
# private Prometheus loaded with backfilled series. Run by `make test`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib/tools.sh
source scripts/lib/tools.sh

echo "observability: preparing tools (prometheus, promtool, PyYAML, yamllint)"
need_prometheus
command -v promtool >/dev/null || die "promtool missing after installing prometheus"
command -v prometheus >/dev/null || die "prometheus missing after installing prometheus"
echo "observability: $(prometheus --version 2>&1 | head -n1)"

pybin=$(venv_bin observability pyyaml==6.0.2 yamllint==1.38.0)

# amtool (Debian's prometheus-alertmanager) tests the Alertmanager routes of the gitops values.
need_alertmanager
command -v amtool >/dev/null || die "amtool missing after installing prometheus-alertmanager"
echo "observability: $(amtool --version 2>&1 | head -n1)"
am_rc=0
"$pybin/python" observability/tools/check_alertmanager.py "$(command -v amtool)" || am_rc=$?
"$pybin/python" observability/tools/check_grafana_links.py || am_rc=$?

obs_rc=0
"$pybin/python" observability/tools/check_observability.py || obs_rc=$?
((am_rc == 0 && obs_rc == 0)) || die "observability checks failed (alertmanager and grafana: $am_rc, rules and dashboards: $obs_rc)"
