#!/usr/bin/env bash
# Packs what bench/gpu.sh needs on a lent GPU machine into .gpu/ (ignored by git, named in the
# device call's `carry`): Node itself (the machine's image may have none), the bundled `duel`
# command with the only packages it loads from node_modules for the benchmarks (onnxruntime-node
# and Dawn's webgpu binding, linux/x64 only), and the Vulkan loader as a Debian package. xz keeps
# it under the 64 MiB a device call carries. Run here after `npm run build`.
#
# --cuda also packs ONNX Runtime 1.29's core with its CUDA provider (scripts/cuda.sh) into
# .gpu-cuda/, split into parts of 60 MiB: more than one call carries. Each part travels in a call of
# its own into the warm machine's /tmp (carry [".gpu-cuda/core.tar.xz.part-aa"], command
# "mkdir -p /tmp/duel-cuda && cp .gpu-cuda/core.tar.xz.part-* /tmp/duel-cuda/"), and the last call
# carries .gpu and runs `bash bench/gpu.sh --cuda /tmp/duel-cuda`.
set -euo pipefail
cd "$(dirname "$0")/.."
cuda=false
[ "${1:-}" = --cuda ] && cuda=true
rm -rf .gpu && mkdir -p .gpu
for d in /.gpu/ /.gpu-cuda/; do grep -qx "$d" .git/info/exclude 2>/dev/null || echo "$d" >>.git/info/exclude; done

xz -T0 -6 -c "$(command -v node)" >.gpu/node.xz

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/duel/node_modules"
cp -r package.json proto "$stage/duel/"
mkdir -p "$stage/duel/dist" && cp -r dist/bin "$stage/duel/dist/bin"
for p in onnxruntime-node onnxruntime-common webgpu debug ms; do cp -r "node_modules/$p" "$stage/duel/node_modules/"; done
find "$stage/duel/node_modules/onnxruntime-node/bin" -mindepth 2 -maxdepth 2 ! -name linux -exec rm -rf {} +
find "$stage/duel/node_modules/onnxruntime-node/bin" -path '*/linux/*' -mindepth 3 -maxdepth 3 ! -name x64 -exec rm -rf {} +
find "$stage/duel/node_modules/webgpu/dist" -mindepth 1 -maxdepth 1 ! -name linux-x64 -exec rm -rf {} +
tar -C "$stage" -cf - duel | xz -T0 -6 >.gpu/duel.tar.xz

# The Vulkan loader for x86-64, whatever this machine is, and GLVND's dispatch libraries: NVIDIA's
# Vulkan driver is libGLX_nvidia.so.0, which gives the loader no vkCreateInstance without them.
lists=$(mktemp -d)
o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$lists")
mkdir -p "$lists/partial"
apt-get "${o[@]}" update -qq >/dev/null 2>&1
(cd .gpu && apt-get "${o[@]}" download libvulkan1 libglvnd0 libegl1 libgl1 libglx0 libopengl0 libgles2 >/dev/null 2>&1)
rm -rf "$lists"
du -ch .gpu/* | tail -n 1 | sed 's/^/gpu-pack: .gpu holds /'

if $cuda; then
  bash scripts/cuda.sh
  rm -rf .gpu-cuda && mkdir -p .gpu-cuda
  tar -C .cache/ort-cuda -cf - node_modules | xz -T0 -6 | split -b 60M - .gpu-cuda/core.tar.xz.part-
  ls .gpu-cuda | sed 's/^/gpu-pack: .gpu-cuda\//'
fi
