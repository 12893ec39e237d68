#!/usr/bin/env bash
# verify-webhook.sh SECRET — verifies one webhook delivery as a receiver does, with the official
# Standard Webhooks library (installed once into .local/venvs/standardwebhooks). Reads
# {"headers": {name: value}, "body": "<base64>"} on stdin. Exits 0 when the delivery verifies,
# 10 when it does not, anything else when the check itself could not run.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/lib/tools.sh"
mkdir -p "$CODIGO_LOCAL/venvs"
# Tests verify in parallel: one of them installs, the others wait for it.
exec 9>"$CODIGO_LOCAL/venvs/.standardwebhooks.lock"
flock 9
bin=$(venv_bin standardwebhooks standardwebhooks==1.1.0)
flock -u 9
exec "$bin/python" "$here/verify_webhook.py" "$@"
