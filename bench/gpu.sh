#!/usr/bin/env bash
# The GPU measurement in one device call (BENCHMARKS.md, "GPU"): the adapter, the engine bench on
# the webgpu provider (MatMul ceiling, the reference training step, the cpu provider's step on the
# same machine as the peer), decoding at batch 1 and 64 on the ~22M model and a SmolLM-135M-shaped
# one, the 135M-shaped model's training step (sequence 512, batch 8), where each graph's nodes ran,
# and one SPPO round as the trainer runs it. Results go to $OUT, one JSON file a part.
#
#   here:        npm run build && bash bench/gpu-pack.sh && bash bench/gpu.sh --small   (lavapipe)
#   device call: carry [".gpu"], command "bash bench/gpu.sh", timeout 540 s
#
# --small shrinks every size so that a software adapter (lavapipe) runs it end to end in minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
small=false
[ "${1:-}" = --small ] && small=true
OUT=${OUT:-$(mktemp -d)}
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
# Each part on its own: a failing one is reported, the others still run.
part() {
  local name=$1
  shift
  say "$name"
  "$@" >"$OUT/$name.json" 2>"$OUT/$name.log"
  local rc=$?
  if [ $rc -ne 0 ]; then
    say "$name FAILED (exit $rc):"
    tail -n 5 "$OUT/$name.log"
  else
    grep -v '^Warning' "$OUT/$name.log" | tail -n 3
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
      --out "$dir/out" --steps 8 --batch-size 8 &&
    echo "{\"wall_ms\": $((($(date +%s%N) - t0) / 1000000))}" && cat "$dir/out/metrics.json"
  local rc=$?
  rm -rf "$dir"
  return $rc
}

say "node $(node --version); nvidia-smi: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo none)"
export DUEL_RUNTIME_PROVIDER=webgpu
duel doctor | tee "$OUT/doctor.txt"
if $small; then
  part engine duel bench engine --json --model tiny --steps 3 --ceiling-size 256
  part decode duel bench decode --json --models testbed --batches 1,8 --new-tokens 8 --repeats 2
  part engine-135m duel bench engine --json --model tiny --steps 2 --ceiling-size 256 --no-peer
  part placement duel bench placement --json --model tiny --runs 2
  part round round 64 2 128
else
  part engine duel bench engine --json --steps 10 --ceiling-size 4096
  part decode duel bench decode --json --models 25M,smollm-135m --batches 1,64 --new-tokens 32 --repeats 2
  part engine-135m duel bench engine --json --model smollm-135m --steps 3 --ceiling-size 4096 --no-peer
  part placement duel bench placement --json --model stack --runs 3
  part round round 512 8 8192
fi
say "done; results in $OUT"
