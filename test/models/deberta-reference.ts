/**
 * A second, independent DeBERTa-v2 and PairRM forward in float64 loops, written from
 * transformers' modeling_deberta_v2.py (DebertaV2Embeddings, DisentangledSelfAttention with
 * build_relative_position / make_log_bucket_position, XSoftmax, the post-LayerNorm blocks) and
 * LLM-Blender's DebertaV2PairRM and tokenize_pair, not from duel's graph code.
 */
import type { DebertaConfig } from '../../src/models/deberta/config.js';
import type { HostTensor } from '../../src/models/llama/weights.js';
import type { PairRMConfig } from '../../src/models/pairrm/config.js';
import { erf } from '../helpers/erf.js';
import { linear } from './llama-reference.js';

type W = Record<string, HostTensor>;
type M = number[][];

const lin = (x: M, w: HostTensor, b?: HostTensor): M => linear(x, w, b);

function layerNorm(x: M, w: HostTensor, b: HostTensor, eps: number): M {
  return x.map((row) => {
    const mu = row.reduce((a, v) => a + v, 0) / row.length;
    const v = row.reduce((a, x) => a + (x - mu) ** 2, 0) / row.length;
    return row.map((x, i) => ((x - mu) / Math.sqrt(v + eps)) * w.data[i]! + b.data[i]!);
  });
}

const gelu = (v: number) => 0.5 * v * (1 + erf(v / Math.SQRT2));

/** make_log_bucket_position, with torch's float32 arithmetic. */
function bucket(rel: number, size: number, maxPos: number): number {
  const f = Math.fround;
  const mid = Math.floor(size / 2);
  const sign = rel > 0 ? 1 : rel < 0 ? -1 : 0;
  const absPos = rel < mid && rel > -mid ? mid - 1 : Math.abs(rel);
  const logPos =
    Math.ceil(f(f(f(Math.log(f(absPos / mid))) / f(Math.log(f((maxPos - 1) / mid)))) * (mid - 1))) + mid;
  return absPos <= mid ? rel : logPos * sign;
}

