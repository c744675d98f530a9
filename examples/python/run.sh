#!/usr/bin/env bash
# Runs grpo.py against a local trainer: generates the Python stubs from proto/ with protoc,
# creates a small random model, starts `duel serve trainer` (in-process bus, a temporary file
# store) and runs the loop. Needs Debian's python3-grpcio and protobuf-compiler-grpc
# (scripts/setup.sh --for-tests installs them) and a built duel (npm run build).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
duel=("$(command -v node)" "$root/dist/bin/main.js")
py=/usr/bin/python3

gen="$here/gen"
rm -rf "$gen" && mkdir -p "$gen"
protoc -I "$root/proto" --python_out="$gen" --grpc_python_out="$gen" \
  --plugin=protoc-gen-grpc_python="$(command -v grpc_python_plugin)" \
  duel/v1/common.proto duel/v1/training.proto

work="$(mktemp -d)"
trainer=""
cleanup() {
  [ -n "$trainer" ] && kill "$trainer" 2>/dev/null && wait "$trainer" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/config.json" <<'JSON'
{"model_type": "llama", "vocab_size": 16, "hidden_size": 32, "intermediate_size": 64,
 "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 32,
 "tie_word_embeddings": true, "pad_token_id": 0, "eos_token_id": 1}
JSON
"${duel[@]}" model init --arch llama --config "$work/config.json" --out "$work/base" --seed 1 >/dev/null 2>&1
export DUEL_ARTIFACTS_ROOT="$work/store" DUEL_NATS_URL=memory: DUEL_LOG_LEVEL=warn
ref="$("${duel[@]}" artifacts put "$work/base" models/base)"
uri="$(node -e 'process.stdout.write(JSON.parse(process.argv[1]).uri)' "$ref")"
sha="$(node -e 'process.stdout.write(JSON.parse(process.argv[1]).sha256)' "$ref")"

"${duel[@]}" serve trainer --port 0 2> "$work/trainer.log" &
trainer=$!
for _ in $(seq 1 200); do
  address="$(grep -o 'listening on [0-9.:]*' "$work/trainer.log" | head -1 | cut -d' ' -f3 || true)"
  [ -n "$address" ] && break
  sleep 0.1
done
[ -n "${address:-}" ] || { cat "$work/trainer.log" >&2; echo "run.sh: the trainer did not start" >&2; exit 1; }

PYTHONPATH="$gen" "$py" "$here/grpo.py" --address "$address" --base-uri "$uri" --base-sha256 "$sha" "$@"
