# The two commands a newcomer needs: `make run` and `make test`. Everything else is a step of
# theirs or an extra (bench, chaos, lint).
SHELL := /bin/bash
.DEFAULT_GOAL := help

export NATS_URL ?= nats://127.0.0.1:4222
export DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/codigo
# Integration tests create (and drop) one database per test on this server.
export CODIGO_TEST_POSTGRES ?= postgres://postgres@127.0.0.1:5432

.PHONY: help run test lint services test-tools test-rust test-deploy fmt stop

help:
	@echo "make run    - start NATS, Postgres, one producer and two consumers; demo burst; Ctrl-C stops"
	@echo "make test   - every test: unit, integration (real NATS and Postgres), deploy artefacts"
	@echo "make lint   - rustfmt and clippy, as CI runs them"

run:
	@scripts/run.sh

test: services test-tools test-rust test-deploy

services:
	@scripts/services.sh

# Tools the Rust tests call (promtool for the live metrics check and the SLO report).
test-tools:
	@source scripts/lib/tools.sh && need_prometheus

test-rust:
	cargo test --workspace --locked

test-deploy:
	bash scripts/check-observability.sh
	bash scripts/check-helm.sh
	bash scripts/check-terraform.sh
	bash scripts/check-workflows.sh

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

fmt:
	cargo fmt --all

# Stops the private NATS and Postgres that `make run`/`make test` may have started in .local/.
stop:
	@[[ -f .local/nats/nats.pid ]] && kill "$$(cat .local/nats/nats.pid)" 2>/dev/null || true
	@[[ -d .local/postgres/data ]] && runuser -u postgres -- $$(ls -d /usr/lib/postgresql/*/bin | tail -n1)/pg_ctl -D .local/postgres/data stop -m fast 2>/dev/null || true
