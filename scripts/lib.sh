#!/usr/bin/env bash
# Shared set-up steps for scripts/run.sh and scripts/test.sh (sourced, not run).
export DEBIAN_FRONTEND=noninteractive
_apt_updated=0

# apt_install PKG...: install the Debian packages that are missing, never starting their daemons.
apt_install() {
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -gt 0 ] || return 0
  echo "installing Debian packages: ${missing[*]}"
  local created_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; created_policy=1
  fi
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  [ "$_apt_updated" = 1 ] || { apt-get update -qq; _apt_updated=1; }
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ "$created_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
}

# ensure_python: a python3 with venv support (Debian's if the machine has none).
ensure_python() {
  PY=${PYTHON:-python3}
  if ! command -v "$PY" >/dev/null 2>&1 || ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    apt_install python3 python3-venv python3-dev gcc
    PY=python3
  fi
}

# ensure_venv EXTRAS: .venv with the project installed in editable mode (with EXTRAS, e.g. "[test]").
ensure_venv() {
  ensure_python
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".$1" 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -c 'import emailintel, x402gw, server'  # fail loudly if the install did not work
}

# ensure_npm: node + npm, then the project's npm packages (anvil, solc, benchmark peers).
ensure_npm() {
  [ -f package.json ] || return 0
  command -v npm >/dev/null 2>&1 || apt_install nodejs npm
  if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
  else
    npm install --no-audit --no-fund --loglevel=error
  fi
}

# ensure_services: the local PostgreSQL and Redis the multi-machine tests use (this machine kind
# runs both; start them if they were stopped).
ensure_services() {
  if command -v pg_ctlcluster >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  if command -v redis-server >/dev/null 2>&1 && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  fi
}
