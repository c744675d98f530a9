#!/usr/bin/env bash
# Installs what duel needs on a fresh Debian machine with Node 20 and npm (run as root):
# nats-server from Debian's packages when missing, and the npm packages when missing or stale.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ]; then
  echo "setup: installing nats-server from Debian's packages"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null
fi

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  # The registry reachable here lacks some optional per-platform binaries (biome's and buf's for
  # other OSes), so the lock file cannot list them and npm ci may refuse it as out of sync. Every
  # version is pinned exactly in package.json, so npm install then builds the same tree.
  if ! npm ci --no-audit --no-fund --loglevel=error 2>/dev/null; then
    echo "setup: npm ci refused the lock file; installing the pinned versions with npm install"
    # The registry sometimes drops a connection mid-download; a retry picks up from npm's cache.
    for attempt in 1 2 3; do
      npm install --no-save --no-audit --no-fund --loglevel=error && break
      [ "$attempt" = 3 ] && exit 1
      echo "setup: npm install failed (attempt $attempt); retrying"
    done
  fi
fi
