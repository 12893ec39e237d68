#!/usr/bin/env bash
# Makes sure NATS (with JetStream) and PostgreSQL answer at NATS_URL and DATABASE_URL.
# Reuses servers that already run there; otherwise installs them from the OS packages and
# starts private instances under .local/ (left running for the next command; `make stop`
# stops them). Finally creates the database named in DATABASE_URL.
set -euo pipefail
# shellcheck source=scripts/lib/tools.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/tools.sh"

NATS_URL=${NATS_URL:-nats://127.0.0.1:4222}
DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/codigo}

port_open() {
  timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

wait_port() {
  local host=$1 port=$2 what=$3 log=$4
  for _ in $(seq 1 100); do
    port_open "$host" "$port" && return 0
    sleep 0.1
  done
  die "$what did not start on $host:$port; see $log"
}

# First server of NATS_URL: nats://[user:pass@]host:port
nats_first=${NATS_URL%%,*}
nats_hostport=${nats_first#*://}
nats_hostport=${nats_hostport##*@}
nats_host=${nats_hostport%:*}
nats_port=${nats_hostport##*:}
[[ $nats_port =~ ^[0-9]+$ ]] || nats_port=4222

# The pinned server is the only one tested: one already at NATS_URL is reused when it is at least
# that release; otherwise a private pinned server is started (on NATS_URL's port if free, else on
# CODIGO_PRIVATE_NATS_PORT) and NATS_URL points there for every later step (.local/services.env).
nats_bin=$(need_nats_server)
pinned=$(nats_server_pinned_version)
start_private_nats() {
  local port=$1 dir="$CODIGO_LOCAL/nats-$1"
  mkdir -p "$dir/store"
  echo "nats: starting a private nats-server $pinned with JetStream on 127.0.0.1:$port (data in $dir)"
  setsid "$nats_bin" -c "$CODIGO_ROOT/deploy/nats/server.conf" -a 127.0.0.1 -p "$port" -js -sd "$dir/store" \
    -l "$dir/nats.log" -P "$dir/nats.pid" </dev/null >/dev/null 2>&1 &
  wait_port 127.0.0.1 "$port" nats-server "$dir/nats.log"
}
nats_url=$NATS_URL
if port_open "$nats_host" "$nats_port"; then
  have=$(nats_info_version "$nats_host" "$nats_port")
  if [[ -n $have ]] && version_at_least "$have" "$pinned"; then
    echo "nats: reusing nats-server $have at $nats_host:$nats_port"
  else
    private_port=${CODIGO_PRIVATE_NATS_PORT:-14222}
    echo "nats: the server at $nats_host:$nats_port is ${have:-of unknown version}, older than the pinned $pinned; using a private one on 127.0.0.1:$private_port instead"
    if port_open 127.0.0.1 "$private_port"; then
      have=$(nats_info_version 127.0.0.1 "$private_port")
      [[ -n $have ]] && version_at_least "$have" "$pinned" ||
        die "127.0.0.1:$private_port is taken by something that is not nats-server >= $pinned; set CODIGO_PRIVATE_NATS_PORT to a free port"
      echo "nats: reusing nats-server $have at 127.0.0.1:$private_port"
    else
      start_private_nats "$private_port"
    fi
    nats_url="nats://127.0.0.1:$private_port"
  fi
else
  [[ $nats_host == 127.0.0.1 || $nats_host == localhost ]] ||
    die "no NATS answers at $nats_host:$nats_port; start one there or point NATS_URL at 127.0.0.1"
  start_private_nats "$nats_port"
fi
mkdir -p "$CODIGO_LOCAL"
cat >"$CODIGO_LOCAL/services.env" <<ENV
# Written by scripts/services.sh: the servers every later step uses.
export NATS_URL=$nats_url
export CODIGO_NATS_SERVER=$nats_bin
export PATH=$CODIGO_LOCAL/bin:\$PATH
ENV

# postgres://user[:pass]@host:port/db[?params]
pg_rest=${DATABASE_URL#*://}
pg_auth=""
[[ $pg_rest == *@* ]] && pg_auth=${pg_rest%%@*} && pg_rest=${pg_rest#*@}
pg_user=${pg_auth%%:*}
pg_user=${pg_user:-postgres}
pg_hostport=${pg_rest%%/*}
pg_db=${pg_rest#*/}
pg_db=${pg_db%%\?*}
pg_host=${pg_hostport%:*}
pg_port=${pg_hostport##*:}
[[ $pg_port =~ ^[0-9]+$ ]] || pg_port=5432

if port_open "$pg_host" "$pg_port"; then
  echo "postgres: reusing the server at $pg_host:$pg_port"
else
  newest_pg_bin() { find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n 1; }
  bindir=$(newest_pg_bin)
  if [[ -z $bindir ]]; then
    need_apt postgresql postgresql-client
    bindir=$(newest_pg_bin)
  fi
  dir="$CODIGO_LOCAL/postgres"
  mkdir -p "$dir"
  # Postgres refuses to run as root: run it as the package's postgres user then.
  as_owner=()
  if [[ $(id -u) -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || useradd --system --home "$dir" postgres
    chown -R postgres "$dir"
    as_owner=(runuser -u postgres --)
  fi
  if [[ ! -f $dir/data/PG_VERSION ]]; then
    echo "postgres: initialising a private cluster in $dir/data"
    "${as_owner[@]}" "$bindir/initdb" -D "$dir/data" --auth=trust --username="$pg_user" >"$dir/initdb.log" 2>&1 ||
      die "initdb failed; see $dir/initdb.log"
  fi
  echo "postgres: starting a private server on $pg_host:$pg_port"
  "${as_owner[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w \
    -o "-p $pg_port -k $dir -c listen_addresses=$pg_host" start >/dev/null ||
    die "postgres did not start; see $dir/postgres.log"
fi

command -v psql >/dev/null || need_apt postgresql-client
admin_url="postgres://${pg_auth:+$pg_auth@}$pg_host:$pg_port/postgres"
for _ in $(seq 1 50); do
  psql "$admin_url" -Atqc 'SELECT 1' >/dev/null 2>&1 && break
  sleep 0.2
done
if ! psql "$admin_url" -Atqc "SELECT 1 FROM pg_database WHERE datname = '$pg_db'" | grep -q 1; then
  psql "$admin_url" -qc "CREATE DATABASE \"$pg_db\"" >/dev/null
  echo "postgres: created database $pg_db"
fi
