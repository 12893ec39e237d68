#!/usr/bin/env bash
# Offline validation of observability/ (Prometheus rules and their unit tests, Grafana
# dashboards, runbook links) and of the dashboards' and rules' queries against a real,
# private Prometheus loaded with backfilled series. Run by `make test`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib/tools.sh
source scripts/lib/tools.sh

echo "observability: preparing tools (prometheus, promtool, PyYAML, yamllint)"
if ! dpkg-query -W -f='${Status}' prometheus 2>/dev/null | grep -q 'install ok installed'; then
  # Debian's package starts its service on install where an init system runs, and that
  # server would sit on :9090. Forbid service starts for this install only (unless the
  # machine already has a policy, which then decides).
  policy=/usr/sbin/policy-rc.d
  created_policy=""
  if [[ $(id -u) -eq 0 && ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created_policy=$policy
    trap 'rm -f "$created_policy"' EXIT
  fi
  need_apt prometheus
  if [[ -n $created_policy ]]; then
    rm -f "$created_policy"
    trap - EXIT
  fi
fi
command -v promtool >/dev/null || die "promtool missing after installing prometheus"
command -v prometheus >/dev/null || die "prometheus missing after installing prometheus"
echo "observability: $(prometheus --version 2>&1 | head -n1)"

pybin=$(venv_bin observability pyyaml==6.0.2 yamllint==1.38.0)

exec "$pybin/python" observability/tools/check_observability.py
