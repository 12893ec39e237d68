#!/usr/bin/env bash
# run-function.sh SCRIPT — runs an example HTTP function (examples/functions/*/app.py) with the
# official Standard Webhooks library it verifies invocations with (installed once into
# .local/venvs/standardwebhooks). Its settings come from the environment.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/lib/tools.sh"
bin=$(standardwebhooks_bin)
exec "$bin/python" -u "$@"
