#!/usr/bin/env bash
# Installs what duel needs on a fresh Debian machine with Node 20 and npm (run as root):
# nats-server from Debian's packages when missing (and chromium, for the test that renders the run
# report, with --for-tests), and the npm packages from package-lock.json (npm ci, the same install
# the image build runs) when missing or older than the lock file.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
if [ "${1:-}" = --for-tests ] && [ ! -x /usr/bin/chromium ]; then missing+=(chromium); fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]} from Debian's packages"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# A lock file out of step with package.json is a bug to fix in the repository, not something to
# paper over here: npm ci says so at once (exit 1) and nothing is installed.
if ! npm ci --dry-run --no-audit --no-fund --loglevel=error >/dev/null 2>&1; then
  echo "setup: package-lock.json does not match package.json; run 'npm install' and commit package-lock.json" >&2
  exit 1
fi

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  # The registry sometimes drops a connection mid-download; a retry picks up from npm's cache.
  for attempt in 1 2 3; do
    npm ci --no-audit --no-fund --loglevel=error && break
    [ "$attempt" = 3 ] && exit 1
    echo "setup: npm ci failed (attempt $attempt); retrying"
  done
fi
