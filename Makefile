# The two commands a newcomer needs: `make run` and `make test`. Everything else is a step of
# theirs or an extra (bench, chaos, lint).
SHELL := /bin/bash
.DEFAULT_GOAL := help

export NATS_URL ?= nats://127.0.0.1:4222
export DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/codigo
# Integration tests create (and drop) one database per test on this server.
export CODIGO_TEST_POSTGRES ?= postgres://postgres@127.0.0.1:5432
# Written by scripts/services.sh: NATS_URL of the pinned nats-server (a private one when the
# server at NATS_URL is older) and PATH with that binary first.
WITH_SERVICES := source .local/services.env &&

.PHONY: help run test lint services test-tools test-rust test-deploy fmt stop chaos bench bench-peers

help:
	@echo "make run    - start NATS, Postgres, one producer and two consumers; demo burst; Ctrl-C stops"
	@echo "make test   - every test: unit, integration (real NATS and Postgres), deploy artefacts"
	@echo "make lint   - rustfmt and clippy, as CI runs them"

run:
	@scripts/run.sh

test: services test-tools test-rust test-deploy

services:
	@scripts/services.sh

# Tools the Rust tests call: promtool and prometheus (live metrics check, SLO report),
# the pinned nats-server (private servers for permissions, TLS and chaos tests), psql.
test-tools:
	@source scripts/lib/tools.sh && need_prometheus && need_nats_server >/dev/null && need_apt postgresql postgresql-client iproute2

test-rust: services
	$(WITH_SERVICES) cargo test --workspace --locked

test-deploy:
	bash scripts/check-observability.sh
	bash scripts/check-helm.sh
	bash scripts/check-terraform.sh
	bash scripts/check-workflows.sh

# Fault injection against private NATS and Postgres servers (see docs/RELIABILITY.md): 50,000
# jobs, 20 consumer kills, a NATS and a Postgres crash-restart; fails on any loss or duplicate.
# `make chaos CLUSTER=3`: the same on a three-node R3 cluster (deploy/nats/cluster.conf) with
# leader and follower kills, pauses and network partitions (network namespaces: needs root
# and iproute2, else the partitions are skipped and the run says so).
CLUSTER ?=
chaos: services
	@source scripts/lib/tools.sh && need_apt postgresql iproute2
	cargo build --release --locked -p codigo-producer -p codigo-consumer -p codigo-ctl -p codigo-chaos --features codigo-consumer/chaos
	$(WITH_SERVICES) "$${CARGO_TARGET_DIR:-target}/release/codigo-chaos" --bin-dir "$${CARGO_TARGET_DIR:-target}/release" --jobs 50000 --kills 20 $(if $(CLUSTER),--cluster $(CLUSTER))

# The standard load scenarios against the release binaries, three times each; rewrites
# BENCHMARKS.md and docs/bench/latency.svg (BENCH_* variables size it; see BENCHMARKS.md).
bench: services
	@$(WITH_SERVICES) scripts/bench.sh

# The drain beside the bare drain and Graphile Worker's batch jobs on the same ledger.post job
# (loadtest/peers; scripts/peers.sh installs it with npm and starts its private Postgres),
# interleaved in every repetition, with the bare baseline of the same run; then the same on the
# production-profile cluster (`sync_interval: always`) unless BENCH_CLUSTER=0.
bench-peers: services
	@$(WITH_SERVICES) BENCH_SCENARIOS=baseline,drain,peers scripts/bench.sh

lint:
	python3 scripts/check_rust_layout.py --self-test
	python3 scripts/check_rust_layout.py
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

fmt:
	cargo fmt --all

# Stops the private NATS and Postgres that `make run`/`make test` may have started in .local/,
# and the peer's Postgres of `make bench-peers`.
stop:
	@for pid in .local/nats-*/nats.pid; do [[ -f $$pid ]] && kill "$$(cat "$$pid")" 2>/dev/null; done; true
	@[[ -d .local/postgres/data ]] && runuser -u postgres -- $$(ls -d /usr/lib/postgresql/*/bin | tail -n1)/pg_ctl -D .local/postgres/data stop -m fast 2>/dev/null || true
	@scripts/peers.sh stop
