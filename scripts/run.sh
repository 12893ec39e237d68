#!/usr/bin/env bash
# `make run`: the whole pipeline on this machine — one producer, two consumers, the example
# HTTP function text.wordcount — plus a short demo burst and its summary; stays up in the
# foreground until Ctrl-C, then drains and stops.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib/tools.sh
source scripts/lib/tools.sh

export NATS_URL=${NATS_URL:-nats://127.0.0.1:4222}
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/codigo}
export CODIGO_NAMESPACE=${CODIGO_NAMESPACE:-codigo}
export CODIGO_API_KEYS=${CODIGO_API_KEYS:-demo:codigo-demo-token-change-me;admin=true}
export CODIGO_WEBHOOK_SIGNING_KEY=${CODIGO_WEBHOOK_SIGNING_KEY:-local-webhook-signing-key}
# Webhooks to this machine are fine locally; never in production.
export CODIGO_WEBHOOK_ALLOW_PRIVATE=${CODIGO_WEBHOOK_ALLOW_PRIVATE:-true}
export LOG_FORMAT=${LOG_FORMAT:-json}
PRODUCER_ADDR=${PRODUCER_ADDR:-127.0.0.1:8080}
TOKEN=${CODIGO_API_KEYS%%,*}
TOKEN=${TOKEN#*:}
TOKEN=${TOKEN%%;*}
DEMO_JOBS=${DEMO_JOBS:-500}
FUNCTION_PORT=${FUNCTION_PORT:-8090}

scripts/services.sh
# shellcheck source=/dev/null
source "$CODIGO_LOCAL/services.env"
command -v curl >/dev/null || need_apt curl
command -v cargo >/dev/null || die "cargo not found: install the Rust toolchain (https://rustup.rs) and retry"

echo "building the binaries..."
cargo build --quiet --locked --bins
bin="${CARGO_TARGET_DIR:-target}/debug"
logs="$CODIGO_LOCAL/logs"
mkdir -p "$logs"

RUST_LOG=${RUST_LOG:-warn} "$bin/codigo-ctl" setup

pids=()
stop() {
  trap - INT TERM
  echo
  echo "stopping: SIGTERM to producer and consumers, waiting for them to drain..."
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  echo "stopped cleanly."
  exit 0
}
trap stop INT TERM
# Whatever ends this script, it leaves no process of ours behind.
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' EXIT

CODIGO_HTTP_ADDR=$PRODUCER_ADDR "$bin/codigo-producer" >"$logs/producer.log" 2>&1 &
pids+=($!)
for n in 1 2; do
  CODIGO_HTTP_ADDR=127.0.0.1:$((9463 + n)) CODIGO_JOB_TYPES=ledger.post,webhook.deliver,functions \
    "$bin/codigo-consumer" >"$logs/consumer-$n.log" 2>&1 &
  pids+=($!)
done

wait_ready() {
  for _ in $(seq 1 100); do
    curl -fsS "http://$1/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "$2 did not become ready; see $logs"
}
wait_ready "$PRODUCER_ADDR" producer
wait_ready 127.0.0.1:9464 consumer-1
wait_ready 127.0.0.1:9465 consumer-2

echo "starting the example function text.wordcount on 127.0.0.1:$FUNCTION_PORT..."
FUNCTION_SECRET=$("$bin/codigo-ctl" types secret text.wordcount) PORT=$FUNCTION_PORT \
  scripts/run-function.sh examples/functions/wordcount/app.py >"$logs/function-wordcount.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 600); do
  curl -fsS "http://127.0.0.1:$FUNCTION_PORT/" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$FUNCTION_PORT/" >/dev/null 2>&1 ||
  die "the example function did not start; see $logs/function-wordcount.log"
declaration="$CODIGO_LOCAL/wordcount.yaml"
sed "s|http://127.0.0.1:8090/|http://127.0.0.1:$FUNCTION_PORT/|" \
  examples/functions/wordcount/wordcount.yaml >"$declaration"
RUST_LOG=${RUST_LOG:-warn} "$bin/codigo-ctl" types apply -f "$declaration"

psql_q() { psql "$DATABASE_URL" -Atqc "$1"; }
before=$(psql_q "SELECT coalesce(max(created_at), '-infinity') FROM jobs")

echo "sending a demo burst of $DEMO_JOBS ledger.post jobs..."
started=$(date +%s%N)
for ((chunk = 0; chunk < DEMO_JOBS; chunk += 100)); do
  n=$((DEMO_JOBS - chunk < 100 ? DEMO_JOBS - chunk : 100))
  body=""
  for ((i = 0; i < n; i++)); do
    ((i > 0)) && body+=","
    body+=$(printf '{"type":"ledger.post","payload":{"account":"demo-%d","amount_cents":%d,"currency":"EUR"}}' $((i % 10)) $((i + 1)))
  done
  curl -fsS -X POST "http://$PRODUCER_ADDR/v1/jobs/batch" \
    -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d "{\"jobs\":[$body]}" >/dev/null
done

deadline=$((SECONDS + 60))
while :; do
  done_count=$(psql_q "SELECT count(*) FROM jobs WHERE created_at > '$before' AND status IN ('succeeded','failed','dead_lettered')")
  ((done_count >= DEMO_JOBS || SECONDS > deadline)) && break
  sleep 0.2
done
elapsed_ms=$((($(date +%s%N) - started) / 1000000))
read -r succeeded failed p50 p95 < <(psql "$DATABASE_URL" -Atq -F ' ' -c "
  SELECT count(*) FILTER (WHERE status = 'succeeded'),
         count(*) FILTER (WHERE status IN ('failed', 'dead_lettered')),
         round((extract(epoch FROM percentile_cont(0.5) WITHIN GROUP (ORDER BY finished_at - created_at)) * 1000)::numeric, 1),
         round((extract(epoch FROM percentile_cont(0.95) WITHIN GROUP (ORDER BY finished_at - created_at)) * 1000)::numeric, 1)
    FROM jobs WHERE created_at > '$before' AND finished_at IS NOT NULL")

cat <<SUMMARY

  demo burst summary
  ------------------
  jobs sent        $DEMO_JOBS
  succeeded        $succeeded
  failed           $failed
  latency p50      ${p50} ms  (accepted -> committed)
  latency p95      ${p95} ms
  wall time        ${elapsed_ms} ms

  producer   http://$PRODUCER_ADDR   (API key: $TOKEN)
  consumers  http://127.0.0.1:9464/metrics  http://127.0.0.1:9465/metrics
  logs       $logs
  function   text.wordcount at http://127.0.0.1:$FUNCTION_PORT/ (declared with codigo-ctl types apply)
  try        curl -s -X POST http://$PRODUCER_ADDR/v1/jobs -H 'Authorization: Bearer $TOKEN' \\
               -H 'Content-Type: application/json' \\
               -d '{"type":"ledger.post","payload":{"account":"acme","amount_cents":1250,"currency":"EUR"}}'
             curl -s -X POST http://$PRODUCER_ADDR/v1/jobs -H 'Authorization: Bearer $TOKEN' \\
               -H 'Content-Type: application/json' \\
               -d '{"type":"text.wordcount","payload":{"text":"hello from make run"}}'
             $bin/codigo-ctl status

  running; press Ctrl-C to stop.
SUMMARY

wait -n "${pids[@]}" || true
echo "a process exited unexpectedly; see $logs" >&2
stop
