#!/usr/bin/env bash
# The peer of `make bench-peers`: Graphile Worker on the same ledger.post job
# (loadtest/peers), installed with `npm ci` into BENCH_PEERS_DIR (.local/peers), and a private
# PostgreSQL of its own on 127.0.0.1:BENCH_PEERS_PG_PORT (15433) with a database `peer`, so
# that the peer's queue never shares a server, a WAL or a checkpoint with Codigo's Postgres.
# The server is left running for the next run; `scripts/peers.sh stop` (or `make stop`) stops it.
set -euo pipefail
# shellcheck source=scripts/lib/tools.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/tools.sh"

dir=$(realpath -m "${BENCH_PEERS_DIR:-$CODIGO_LOCAL/peers}")
port=${BENCH_PEERS_PG_PORT:-15433}
data="$dir/pg/data"

# Postgres refuses to run as root: run it as the package's postgres user then, as
# scripts/services.sh does.
as_owner=()
if [[ $(id -u) -eq 0 ]]; then
  as_owner=(runuser -u postgres --)
fi
newest_pg_bin() { find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n 1; }

if [[ ${1:-} == stop ]]; then
  if [[ -f $data/postmaster.pid ]] &&
    "${as_owner[@]}" "$(newest_pg_bin)/pg_ctl" -D "$data" stop -m fast >/dev/null 2>&1; then
    echo "peers: stopped the peer's Postgres ($data)"
  fi
  exit 0
fi

command -v node >/dev/null || need_apt nodejs npm
node_major=$(node -p 'process.versions.node.split(".")[0]')
((node_major >= 20)) || die "node $(node --version) is too old for Graphile Worker; install Node.js 20 or newer and retry"

mkdir -p "$dir"
cp "$CODIGO_ROOT"/loadtest/peers/*.js "$CODIGO_ROOT"/loadtest/peers/package.json \
  "$CODIGO_ROOT"/loadtest/peers/package-lock.json "$dir"/
npm_ci "$dir"

bindir=$(newest_pg_bin)
if [[ -z $bindir ]]; then
  need_apt postgresql postgresql-client
  bindir=$(newest_pg_bin)
fi
command -v psql >/dev/null || need_apt postgresql-client
mkdir -p "$dir/pg"
if [[ $(id -u) -eq 0 ]]; then
  id postgres >/dev/null 2>&1 || useradd --system --home "$dir/pg" postgres
  chown -R postgres "$dir/pg"
fi
if [[ ! -f $data/PG_VERSION ]]; then
  echo "peers: initialising the peer's Postgres cluster in $data" >&2
  "${as_owner[@]}" "$bindir/initdb" -D "$data" --auth=trust --username=postgres >"$dir/pg/initdb.log" 2>&1 ||
    die "initdb failed; see $dir/pg/initdb.log"
fi
if ! "${as_owner[@]}" "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
  timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null &&
    die "127.0.0.1:$port is taken by another server; set BENCH_PEERS_PG_PORT to a free port"
  echo "peers: starting the peer's Postgres on 127.0.0.1:$port" >&2
  "${as_owner[@]}" "$bindir/pg_ctl" -D "$data" -l "$dir/pg/server.log" -w \
    -o "-p $port -k $dir/pg -c listen_addresses=127.0.0.1" start >/dev/null ||
    die "the peer's Postgres did not start; see $dir/pg/server.log"
fi
url="postgres://postgres@127.0.0.1:$port"
psql "$url/postgres" -Atqc "SELECT 1 FROM pg_database WHERE datname = 'peer'" | grep -q 1 ||
  psql "$url/postgres" -qc "CREATE DATABASE peer" >/dev/null ||
  die "cannot create the database peer at $url (is another server on port $port?)"
echo "peers: Graphile Worker $(node -p "require('$dir/node_modules/graphile-worker/package.json').version") in $dir, its Postgres at $url/peer" >&2
