/**
 * The in-process training session (#24's primitives): cross_entropy steps through it give
 * `duel train sft`'s weights; at ratio 1 the policy-gradient losses take cross-entropy's step; bad
 * datums are refused naming the field.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { type TrainingDatum, TrainingSession } from '../../src/algorithms/session.js';
import { trainRound } from '../../src/algorithms/train-round.js';
import { Runtime, SharedTensors } from '../../src/engine/index.js';
import { LogprobRunner } from '../../src/models/llama/logprob-runner.js';
import type { HostTensor } from '../../src/models/llama/weights.js';
import { initAdapter } from '../../src/models/lora/adapter.js';
import { ALL_LINEAR } from '../../src/models/lora/config.js';
import { maxRelativeDiff, weights } from '../helpers/model-fixtures.js';
import { refusal, refused } from '../helpers/refusal.js';
import { ALGO_OF, HPARAMS, ROUND_CONFIG, ROUND_RECORDS, ROUND_SEQUENCES } from '../helpers/round-fixtures.js';

const runtime = new Runtime({ workers: 2, intraOpThreads: 1 });
afterAll(() => runtime.close());
const cfg = ROUND_CONFIG;
const f32 = (w: Record<string, HostTensor>) =>
  Object.fromEntries(
    Object.entries(w).map(([k, t]) => [
      k,
      { ...t, dtype: 'float32' as const, data: Float32Array.from(t.data) },
    ]),
  );
const w0 = f32(weights(cfg, 2, 'float64', 5));
const DATA: TrainingDatum[] = ROUND_SEQUENCES;
const ADAMW = { optimizer: { kind: 'adamw' as const, weightDecay: 0.01 }, gradClip: 1, lr: 1e-2 };

describe('TrainingSession', () => {
  it('N cross_entropy forwardBackward + optimStep calls give duel train sft’s weights', async () => {
    const sft = await trainRound(runtime, {
      algo: 'sft',
      hparams: {},
      config: cfg,
      weights: w0,
      records: ROUND_RECORDS.map((r) => ({ ...r, prefs: [] })),
      ...ADAMW,
      steps: 3,
      batchSize: ROUND_RECORDS.length, // every row in every step, as the session's calls below
      seed: 0,
    });
    const session = await TrainingSession.create(runtime, { config: cfg, weights: w0, ...ADAMW });
    const losses: number[] = [];
    for (let i = 0; i < 3; i++) {
      losses.push(await session.forwardBackward('cross_entropy', DATA));
      expect(await session.optimStep()).toMatchObject({ applied: true, step: i + 1, lr: 1e-2 });
    }
    expect(losses[0]).toBeCloseTo(sft.metrics.loss_first, 5);
    expect(maxRelativeDiff(await session.weights(), sft.weights)).toBeLessThan(1e-6);
    await session.close();
  });

  it('steps in place give the state of steps into fresh buffers, bit for bit; a pinned snapshot keeps its moment', async () => {
    const run = async (inPlace: boolean) => {
      const s = await TrainingSession.create(runtime, { config: cfg, weights: w0, ...ADAMW, inPlace });
      let pinned: Awaited<ReturnType<TrainingSession['pin']>> | undefined;
      let atPin: Awaited<ReturnType<TrainingSession['snapshot']>> | undefined;
      for (let i = 0; i < 4; i++) {
        await s.forwardBackward('cross_entropy', DATA.slice(i % 2));
        await s.optimStep();
        if (i === 1) {
          atPin = await s.snapshot();
          pinned = await s.pin();
        }
      }
      // Two steps after the pin (which replace every pinned tensor), the pin still reads step 2.
      const read = await pinned!.read();
      for (const [k, t] of Object.entries(atPin!.tensors))
        expect(Array.from(read.tensors[k]!.data as Float32Array), k).toEqual(
          Array.from(t.data as Float32Array),
        );
      expect(read.steps).toBe(2);
      const end = await s.snapshot();
      await s.close();
      return end;
    };
    const [inPlace, fresh] = [await run(true), await run(false)];
    // Pinned with gradients pending: the optimizer step zeroes the sums in their buffers, but not
    // the ones the pin holds.
    const s = await TrainingSession.create(runtime, { config: cfg, weights: w0, ...ADAMW });
    await s.forwardBackward('cross_entropy', DATA);
    const pending = await s.snapshot();
    const pin = await s.pin();
    await s.optimStep();
    await s.forwardBackward('cross_entropy', DATA.slice(1));
    const read = await pin.read();
    for (const [k, t] of Object.entries(pending.tensors))
      expect(Array.from(read.tensors[k]!.data as Float32Array), k).toEqual(
        Array.from(t.data as Float32Array),
      );
    expect(Object.keys(pending.tensors).some((k) => k.endsWith('.grad_acc'))).toBe(true);
    await s.close();
    expect(inPlace.steps).toBe(4);
    for (const [k, t] of Object.entries(fresh.tensors))
      expect(Array.from(inPlace.tensors[k]!.data as Float32Array), k).toEqual(
        Array.from(t.data as Float32Array),
      );
  });

  it('takes weights handed over without a copy, leaving the caller’s arrays empty, and trains as on a copy', async () => {
    const steps = async (s: TrainingSession) => {
      for (let i = 0; i < 2; i++) {
        await s.forwardBackward('cross_entropy', DATA.slice(i));
        await s.optimStep();
      }
      const end = await s.weights();
      await s.close();
      return end;
    };
    const copied = await steps(await TrainingSession.create(runtime, { config: cfg, weights: w0, ...ADAMW }));
    const given = f32(w0);
    const moved = await steps(
      await TrainingSession.create(runtime, {
        config: cfg,
        weights: given,
        handOver: true,
        reference: async () => w0,
        ...ADAMW,
      }),
    );
    expect(Object.values(given).every((t) => t.data.length === 0)).toBe(true);
    expect(maxRelativeDiff(moved, copied)).toBe(0);
    // Its weights gone, a full-weight session would have no π_ref of its own.
    await expect(
      TrainingSession.create(runtime, { config: cfg, weights: f32(w0), handOver: true, ...ADAMW }),
    ).rejects.toThrow(/handOver needs `reference`/);
    // A LoRA session on a base handed over to its worker, its adapter handed over too.
    const lora = { rank: 2, alpha: 4, targets: [...ALL_LINEAR], rslora: false, dropout: 0 };
    const onBase = async (handOver: boolean) => {
      const base = await SharedTensors.create(runtime, f32(w0), { handOver });
      const adapter = initAdapter(cfg, lora, 3).tensors;
      const s = await TrainingSession.create(runtime, {
        config: cfg,
        weights: adapter,
        handOver,
        lora: { config: lora, base },
        ...ADAMW,
      });
      const end = await steps(s);
      await base.dispose();
      return { end, left: Object.values(adapter).reduce((n, t) => n + t.data.length, 0) };
    };
    const [loraCopied, loraMoved] = [await onBase(false), await onBase(true)];
    expect(loraMoved.left).toBe(0);
    expect(loraCopied.left).toBeGreaterThan(0);
    expect(maxRelativeDiff(loraMoved.end, loraCopied.end)).toBe(0);
  });

  it('with gradient checkpointing takes the same steps, token and pairwise losses alike', async () => {
    const run = async (checkpointing: boolean) => {
      const s = await TrainingSession.create(runtime, { config: cfg, weights: w0, ...ADAMW, checkpointing });
      const losses: number[] = [];
      for (let i = 0; i < 2; i++) {
        losses.push(await s.forwardBackward('cross_entropy', DATA.slice(i)));
        losses.push(await s.forwardBackwardRecords('inpo', HPARAMS.inpo!, ROUND_RECORDS, i));
        await s.optimStep();
      }
      const end = await s.weights();
      await s.close();
      return { losses, end };
    };
    const [kept, recomputed] = [await run(false), await run(true)];
    expect(recomputed.losses).toEqual(kept.losses);
    expect(maxRelativeDiff(recomputed.end, kept.end)).toBe(0);
    expect(maxRelativeDiff(kept.end, w0)).toBeGreaterThan(1e-3);
  });

  it('in float16: the float32 step to half’s rounding; an overflowed step is skipped and the scale it halved is in the snapshot', async () => {
    const SGD = { optimizer: { kind: 'sgd' as const }, gradClip: 0, lr: 0.5 };
    const update = async (dtype: 'float32' | 'float16') => {
      const s = await TrainingSession.create(runtime, {
        config: cfg,
        weights: w0,
        ...SGD,
        dtype,
        lossScale: { init: 2 ** 8 },
      });
      const loss = await s.forwardBackward('cross_entropy', DATA);
      const m = await s.optimStep();
      const w1 = await s.weights();
      const logprobs = await s.computeLogprobs(DATA);
      await s.close();
      return { loss, m, w1, logprobs };
    };
    const [f32, f16] = [await update('float32'), await update('float16')];
    expect(f16.m).toMatchObject({ applied: true, lossScale: 2 ** 8 });
    expect(f32.m.lossScale).toBeUndefined();
    expect(Math.abs(f16.loss - f32.loss)).toBeLessThan(5e-3);
    // The update, against float32's: within 1e-2 of its largest entry (test/algorithms/float16-training.test.ts).
    let largest = 0;
    let apart = 0;
    for (const [k, t] of Object.entries(w0)) {
      for (let i = 0; i < t.data.length; i++) {
        const u32 = f32.w1[k]!.data[i]! - t.data[i]!;
        largest = Math.max(largest, Math.abs(u32));
        apart = Math.max(apart, Math.abs(f16.w1[k]!.data[i]! - t.data[i]! - u32));
      }
    }
    expect(apart / largest).toBeLessThan(1e-2);
    expect(apart).toBeGreaterThan(0); // it did compute in half
    const tokens = f32.logprobs.flat();
    const worst = Math.max(...f16.logprobs.flat().map((v, i) => Math.abs(v - tokens[i]!)));
    expect(worst).toBeLessThan(5e-3); // nats, as a round's float16 log-probs

    // Any gradient times 2⁴⁰ overflows half: the step is skipped and the scale halves.
    const s = await TrainingSession.create(runtime, {
      config: cfg,
      weights: w0,
      ...SGD,
      dtype: 'float16',
      lossScale: { init: 2 ** 40 },
    });
    await s.forwardBackward('cross_entropy', DATA);
    expect(await s.optimStep()).toMatchObject({ applied: false, lossScale: 2 ** 40 });
    expect(maxRelativeDiff(await s.weights(), w0)).toBe(0);
    const snapshot = await s.snapshot();
    expect(snapshot.lossScale).toEqual({ scale: 2 ** 39, goodSteps: 0 });
    await s.close();
    const restored = await TrainingSession.create(runtime, {
      config: cfg,
      weights: w0,
      ...SGD,
      dtype: 'float16',
    });
    await restored.restore(snapshot);
    await restored.forwardBackward('cross_entropy', DATA);
    expect((await restored.optimStep()).lossScale).toBe(2 ** 39);
    await restored.close();
  });

  it('importance_sampling and ppo at ratio 1 with unit advantages take cross_entropy’s step', async () => {
    const scorer = await LogprobRunner.create(runtime, cfg, w0);
    const q = await scorer.logprobs(DATA);
    await scorer.release();
    const withSampling = DATA.map((d, i) => ({
      ...d,
      advantages: d.completionIds.map(() => 1),
      samplingLogprobs: q[i]!.perToken,
    }));
    const stepWith = async (loss: 'cross_entropy' | 'importance_sampling' | 'ppo') => {
      const s = await TrainingSession.create(runtime, { config: cfg, weights: w0, ...ADAMW, gradClip: 0 });
      await s.forwardBackward(loss, loss === 'cross_entropy' ? DATA : withSampling);
      await s.optimStep(1e-3);
      const w = await s.weights();
      await s.close();
      return w;
    };
    const ce = await stepWith('cross_entropy');
    for (const loss of ['importance_sampling', 'ppo'] as const)
      expect(maxRelativeDiff(await stepWith(loss), ce), loss).toBeLessThan(1e-5);
  });

  it('refuses a bad datum or loss naming the field, and applies nothing', async () => {
    const s = await TrainingSession.create(runtime, { config: cfg, weights: w0, ...ADAMW });
    const fields = (f: () => unknown) => refusal(f).violations.map((v) => v.field);
    expect(fields(() => s.forwardBackward('sft' as 'ppo', DATA))).toEqual(['loss']);
    expect(fields(() => s.forwardBackward('ppo', DATA))).toEqual(['data[0]']);
    expect(fields(() => s.forwardBackward('cross_entropy', [{ ...DATA[0]!, tokenWeights: [1] }]))).toEqual([
      'data[0].token_weights',
    ]);
    expect(fields(() => s.forwardBackward('cross_entropy', [{ ...DATA[0]!, advantages: [1, 1] }]))).toEqual([
      'data[0].advantages',
    ]);
    expect(
      fields(() =>
        s.forwardBackward('ppo', [
          { ...DATA[0]!, tokenWeights: [1, 1], advantages: [1, 1], samplingLogprobs: [0, 0] },
        ]),
      ),
    ).toEqual(['data[0].token_weights']);
    expect(
      fields(() =>
        s.forwardBackward('ppo', [{ ...DATA[0]!, advantages: [1, 1], samplingLogprobs: [0, 0] }], {
          clip: 2,
        }),
      ),
    ).toEqual(['loss_config.clip']);
    expect(s.steps).toBe(0);
    await s.close();
  });

  it.each(Object.keys(HPARAMS).filter((c) => c !== 'spo'))(
    'a %s forwardBackward on round records + optimStep gives duel train round’s one-step update',
    async (name) => {
      const algo = ALGO_OF[name] ?? name;
      const round = await trainRound(runtime, {
        algo,
        hparams: HPARAMS[name]!,
        config: cfg,
        weights: w0,
        reference: w0,
        records: ROUND_RECORDS,
        ...ADAMW,
        steps: 1,
        batchSize: ROUND_RECORDS.length,
        seed: 3,
      });
      const session = await TrainingSession.create(runtime, { config: cfg, weights: w0, ...ADAMW });
      const loss = await session.forwardBackwardRecords(algo, HPARAMS[name]!, ROUND_RECORDS, 3);
      expect(loss).toBeCloseTo(round.metrics.loss_first as number, 5);
      expect(await session.optimStep()).toMatchObject({ applied: true, step: 1 });
      expect(maxRelativeDiff(await session.weights(), round.weights)).toBeLessThan(1e-5);
      await session.close();
    },
  );

  it('sums a pairwise loss and a token loss into one step, and refuses SPO’s mid-round sampling', async () => {
    const session = await TrainingSession.create(runtime, { config: cfg, weights: w0, ...ADAMW });
    const a = await session.forwardBackwardRecords('sppo', HPARAMS.sppo!, ROUND_RECORDS, 0);
    const b = await session.forwardBackward('cross_entropy', DATA);
    expect((await session.optimStep()).loss).toBeCloseTo(a + b, 6);
    expect(
      (await refused(session.forwardBackwardRecords('spo', HPARAMS.spo!, ROUND_RECORDS, 0))).violations.map(
        (v) => v.field,
      ),
    ).toEqual(['loss']);
    expect(
      (await refused(session.forwardBackwardRecords('sppo', { eta: -1 }, ROUND_RECORDS, 0))).violations.map(
        (v) => v.field,
      ),
    ).toEqual(['eta']);
    await session.close();
  });

  it('LoRA sessions on one shared base: each trains its own adapter as duel train round would', async () => {
    const lora = { rank: 2, alpha: 4, targets: [...ALL_LINEAR], rslora: false, dropout: 0 };
    const base = await SharedTensors.create(runtime, w0);
    const adapters = [initAdapter(cfg, lora, 1), initAdapter(cfg, lora, 2)];
    const sessions = await Promise.all(
      adapters.map((a) =>
        TrainingSession.create(runtime, {
          config: cfg,
          weights: a.tensors,
          lora: { config: lora, base },
          ...ADAMW,
        }),
      ),
    );
    // Interleaved: session 0 cross-entropy, session 1 SPPO, neither touching the other's adapter.
    for (let i = 0; i < 2; i++) {
      await sessions[0]!.forwardBackward('cross_entropy', DATA);
      await sessions[0]!.optimStep();
    }
    await sessions[1]!.forwardBackwardRecords('sppo', HPARAMS.sppo!, ROUND_RECORDS, 0);
    await sessions[1]!.optimStep();
    const round = (algo: string, adapter: (typeof adapters)[number], steps: number) =>
      trainRound(runtime, {
        algo,
        hparams: algo === 'sppo' ? HPARAMS.sppo! : {},
        config: cfg,
        weights: w0,
        adapter,
        records: algo === 'sft' ? ROUND_RECORDS.map((r) => ({ ...r, prefs: [] })) : ROUND_RECORDS,
        ...ADAMW,
        steps,
        batchSize: ROUND_RECORDS.length,
        seed: 0,
      });
    const sft = await round('sft', adapters[0]!, 2);
    const sppo = await round('sppo', adapters[1]!, 1);
    expect(maxRelativeDiff(await sessions[0]!.weights(), sft.adapter!.tensors)).toBeLessThan(1e-5);
    expect(maxRelativeDiff(await sessions[1]!.weights(), sppo.adapter!.tensors)).toBeLessThan(1e-5);
    // The base itself is no parameter of either session.
    expect(Object.keys(await sessions[0]!.weights()).every((k) => k.includes('lora_'))).toBe(true);
    for (const s of sessions) await s.close();
    await base.dispose();
  });
});
