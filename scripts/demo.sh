#!/usr/bin/env bash
# The README's demo command: install what is missing, build, run `duel demo` (arguments pass through).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin"
bash scripts/setup.sh
npm run --silent build
node dist/bin/main.js demo "$@"
