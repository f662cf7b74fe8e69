#!/usr/bin/env bash
# Installs everything the test suite needs (Debian packages, a venv with the Python deps, npm
# packages) and runs lint, type checks and the whole test suite. Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

mapfile -t pkgs < <(grep -v '^\s*#' scripts/apt-packages.txt | awk 'NF{print $1}')
apt_install "${pkgs[@]}"
ensure_venv "[test,bench]"
ensure_npm
ensure_services

echo "== ruff"
.venv/bin/ruff check .
echo "== mypy --strict (emailintel, x402gw, server)"
.venv/bin/mypy
echo "== pytest"
exec .venv/bin/python -m pytest --durations=25 "$@"
