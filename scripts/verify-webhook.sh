#!/usr/bin/env bash
# verify-webhook.sh SECRET — verifies one webhook delivery as a receiver does, with the official
# Standard Webhooks library (installed once into .local/venvs/standardwebhooks). Reads
# {"headers": {name: value}, "body": "<base64>"} on stdin. Exits 0 when the delivery verifies,
# 10 when it does not, anything else when the check itself could not run.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/lib/tools.sh"
bin=$(standardwebhooks_bin)
exec "$bin/python" "$here/verify_webhook.py" "$@"
