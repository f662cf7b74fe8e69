#!/usr/bin/env bash
# Installs what the main job needs (a venv with the project) and runs it. Until the API server
# lands (issue 5) the main job is the emailintel command-line demo.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_venv ""
bin=.venv/bin
set -x
"$bin/emailintel" validate --offline john.smith@gmail.com info@acme.io jane@mailinator.com \
  bob@gmial.com "not an address" "josé@bücher.de"
"$bin/emailintel" patterns "Dr. Jürgen Müller-Lüdenscheidt" acme.de --limit 10
"$bin/emailintel" patterns "Jane Doe" acme.com --known jsmith@acme.com="John Smith" --limit 5
