#!/usr/bin/env bash
# The GPU measurement in one device call (BENCHMARKS.md, "GPU"): the adapter, the engine bench on
# the webgpu provider (MatMul ceiling, the reference training step, the cpu provider's step on the
# same machine as the peer), decoding at batch 1 and 64 on the ~22M model and a SmolLM-135M-shaped
# one, the 135M-shaped model's training step (sequence 512, batch 8), where each graph's nodes ran,
# and one SPPO round as the trainer runs it. Results: $OUT/gpu-results.tgz.
#
#   here:        npm run build && bash bench/gpu-pack.sh && bash bench/gpu.sh --small   (lavapipe)
#   device call: carry [".gpu"], command "bash bench/gpu.sh", timeout 600 s (on the H200, about
#                4 minutes: the first five parts took 166 s, the rest about 60 s)
#
# --cuda DIR: the parts of bench/gpu-pack.sh --cuda, staged in DIR by earlier calls: ONNX Runtime
# 1.29's core with its CUDA provider is unpacked, CUDA 13's libraries are looked for in PyTorch's
# nvidia-* packages, and when `duel doctor` says the provider loads, the engine, decode and round
# parts run again on cuda (float32) beside the webgpu ones.
# --small shrinks every size so that a software adapter (lavapipe) runs it end to end in minutes;
# --only NAME,NAME runs those parts alone (a second call that repeats what the first one missed).
# Each part writes NAME.json and NAME.log; after every part they are packed again into
# $OUT/gpu-results.tgz (a device call brings back 8 files at most, and whatever is there when a
# call is cut short).
set -uo pipefail
cd "$(dirname "$0")/.."
small=false
only=
cuda_parts=
while [ $# -gt 0 ]; do
  case $1 in
  --small) small=true ;;
  --only) only=,$2, && shift ;;
  --cuda) cuda_parts=$2 && shift ;;
  *) echo "gpu.sh: unknown argument '$1' (--small, --only NAME,..., --cuda DIR)" >&2 && exit 2 ;;
  esac
  shift
done
OUT=${OUT:-$(mktemp -d)}
results=$(mktemp -d)
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
start=$(date +%s)
say() { echo "gpu.sh [$(($(date +%s) - start)) s] $*"; }