/** DebertaV2Model's last hidden states [T][H] for one padded row (`mask[t]` 1 on tokens). */
export function referenceDeberta(cfg: DebertaConfig, w: W, ids: number[], mask: number[], p = ''): M {
  const T = ids.length;
  const H = cfg.hiddenSize;
  const { numHeads: nh, headDim: d } = cfg;
  const get = (n: string) => w[`${p}${n}`]!;
  let x: M = ids.map((id, t) => {
    const e = Array.from(get('embeddings.word_embeddings.weight').data.subarray(id * H, (id + 1) * H));
    if (cfg.positionBiasedInput) {
      const pos = get('embeddings.position_embeddings.weight').data;
      for (let i = 0; i < H; i++) e[i]! += pos[t * H + i]!;
    }
    return e;
  });
  x = layerNorm(
    x,
    get('embeddings.LayerNorm.weight'),
    get('embeddings.LayerNorm.bias'),
    cfg.layerNormEps,
  ).map((row, t) => row.map((v) => v * mask[t]!));
  const span = cfg.positionBuckets > 0 ? cfg.positionBuckets : cfg.maxRelativePositions;
  let relEmb: M = [];
  if (cfg.relativeAttention) {
    const r = get('encoder.rel_embeddings.weight');
    relEmb = Array.from({ length: 2 * span }, (_, i) => Array.from(r.data.subarray(i * H, (i + 1) * H)));
    if (cfg.normRelEmbeddings)
      relEmb = layerNorm(
        relEmb,
        get('encoder.LayerNorm.weight'),
        get('encoder.LayerNorm.bias'),
        cfg.layerNormEps,
      );
  }
  const relPos = (q: number, k: number) =>
    cfg.positionBuckets > 0 && cfg.maxRelativePositions > 0
      ? bucket(q - k, cfg.positionBuckets, cfg.maxRelativePositions)
      : q - k;
  const clamp = (v: number) => Math.min(Math.max(v, 0), 2 * span - 1);
  const sf = 1 + (cfg.c2p ? 1 : 0) + (cfg.p2c ? 1 : 0);
  const scale = Math.sqrt(d * sf);
  for (let l = 0; l < cfg.numLayers; l++) {
    const a = `encoder.layer.${l}.attention`;
    const proj = (n: string, y: M) => lin(y, get(`${a}.self.${n}.weight`), get(`${a}.self.${n}.bias`));
    const [Q, K, V] = [proj('query_proj', x), proj('key_proj', x), proj('value_proj', x)];
    const posK =
      cfg.relativeAttention && cfg.c2p ? proj(cfg.shareAttKey ? 'key_proj' : 'pos_key_proj', relEmb) : [];
    const posQ =
      cfg.relativeAttention && cfg.p2c ? proj(cfg.shareAttKey ? 'query_proj' : 'pos_query_proj', relEmb) : [];
    const ctx: M = Array.from({ length: T }, () => new Array<number>(nh * d).fill(0));
    const dot = (u: number[], v: number[], h: number) => {
      let s = 0;
      for (let c = 0; c < d; c++) s += u[h * d + c]! * v[h * d + c]!;
      return s;
    };
    for (let h = 0; h < nh; h++)
      for (let i = 0; i < T; i++) {
        if (!mask[i]) continue; // XSoftmax zeroes a hidden query's row
        const s = Array.from({ length: T }, (_, j) => {
          if (!mask[j]) return Number.NEGATIVE_INFINITY;
          let v = dot(Q[i]!, K[j]!, h) / scale;
          if (cfg.relativeAttention && cfg.c2p) v += dot(Q[i]!, posK[clamp(relPos(i, j) + span)]!, h) / scale;
          if (cfg.relativeAttention && cfg.p2c)
            v += dot(K[j]!, posQ[clamp(-relPos(j, i) + span)]!, h) / scale;
          return v;
        });
        const m = Math.max(...s);
        const e = s.map((v) => (v === Number.NEGATIVE_INFINITY ? 0 : Math.exp(v - m)));
        const z = e.reduce((acc, v) => acc + v, 0);
        for (let j = 0; j < T; j++)
          if (e[j]) for (let c = 0; c < d; c++) ctx[i]![h * d + c]! += (e[j]! / z) * V[j]![h * d + c]!;
      }
    const out = lin(ctx, get(`${a}.output.dense.weight`), get(`${a}.output.dense.bias`));
    const att = layerNorm(
      out.map((row, t) => row.map((v, i) => v + x[t]![i]!)),
      get(`${a}.output.LayerNorm.weight`),
      get(`${a}.output.LayerNorm.bias`),
      cfg.layerNormEps,
    );
    const L = `encoder.layer.${l}`;
    const inner = lin(att, get(`${L}.intermediate.dense.weight`), get(`${L}.intermediate.dense.bias`)).map(
      (r) => r.map(gelu),
    );
    const o = lin(inner, get(`${L}.output.dense.weight`), get(`${L}.output.dense.bias`));
    x = layerNorm(
      o.map((row, t) => row.map((v, i) => v + att[t]![i]!)),
      get(`${L}.output.LayerNorm.weight`),
      get(`${L}.output.LayerNorm.bias`),
      cfg.layerNormEps,
    );
  }
  return x;
}

/** LLM-Blender's tokenize_pair on ids: tokenizer.encode(prefix + text, max_length, truncation) per part. */
export function referencePairIds(cfg: PairRMConfig, prompt: number[], a: number[], b: number[]): number[] {
  const encode = (prefix: number, ids: number[], maxLength: number) => {
    const body = [prefix, ...ids];
    return [cfg.clsTokenId, ...body.slice(0, maxLength - 2), cfg.sepTokenId];
  };
  const maxLength = cfg.sourceMaxLength + 2 * cfg.candidateMaxLength;
  const source = encode(cfg.sourcePrefixId, prompt, cfg.sourceMaxLength);
  const candidateMax = Math.floor((maxLength - source.length) / 2);
  return [
    ...source,
    ...encode(cfg.cand1PrefixId, a, candidateMax),
    ...encode(cfg.cand2PrefixId, b, candidateMax),
  ];
}

/** DebertaV2PairRM's logit for one (unpadded) pair: mean over tasks of head(src, c1) − head(src, c2). */
export function referencePairRM(cfg: PairRMConfig, w: W, prompt: number[], a: number[], b: number[]): number {
  const ids = referencePairIds(cfg, prompt, a, b);
  const enc = referenceDeberta(
    cfg.encoder,
    w,
    ids,
    ids.map(() => 1),
    'pretrained_model.',
  );
  // torch.where(input_ids == prefix_id)
  const at = (id: number) => enc[ids.indexOf(id)]!;
  const head = (hc: number[]) => {
    const z = lin(
      [[...at(cfg.sourcePrefixId), ...hc]],
      w['head_layer.1.weight']!,
      w['head_layer.1.bias']!,
    )[0]!.map(Math.tanh);
    return lin([z], w['head_layer.4.weight']!, w['head_layer.4.bias']!)[0]!;
  };
  const left = head(at(cfg.cand1PrefixId));
  const right = head(at(cfg.cand2PrefixId));
  return left.reduce((s, v, i) => s + v - right[i]!, 0) / left.length;
}
