/**
 * A second, independent Llama forward in plain float64 loops, written from transformers'
 * modeling_llama.py (eager attention) rather than from duel's decoder, so the two can only agree
 * if both compute what transformers computes.
 */
import type { LlamaConfig } from '../../src/models/llama/config.js';
import type { HostTensor } from '../../src/models/llama/weights.js';

type W = Record<string, HostTensor>;

export function linear(x: number[][], w: HostTensor, b?: HostTensor): number[][] {
  const [out, inn] = w.dims as [number, number];
  return x.map((row) =>
    Array.from({ length: out }, (_, o) => {
      let s = b ? b.data[o]! : 0;
      for (let i = 0; i < inn; i++) s += row[i]! * w.data[o * inn + i]!;
      return s;
    }),
  );
}

function rmsNorm(x: number[][], w: HostTensor, eps: number): number[][] {
  return x.map((row) => {
    const ms = row.reduce((a, v) => a + v * v, 0) / row.length;
    const r = 1 / Math.sqrt(ms + eps);
    return row.map((v, i) => v * r * w.data[i]!);
  });
}

const silu = (v: number) => v / (1 + Math.exp(-v));

/** Logits [T][V] for one sequence; mask[j] = 0 hides key j (padding). */
export function referenceLogits(cfg: LlamaConfig, w: W, ids: number[], mask?: number[]): number[][] {
  return linear(
    referenceHidden(cfg, w, ids, mask),
    cfg.tieWordEmbeddings ? w['model.embed_tokens.weight']! : w['lm_head.weight']!,
  );
}

/** Final-norm hidden states [T][H]; `bidirectional` drops the causal mask (the judge's encoder). */
export function referenceHidden(
  cfg: LlamaConfig,
  w: W,
  ids: number[],
  mask?: number[],
  bidirectional = false,
  /** Rows added to the token embeddings (a judge's segment embeddings). */
  offset?: number[][],
): number[][] {
  const T = ids.length;
  const { hiddenSize: H, headDim: d, numHeads: nh, numKvHeads: nkv } = cfg;
  const embed = w['model.embed_tokens.weight']!;
  let h = ids.map((id, t) =>
    Array.from(embed.data.subarray(id * H, (id + 1) * H), (x, k) => x + (offset?.[t]?.[k] ?? 0)),
  );
  const invFreq = Array.from({ length: d / 2 }, (_, i) => 1 / cfg.ropeTheta ** ((2 * i) / d));
  const rope = (vec: number[], pos: number) => {
    const out = vec.slice();
    for (let i = 0; i < d / 2; i++) {
      const a = pos * invFreq[i]!;
      const [x1, x2] = [vec[i]!, vec[i + d / 2]!];
      out[i] = x1 * Math.cos(a) - x2 * Math.sin(a);
      out[i + d / 2] = x2 * Math.cos(a) + x1 * Math.sin(a);
    }
    return out;
  };
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}`;
    const x = rmsNorm(h, w[`${p}.input_layernorm.weight`]!, cfg.rmsNormEps);
    const q = linear(x, w[`${p}.self_attn.q_proj.weight`]!, w[`${p}.self_attn.q_proj.bias`]);
    const k = linear(x, w[`${p}.self_attn.k_proj.weight`]!, w[`${p}.self_attn.k_proj.bias`]);
    const v = linear(x, w[`${p}.self_attn.v_proj.weight`]!, w[`${p}.self_attn.v_proj.bias`]);
    const attn = Array.from({ length: T }, () => new Array<number>(nh * d).fill(0));
    for (let head = 0; head < nh; head++) {
      const kvHead = Math.floor(head / (nh / nkv));
      // Qwen3: RMSNorm of each head's vector over head_dim (q_norm, k_norm), then rotary.
      const headNorm = (vec: number[], n: string) =>
        cfg.qkNorm ? rmsNorm([vec], w[`${p}.self_attn.${n}.weight`]!, cfg.rmsNormEps)[0]! : vec;
      const qs = q.map((row, t) => rope(headNorm(row.slice(head * d, (head + 1) * d), 'q_norm'), t));
      const ks = k.map((row, t) => rope(headNorm(row.slice(kvHead * d, (kvHead + 1) * d), 'k_norm'), t));
      for (let i = 0; i < T; i++) {
        const visible = (j: number) =>
          (mask ? mask[j] !== 0 : true) &&
          (bidirectional || (j <= i && (cfg.slidingWindow === undefined || i - j < cfg.slidingWindow)));
        const scores = ks.map((kj, j) =>
          visible(j)
            ? kj.reduce((a, kv, c) => a + kv * qs[i]![c]!, 0) / Math.sqrt(d)
            : Number.NEGATIVE_INFINITY,
        );
        const m = Math.max(...scores);
        const e = scores.map((s) => (s === Number.NEGATIVE_INFINITY ? 0 : Math.exp(s - m)));
        const z = e.reduce((a, b) => a + b, 0);
        // Hidden keys add nothing, even where a fully hidden padding query left NaNs in their values.
        for (let j = 0; j < T; j++)
          if (e[j] !== 0)
            for (let c = 0; c < d; c++) attn[i]![head * d + c]! += (e[j]! / z) * v[j]![kvHead * d + c]!;
      }
    }
    const o = linear(attn, w[`${p}.self_attn.o_proj.weight`]!);
    h = h.map((row, t) => row.map((val, i) => val + o[t]![i]!));
    const y = rmsNorm(h, w[`${p}.post_attention_layernorm.weight`]!, cfg.rmsNormEps);
    const gate = linear(y, w[`${p}.mlp.gate_proj.weight`]!);
    const up = linear(y, w[`${p}.mlp.up_proj.weight`]!);
    const down = linear(
      gate.map((row, t) => row.map((gv, i) => silu(gv) * up[t]![i]!)),
      w[`${p}.mlp.down_proj.weight`]!,
    );
    h = h.map((row, t) => row.map((val, i) => val + down[t]![i]!));
  }
  return rmsNorm(h, w['model.norm.weight']!, cfg.rmsNormEps);
}
