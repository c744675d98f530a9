#!/usr/bin/env bash
# The CUDA execution provider, opt in (bash scripts/setup.sh --cuda runs this): ONNX Runtime
# 1.29.0's Node binding and Microsoft's CUDA 13 provider for it, both from the npm registry, into
# .cache/ort-cuda — beside the default onnxruntime-node (1.30, which has no CUDA provider library),
# never over it: a provider loads only into the core of its own version. The provider package
# (com.github.asus4.onnxruntime.linux-x64-gpu, MIT, a 180 MB tarball) holds
# libonnxruntime_providers_{cuda,shared}.so; they go where that core's libonnxruntime.so.1 looks
# for them, its own folder. They need CUDA 13's libcudart, libcublas(Lt) and libcurand and the
# driver's libcuda at run time (`duel doctor` names what is missing). A Runtime on the cuda
# provider loads this core (src/platform/cuda.ts).
set -euo pipefail
cd "$(dirname "$0")/.."
CORE=1.29.0
PROVIDER=com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9
dir=.cache/ort-cuda
core=$dir/node_modules/onnxruntime-node
bin=$core/bin/napi-v6/linux/x64
if [ -f "$bin/libonnxruntime_providers_cuda.so" ] && grep -q "\"version\": \"$CORE\"" "$core/package.json"; then
  echo "cuda: ONNX Runtime $CORE with its CUDA provider already in $dir"
  exit 0
fi
echo "cuda: installing onnxruntime-node@$CORE and the provider libraries of $PROVIDER into $dir"
rm -rf "$dir" && mkdir -p "$dir"
# --ignore-scripts: onnxruntime-node's own install script would fetch a CUDA 12 provider from NuGet.
npm install --prefix "$dir" --no-save --no-audit --no-fund --ignore-scripts --loglevel=error "onnxruntime-node@$CORE"
# The core ships every platform's binaries; a provider for linux/x64 needs linux/x64's only.
find "$core/bin/napi-v6" -mindepth 1 -maxdepth 1 ! -name linux -exec rm -rf {} +
find "$core/bin/napi-v6/linux" -mindepth 1 -maxdepth 1 ! -name x64 -exec rm -rf {} +
# The provider package's tarball alone (npm pack checks it against the registry's integrity):
# installing it would also bring the 385 MB Unity plugin it depends on, which duel never loads.
pack=$(mktemp -d)
trap 'rm -rf "$pack"' EXIT
(cd "$pack" && npm pack --silent --loglevel=error "$PROVIDER" >/dev/null)
tar -xzf "$pack"/*.tgz -C "$pack" package/Plugins/Linux/x64/libonnxruntime_providers_cuda.so \
  package/Plugins/Linux/x64/libonnxruntime_providers_shared.so
cp "$pack"/package/Plugins/Linux/x64/libonnxruntime_providers_{cuda,shared}.so "$bin/"
du -sh "$dir" | sed 's/^/cuda: /'
echo "cuda: done; DUEL_RUNTIME_PROVIDER=cuda uses it, and 'duel doctor' says whether it loads here"
