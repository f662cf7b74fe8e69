#!/usr/bin/env bash
# Installs what the main job needs (a venv with the project, node packages for the local chain)
# and runs it: `bavlio dev`, the API server on its embedded default (SQLite) with a local anvil
# chain, the project's EIP-3009 token and a funded demo wallet. It prints a command that pays for
# a call. Extra arguments go to `bavlio dev` (e.g. --port 8402, --check).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_venv ""
ensure_npm
exec .venv/bin/bavlio dev "$@"