# Unpack what bench/gpu-pack.sh carried: the Vulkan loader, Node, the duel command.
root=$PWD
if [ -d .gpu ]; then
  for deb in .gpu/*.deb; do dpkg -x "$deb" /; done
  ldconfig
  mkdir -p /tmp/duel-gpu && xz -dc .gpu/node.xz >/tmp/duel-gpu/node && chmod +x /tmp/duel-gpu/node
  tar -C /tmp/duel-gpu -xJf .gpu/duel.tar.xz
  export PATH=/tmp/duel-gpu:$PATH
  root=/tmp/duel-gpu/duel
fi
# On an NVIDIA machine whose loader does not look where the container runtime put the driver.
nv=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f "$nv" ] && export VK_DRIVER_FILES=${VK_DRIVER_FILES:-$nv}
duel() { node "$root/dist/bin/main.js" "$@"; }
# Each part on its own, under its own time limit (seconds, the first argument): a failing or slow
# part is reported and the others still run, so one device call always brings back what it could.
part() {
  local limit=$1 name=$2
  shift 2
  [ -n "$only" ] && [[ $only != *",$name,"* ]] && return
  say "$name (at most $limit s)"
  timeout -k 5 "$limit" bash -c '"$@"' part "$@" >"$results/$name.json" 2>"$results/$name.log"
  local rc=$?
  tar -C "$results" -czf "$OUT/gpu-results.tgz" .
  if [ $rc -ne 0 ]; then
    say "$name FAILED (exit $rc):"
    tail -n 5 "$results/$name.log"
  else
    grep -v '^Warning' "$results/$name.log" | tail -n 3
  fi
}

# One round of SPPO through `duel train round` (the trainer's work: frozen log-probs, then the
# steps): 64 records of K = 4 completions on a model of the given shape, 8 steps of batch 8.
round() {
  local dir
  dir=$(mktemp -d)
  node -e '
    const [dir, d, layers, vocab] = process.argv.slice(1);
    const fs = require("fs");
    fs.writeFileSync(`${dir}/config.json`, JSON.stringify({ model_type: "llama", vocab_size: +vocab,
      hidden_size: +d, intermediate_size: 4 * d, num_hidden_layers: +layers, num_attention_heads: 8,
      max_position_embeddings: 256, tie_word_embeddings: true }));
    let x = 1;
    const r = () => (x = (x * 48271) % 2147483647) / 2147483647;
    const ids = (n) => Array.from({ length: n }, () => 1 + Math.floor(r() * (vocab - 1)));
    const lines = Array.from({ length: 64 }, () => {
      const p = Array.from({ length: 4 }, () => Array.from({ length: 4 }, () => r()));
      const prefs = p.map((row, i) => row.map((v, j) => (i === j ? 0.5 : i < j ? v : 1 - p[j][i])));
      return JSON.stringify({ prompt_ids: ids(16), completion_ids: [ids(32), ids(32), ids(32), ids(32)], prefs });
    });
    fs.writeFileSync(`${dir}/records.jsonl`, lines.join("\n"));
  ' "$dir" "$@" &&
    duel model init --arch llama --config "$dir/config.json" --out "$dir/policy" >/dev/null &&
    local t0 && t0=$(date +%s%N) &&
    duel train round --algo sppo --model "$dir/policy" --ref "$dir/policy" --data "$dir/records.jsonl" \
      --out "$dir/out" --steps 8 --batch-size 8 ${FOLD:+--fold-steps $FOLD} &&
    echo "{\"wall_ms\": $((($(date +%s%N) - t0) / 1000000))}" && cat "$dir/out/metrics.json"
  local rc=$?
  rm -rf "$dir"
  return $rc
}

export -f duel round
export root
say "node $(node --version); nvidia-smi: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo none)"
export DUEL_RUNTIME_PROVIDER=webgpu
duel doctor >"$results/doctor.txt" 2>&1
grep -v '^Warning' "$results/doctor.txt"
if grep -q '^webgpu adapter *no WebGPU adapter' "$results/doctor.txt"; then
  # Without an adapter every part would fail: stop here and keep the device time.
  say "no WebGPU adapter; the Vulkan loader and drivers this machine has:"
  ldconfig -p | grep -i vulkan
  ls /usr/local/nvidia/share/vulkan/icd.d /usr/share/vulkan/icd.d /etc/vulkan/icd.d 2>&1
  cat "$nv" 2>/dev/null
  ldd "$(ldconfig -p | awk '/libGLX_nvidia.so.0/ {print $NF; exit}')" 2>&1 | grep -i 'not found\|GL'
  VK_LOADER_DEBUG=error,warn,driver duel doctor 2>&1 | grep -i 'nvidia\|error\|fail' | head -n 20
  exit 1
fi
# The sizes of each part: the H200's, or --small's for a software adapter (which gets 120 s a part).
if $small; then
  engine='--model tiny --steps 3 --ceiling-size 256'
  engine135='--model tiny --steps 2 --ceiling-size 256'
  decode='--models testbed --batches 1,8 --new-tokens 8 --repeats 2'
  judge='--small --k 3 --source 12 --candidate 6 --reps 1'
  placement='--model tiny --runs 2'
  sizes='64 2 128'
else
  engine='--steps 10 --ceiling-size 4096'
  engine135='--model smollm-135m --steps 3 --ceiling-size 4096'
  decode='--models 25M,smollm-135m --batches 1,64 --new-tokens 32 --repeats 2'
  judge='--k 4 --source 512 --candidate 256 --reps 2'
  placement='--model stack --runs 3'
  sizes='512 8 8192'
fi
limit() { if $small; then echo 120; else echo "$1"; fi; }
# The size strings are split into flags on purpose (unquoted).
part "$(limit 100)" engine duel bench engine --json $engine --compare-layouts
part "$(limit 100)" decode duel bench decode --json $decode
# The decoder in float16 (its weights, activations and cache; what shader-f16 is for).
part "$(limit 60)" decode-float16 duel bench decode --json $decode --dtype float16 --no-peer
# Each generation as one ONNX Loop run instead of one run a token (cuda's default).
part "$(limit 60)" decode-one-run duel bench decode --json $decode --one-run --no-peer
part "$(limit 110)" engine-135m duel bench engine --json $engine135 --no-peer
# The judges at their real shapes (PairRM-large's pairs/s, a Qwen3-0.6B reward model), then both
# in float16.
part "$(limit 90)" judge duel bench judge --json $judge
part "$(limit 75)" judge-float16 duel bench judge --json $judge --dtype float16
part "$(limit 45)" placement duel bench placement --json $placement
part "$(limit 60)" round round $sizes
# Its 8 steps as 2 runs of 4 (one ONNX Loop each): the same losses; what moved per step.
part "$(limit 60)" round-folded env FOLD=4 bash -c "round $sizes"
# The same round on the cpu provider: its losses are the check that the GPU computed the same.
part "$(limit 90)" round-cpu env DUEL_RUNTIME_PROVIDER=cpu bash -c "round $sizes"
# What Dawn's and ONNX Runtime's checks of every dispatch cost (DUEL_WEBGPU_VALIDATION).
part "$(limit 40)" engine-novalidation env DUEL_WEBGPU_VALIDATION=disabled \
  bash -c "duel bench engine --json $engine --no-peer"
part "$(limit 60)" decode-novalidation env DUEL_WEBGPU_VALIDATION=disabled \
  bash -c "duel bench decode --json $decode --no-peer"
# The same parts on ONNX Runtime's CUDA provider, when its core was carried and loads here.
if [ -n "$cuda_parts" ]; then
  mkdir -p /tmp/duel-gpu/ort-cuda
  cat "$cuda_parts"/core.tar.xz.part-* | xz -dc | tar -C /tmp/duel-gpu/ort-cuda -xf -
  export DUEL_ONNXRUNTIME_NODE=/tmp/duel-gpu/ort-cuda/node_modules/onnxruntime-node
  # CUDA 13's libcudart, libcublas(Lt) and libcurand, from PyTorch's nvidia-* wheels where present.
  nvlibs=$(python3 -c 'import glob, nvidia, os; print(":".join(sorted({os.path.dirname(p) for d in nvidia.__path__ for p in glob.glob(d + "/*/lib/lib*.so*")})))' 2>/dev/null || true)
  [ -n "$nvlibs" ] && export LD_LIBRARY_PATH="$nvlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  DUEL_RUNTIME_PROVIDER=cuda duel doctor >"$results/doctor-cuda.txt" 2>&1
  grep '^cuda provider' "$results/doctor-cuda.txt"
  if grep -q '^cuda provider *loads' "$results/doctor-cuda.txt"; then
    part "$(limit 100)" engine-cuda env DUEL_RUNTIME_PROVIDER=cuda bash -c "duel bench engine --json $engine --no-peer"
    part "$(limit 60)" decode-cuda env DUEL_RUNTIME_PROVIDER=cuda bash -c "duel bench decode --json $decode --no-peer"
    # One run a token instead: the KV cache crosses at every step (moved_per_token).
    part "$(limit 60)" decode-cuda-stepwise env DUEL_RUNTIME_PROVIDER=cuda \
      bash -c "duel bench decode --json $decode --no-peer --stepwise"
    part "$(limit 60)" decode-cuda-float16 env DUEL_RUNTIME_PROVIDER=cuda \
      bash -c "duel bench decode --json $decode --no-peer --dtype float16"
    # cuda's state crosses at every run: a step a run (FOLD=1), then 8 steps as one run, the
    # default there, which move it once (moved_mb_per_step).
    part "$(limit 60)" round-cuda env DUEL_RUNTIME_PROVIDER=cuda FOLD=1 bash -c "round $sizes"
    part "$(limit 60)" round-cuda-folded env DUEL_RUNTIME_PROVIDER=cuda FOLD=8 bash -c "round $sizes"
  else
    say "the cuda provider does not load here (doctor-cuda.txt): its parts skipped"
  fi
  tar -C "$results" -czf "$OUT/gpu-results.tgz" .
fi
# The same chip's float32 MatMul through CUDA (PyTorch, where the image has it), as the ceiling's
# peer: how much of the card WebGPU's float32 kernels reach.
if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
  part 60 torch-matmul python3 -c '
import json, torch
n = 4096
a, b = (torch.randn(n, n, device="cuda") for _ in range(2))
out = {}
for tf32 in (False, True):
    torch.backends.cuda.matmul.allow_tf32 = tf32
    for _ in range(3): a @ b
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(20): a @ b
    e.record(); torch.cuda.synchronize()
    out["tf32" if tf32 else "fp32"] = 2 * n**3 * 20 / (s.elapsed_time(e) / 1e3) / 1e12
print(json.dumps({"size": n, "tflops": out, "device": torch.cuda.get_device_name()}))'
  cat "$results/torch-matmul.json"
fi
say "done; results in $OUT/gpu-results.tgz"
