#!/usr/bin/env bash
# `make bench`: builds the release binaries, then runs the standard scenarios with
# `codigo-loadtest bench`. It starts and stops every process itself, gives each repetition its
# own NATS namespace and database (removed afterwards, also on failure or Ctrl-C) and rewrites
# BENCHMARKS.md and docs/bench/latency.svg. Sized by BENCH_REPS, BENCH_DURATION_SECS,
# BENCH_DRAIN_JOBS and BENCH_SCENARIOS; arguments are passed on (`codigo-loadtest bench --help`).
# After the single-server scenarios the same run repeats them in the production profile: a
# local three-node cluster of the pinned nats-server with R3 streams and `sync_interval:
# always` (deploy/nats/cluster.conf), bare baseline included; BENCH_CLUSTER=0 skips that.
# The `peers` scenario (only when named: `make bench-peers`) runs Graphile Worker from
# loadtest/peers, which scripts/peers.sh installs with its private Postgres first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib/tools.sh
source scripts/lib/tools.sh

command -v cargo >/dev/null || die "cargo not found: install the Rust toolchain (https://rustup.rs) and retry"
if [[ ",${BENCH_SCENARIOS:-},$*," =~ [,=\ ]peers[,\ ] ]]; then
  scripts/peers.sh
fi
bin="${CARGO_TARGET_DIR:-target}/release"
echo "building the release binaries..."
cargo build --release --locked -p codigo-producer -p codigo-consumer -p codigo-ctl -p codigo-loadtest --bins
exec "$bin/codigo-loadtest" bench --bin-dir "$bin" "$@"
