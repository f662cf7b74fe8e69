#!/usr/bin/env bash
# Installs everything the test suite needs (Debian packages, a venv with the Python deps, npm
# packages) and runs lint, type checks and the whole test suite. Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

# --- Debian packages: install only what is missing, without starting the distro's daemons ---
mapfile -t pkgs < <(grep -v '^\s*#' scripts/apt-packages.txt | awk 'NF{print $1}')
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  created_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; created_policy=1
  fi
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

# --- Python venv ---
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,bench]' 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c 'import emailintel, x402gw, server' # fail loudly if the install did not work

# --- npm packages (anvil, solc, peers for benchmarks) ---
if [ -f package.json ]; then
  if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund --loglevel=error; fi
fi

# --- static checks ---
echo "== ruff"
.venv/bin/ruff check .
echo "== mypy --strict (emailintel, x402gw)"
.venv/bin/mypy

# --- tests ---
echo "== pytest"
exec .venv/bin/python -m pytest "$@"
