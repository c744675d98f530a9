#!/usr/bin/env bash
# Installs what duel needs on a fresh Debian machine with Node (20.19 or newer) and npm (run as root):
# nats-server from Debian's packages when missing, and the npm packages from package-lock.json
# (npm ci, the same install the image build runs) when missing or older than the lock file. With
# --for-tests also chromium (the test that renders the run report), Python's grpcio and protoc's
# gRPC plugin (the test that runs examples/python) and, when Dawn finds no WebGPU adapter, Mesa's
# Vulkan drivers (lavapipe: the webgpu provider's tests on a machine without a GPU). With --cuda
# also ONNX Runtime 1.29's CUDA 13 provider from the npm registry, beside the default install
# (scripts/cuda.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
for_tests=false
cuda=false
for arg in "$@"; do
  case $arg in
  --for-tests) for_tests=true ;;
  --cuda) cuda=true ;;
  *) echo "setup: unknown argument '$arg' (--for-tests, --cuda)" >&2 && exit 2 ;;
  esac
done

missing=()
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
if $for_tests; then
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  /usr/bin/python3 -c 'import grpc' >/dev/null 2>&1 || missing+=(python3-grpcio)
  command -v grpc_python_plugin >/dev/null 2>&1 || missing+=(protobuf-compiler-grpc)
fi
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

# The webgpu provider needs a Vulkan driver. Debian 12's Mesa (22.3) is refused by Dawn, so there
# it comes from bookworm-backports (Mesa 25); Debian 13 has Mesa 25 in main.
has_adapter() {
  XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp} node --input-type=module \
    -e "import { create } from 'webgpu'; process.exit((await create([]).requestAdapter()) ? 0 : 1);" \
    >/dev/null 2>&1
}
if $for_tests && ! has_adapter; then
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  echo "setup: no WebGPU adapter; installing Mesa's Vulkan drivers (lavapipe) for Debian ${codename:-?}"
  if [ "$codename" = bookworm ]; then
    list=/etc/apt/sources.list.d/bookworm-backports.sources
    [ -f "$list" ] || printf '%s\n' 'Types: deb' 'URIs: http://deb.debian.org/debian' \
      'Suites: bookworm-backports' 'Components: main' \
      'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' >"$list"
    target=(-t bookworm-backports)
  else
    target=()
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${target[@]}" \
    mesa-vulkan-drivers libvulkan1 >/dev/null
  if ! has_adapter; then
    echo "setup: Dawn still finds no WebGPU adapter after installing mesa-vulkan-drivers; 'duel doctor' says more" >&2
    exit 1
  fi
fi

if $cuda; then bash scripts/cuda.sh; fi
