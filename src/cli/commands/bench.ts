/** `duel bench engine`: the engine benchmark (bench/engine.ts) with a human table or one JSON line. */
import type { Command } from 'commander';
import type { UpdateLayout } from '../../engine/optim.js';
import type { ComputeDtype, Provider } from '../../engine/runtime/protocol.js';
import { DuelError } from '../../errors.js';
import { intFlag } from '../flags.js';
import { cliRuntime, dtypeOption, envDtype, envProvider, parseProvider } from '../runtime.js';

const positiveInt = (flag: string) => intFlag(flag, 1);

/** Progress lines go to stderr, so that stdout holds only the result. */
const progress = (line: string) => process.stderr.write(`${line}\n`);

const providerOption = [
  '--provider <name>',
  'execution provider: cpu, webgpu or cuda (default: DUEL_RUNTIME_PROVIDER, else cpu)',
  (raw: string) => parseProvider(raw, '--provider'),
] as const;

const UPDATE_LAYOUTS: readonly UpdateLayout[] = ['flat', 'per-tensor'];

function updateLayoutArg(raw: string): UpdateLayout {
  if (!(UPDATE_LAYOUTS as readonly string[]).includes(raw))
    throw DuelError.invalidArgument([
      { field: '--update-layout', description: `must be one of ${UPDATE_LAYOUTS.join(', ')}, got '${raw}'` },
    ]);
  return raw as UpdateLayout;
}

/** With --json the result is one JSON line on stdout, and the caller skips its table. */
function printedAsJson(json: boolean | undefined, r: unknown): boolean {
  if (json) process.stdout.write(`${JSON.stringify(r)}\n`);
  return json === true;
}

/** The options of the training-session benches: the output, the model and one step's batch. */
function stepOptions(c: Command): Command {
  return c
    .option('--json', 'print one JSON line instead of a table')
    .option('--model <name>', 'testbed, 25M (21.9M parameters) or smollm-135m', '25M')
    .option('--batch <n>', 'sequences per step', positiveInt('--batch'), 8)
    .option(
      '--tokens <n>',
      'tokens per sequence (half prompt, half completion)',
      positiveInt('--tokens'),
      128,
    );
}

export function registerBench(program: Command): void {
  const bench = program.command('bench').description('benchmarks (results go in BENCHMARKS.md)');
  bench
    .command('engine')
    .description('MatMul ceiling, reference training step vs the ceiling, build time, TensorFlow.js peer')
    .option('--json', 'print one JSON line instead of a table')
    .option('--steps <n>', 'timed training steps per side', positiveInt('--steps'), 3)
    .option('--ceiling-size <n>', 'matrix size of the MatMul ceiling', positiveInt('--ceiling-size'), 2048)
    .option('--no-peer', 'skip the peer (TensorFlow.js on cpu, the cpu provider on another)')
    .option(...providerOption)
    .option(
      '--model <name>',
      'stack (the reference), smollm-135m (its shape, sequence 512, batch 8) or tiny',
      'stack',
    )
    .option(
      '--update-layout <layout>',
      "the optimizer update: 'flat' (one vector) or 'per-tensor' (default: flat on a GPU provider, per-tensor on cpu)",
      updateLayoutArg,
    )
    .option('--compare-layouts', 'also time the step with the other update layout, same provider')
    .action(
      async (opts: {
        json?: boolean;
        steps: number;
        ceilingSize: number;
        peer: boolean;
        provider?: Provider;
        model: string;
        updateLayout?: UpdateLayout;
        compareLayouts?: boolean;
      }) => {
        // Loaded on demand: the benchmark pulls in model code the other commands do not need.
        const { runEngineBench } = await import('../../../bench/engine.js');
        const r = await runEngineBench({
          steps: opts.steps,
          ceilingSize: opts.ceilingSize,
          peer: opts.peer,
          provider: opts.provider ?? envProvider(),
          model: opts.model,
          ...(opts.updateLayout ? { updateLayout: opts.updateLayout } : {}),
          compareLayouts: opts.compareLayouts ?? false,
          log: progress,
        });
        if (printedAsJson(opts.json, r)) return;
        const f = (x: number, d = 1) => x.toFixed(d);
        const rows: [string, string][] = [
          [
            'machine',
            `${r.machine.cpus}× ${r.machine.cpu_model}, ${r.machine.memory_gb} GiB, ORT threads ${r.machine.ort_threads}`,
          ],
          ['ceiling (MatMul)', `${f(r.ceiling_gflops)} GFLOP/s`],
          ...(r.ceiling_gflops_float16 !== undefined
            ? ([['ceiling (MatMul, float16)', `${f(r.ceiling_gflops_float16)} GFLOP/s`]] as [
                string,
                string,
              ][])
            : []),
          ['per run, per node', `${r.dispatch.run_us.toFixed(0)} µs, ${r.dispatch.node_us.toFixed(1)} µs`],
          [
            'train step',
            `${f(r.train_step_ms, 0)} ms, ${f(r.train_flops / 1e9, 2)} GFLOP counted (${f((100 * r.train_matmul_flops) / r.train_flops)}% MatMul)`,
          ],
          ['update layout', r.update_layout],
          ...(r.layouts
            ? Object.entries(r.layouts).map(([name, l]): [string, string] => [
                `  ${name}`,
                `${f(l.step_ms, 0)} ms a step, ${l.nodes} ONNX nodes`,
              ])
            : []),
          ['folded (ONNX Loop of 4)', `${f(r.folded_step_ms, 0)} ms per step`],
          ['achieved', `${f(r.train_gflops)} GFLOP/s = ${f(100 * r.fraction_of_ceiling)}% of the ceiling`],
          [
            'build + compile + session',
            `${f(r.build_ms.total, 0)} ms (${f(r.build_ms.trace, 0)} + ${f(r.build_ms.compile, 0)} + ${f(r.build_ms.session, 0)})`,
          ],
          ['peak RSS', `${f(r.peak_rss_mb, 0)} MB`],
          ['loss', `${f(r.loss_first, 4)} → ${f(r.loss_last, 4)}`],
          [
            'provider',
            `${r.provider}${r.adapter ? ` (${r.adapter.vendor} ${r.adapter.device})` : ''}, model ${r.model}`,
          ],
          [
            'bytes per step',
            `${r.moved_per_step.toDevice} to the device, ${r.moved_per_step.toHost} back; state on the device ${r.device_state.first.bytes} → ${r.device_state.last.bytes} bytes`,
          ],
        ];
        if (r.cpu_step_ms !== undefined)
          rows.push([
            'cpu provider step',
            `${f(r.cpu_step_ms, 0)} ms: ${r.provider} is ${f(r.speedup_vs_cpu ?? 0, 2)}× its speed`,
          ]);
        if (r.tfjs && r.tfjs_speedup !== undefined) {
          rows.push(
            [
              'TensorFlow.js step',
              `${f(r.tfjs.step_ms, 0)} ms (${r.tfjs.backend}, simd ${r.tfjs.simd}, threads ${r.tfjs.multithread}), peak RSS ${f(r.tfjs.peak_rss_mb, 0)} MB`,
            ],
            ['tfjs_speedup', `${f(r.tfjs_speedup, 2)}×`],
          );
        }
        for (const [k, v] of rows) process.stdout.write(`${k.padEnd(26)} ${v}\n`);
      },
    );

  bench
    .command('decode')
    .description(
      'batched sampling tokens/s at several batch sizes vs transformers.js; judge pairs/s; load time',
    )
    .option('--json', 'print one JSON line instead of a table')
    .option(
      '--batches <list>',
      'comma-separated batch sizes',
      (raw) => raw.split(',').map((b) => positiveInt('--batches')(b)),
      [1, 16, 128],
    )
    .option('--prompt-len <n>', 'prompt tokens per row', positiveInt('--prompt-len'), 16)
    .option('--new-tokens <n>', 'generated tokens per row', positiveInt('--new-tokens'), 64)
    .option('--no-peer', 'skip the peer (transformers.js on cpu, the cpu provider on another)')
    .option('--greedy', 'greedy decoding instead of sampling at temperature 1')
    .option('--repeats <n>', 'timed runs per figure (median reported)', positiveInt('--repeats'), 3)
    .option(...providerOption)
    .option(...dtypeOption("what duel's decoder computes in"))
    .option('--models <list>', 'comma-separated: testbed, 25M, smollm-135m', (raw) => raw.split(','), [
      'testbed',
      '25M',
    ])
    .option('--one-run', 'decode each generation in one run (an ONNX Loop; the default on cuda)')
    .option('--stepwise', 'decode one step a run (the default but on cuda)')
    .action(
      async (o: {
        oneRun?: boolean;
        stepwise?: boolean;
        json?: boolean;
        batches: number[];
        promptLen: number;
        newTokens: number;
        peer: boolean;
        greedy?: boolean;
        repeats: number;
        provider?: Provider;
        dtype?: ComputeDtype;
        models: string[];
      }) => {
        if (o.oneRun && o.stepwise)
          throw DuelError.invalidArgument([
            { field: '--one-run', description: 'give --one-run or --stepwise, not both' },
          ]);
        const { runDecodeBench } = await import('../../../bench/decode.js');
        const r = await runDecodeBench({
          batches: o.batches,
          promptLen: o.promptLen,
          newTokens: o.newTokens,
          peer: o.peer,
          greedy: o.greedy ?? false,
          repeats: o.repeats,
          provider: o.provider ?? envProvider(),
          dtype: o.dtype ?? envDtype(),
          models: o.models,
          ...(o.oneRun ? { oneRun: true } : o.stepwise ? { oneRun: false } : {}),
          log: progress,
        });
        if (printedAsJson(o.json, r)) return;
        const onDevice = r.provider !== 'cpu';
        process.stdout.write(
          onDevice
            ? `model   params   batch   ${r.provider} tok/s   cpu provider tok/s   speedup   bytes/token in, out\n`
            : 'model   params   batch   duel tok/s   transformers.js tok/s   speedup\n',
        );
        for (const row of r.rows) {
          const peer = (onDevice ? row.cpu_tokens_per_s : row.transformersjs_tokens_per_s)?.toFixed(0) ?? '-';
          const x = onDevice ? row.speedup_vs_cpu : row.speedup;
          const speedup = x ? `${x.toFixed(2)}×` : '-';
          const moved = row.moved_per_token
            ? `   ${row.moved_per_token.toDevice.toFixed(0)}, ${row.moved_per_token.toHost.toFixed(0)}`
            : '';
          process.stdout.write(
            `${row.model.padEnd(7)} ${(row.params / 1e6).toFixed(2).padStart(6)}M ${String(row.batch).padStart(6)} ${row.duel_tokens_per_s.toFixed(0).padStart(12)} ${peer.padStart(onDevice ? 20 : 23)} ${speedup.padStart(9)}${moved}\n`,
          );
        }
        process.stdout.write(
          `judge pairs/s ${r.judge_pairs_per_s.toFixed(0)}; load ms ${JSON.stringify(r.load_ms)}\n`,
        );
      },
    );

  bench
    .command('placement')
    .description(
      'which provider ran each node of the training step, decoding step, judge and log-probs graphs (ONNX Runtime profiles)',
    )
    .option('--json', 'print one JSON line instead of a table')
    .option(...providerOption)
    .option('--model <name>', 'stack, smollm-135m or tiny: the model every graph is built for', 'stack')
    .option('--runs <n>', 'profiled runs of each graph', positiveInt('--runs'), 3)
    .action(async (o: { json?: boolean; provider?: Provider; model: string; runs: number }) => {
      const { runPlacementBench } = await import('../../../bench/placement.js');
      const r = await runPlacementBench({
        provider: o.provider ?? envProvider(),
        model: o.model,
        runs: o.runs,
        log: progress,
      });
      if (printedAsJson(o.json, r)) return;
      for (const g of r.graphs) {
        const nodes = Object.entries(g.nodes)
          .map(
            ([p, n]) =>
              `${n} on ${p.replace('ExecutionProvider', '')} (${(g.ms_per_run[p] ?? 0).toFixed(1)} ms/run)`,
          )
          .join(', ');
        const cpu = Object.entries(g.cpu_ops)
          .map(([op, n]) => `${op}×${n}`)
          .join(' ');
        process.stdout.write(
          `${g.graph}\n  nodes: ${nodes}\n  on the CPU: ${cpu || 'nothing'} (float outputs: ${g.cpu_float_nodes.join(', ') || 'none'})\n  copies: ${g.copies.nodes} nodes, ${g.copies.bytes_per_run.toFixed(0)} bytes per run\n${g.timeline ? `  a run ${g.timeline.run_ms.toFixed(1)} ms, the device busy ${g.timeline.device_busy_ms.toFixed(1)} ms of it\n` : ''}`,
        );
      }
    });

  bench
    .command('weight-sync')
    .description(
      "through the local suite: from the trainer's answer to the first Sample answered with the round's weights, full checkpoint vs LoRA adapters",
    )
    .option('--json', 'print one JSON line instead of a table')
    .option('--models <list>', 'comma-separated: testbed, 25M, smollm-135m', (raw) => raw.split(','), ['25M'])
    .option(
      '--ranks <list>',
      'LoRA ranks (every linear layer)',
      (raw) => raw.split(',').map((r) => positiveInt('--ranks')(r)),
      [8, 16, 64],
    )
    .option('--rounds <n>', 'timed rounds per case', positiveInt('--rounds'), 5)
    .action(async (o: { json?: boolean; models: string[]; ranks: number[]; rounds: number }) => {
      const { runWeightSyncBench } = await import('../../../bench/weight-sync.js');
      const r = await runWeightSyncBench({
        models: o.models,
        ranks: o.ranks,
        rounds: o.rounds,
        log: progress,
      });
      if (printedAsJson(o.json, r)) return;
      process.stdout.write('model    weights   p50 ms   p95 ms   checkpoint KB   trainer RSS MB\n');
      for (const row of r.rows)
        process.stdout.write(
          `${row.model.padEnd(8)} ${String(row.weights === 'full' ? 'full' : `r${row.weights}`).padEnd(8)} ${row.p50_ms.toFixed(0).padStart(7)} ${row.p95_ms.toFixed(0).padStart(8)} ${(row.checkpoint_bytes / 1024).toFixed(0).padStart(15)} ${row.trainer_rss_mb.toFixed(0).padStart(16)}\n`,
        );
    });

  stepOptions(bench.command('sessions'))
    .description(
      'training sessions over gRPC against duel serve trainer: per-step overhead on the 21.9M model, small calls/s, resume after SIGKILL, memory per session',
    )
    .option('--steps <n>', 'timed steps per measurement', positiveInt('--steps'), 10)
    .option(
      '--lora-sessions <list>',
      'LoRA session counts to measure the trainer at',
      (raw) => raw.split(',').map((r) => positiveInt('--lora-sessions')(r)),
      [1, 4, 8],
    )
    .action(
      async (o: {
        json?: boolean;
        model: string;
        steps: number;
        batch: number;
        tokens: number;
        loraSessions: number[];
      }) => {
        const { runSessionsBench } = await import('../../../bench/sessions.js');
        const r = await runSessionsBench({ ...o, log: progress });
        if (printedAsJson(o.json, r)) return;
        const mb = (x: number) => `${x.toFixed(0)} MB`;
        process.stdout.write(
          [
            `model ${r.model} (${(r.params / 1e6).toFixed(1)}M), ${r.batch}×${r.tokens} tokens per step, journal on ${r.journal}`,
            `step in process ${r.in_process_step_ms.toFixed(0)} ms (${r.in_process_arena_step_ms.toFixed(0)} ms with the memory arena), over gRPC ${r.grpc_step_ms.toFixed(0)} ms: overhead ${(100 * r.overhead_fraction).toFixed(1)}%`,
            `a snapshot every 10 steps: ${r.snapshot_every_10_step_ms.toFixed(0)} ms per step (one snapshot ≈ ${r.snapshot_ms.toFixed(0)} ms, ${(r.snapshot_bytes / 2 ** 20).toFixed(0)} MiB)`,
            `small calls: ${r.small_calls_per_s.toFixed(0)} ForwardBackward/s`,
            `Sample right after a step / again: full weights ${r.sample.full.after_step_ms.toFixed(0)} / ${r.sample.full.again_ms.toFixed(0)} ms, LoRA r8 ${r.sample.lora.after_step_ms.toFixed(0)} / ${r.sample.lora.again_ms.toFixed(0)} ms`,
            `resume after SIGKILL: restart ${r.restart_ms.toFixed(0)} ms, first call ${r.resumed_first_call_ms.toFixed(0)} ms (restore ${r.restore_log_ms} ms, ${r.replayed_calls} calls replayed)`,
            ...r.memory.map((m) => `trainer with ${m.sessions} ${m.kind} sessions: ${mb(m.trainer_rss_mb)}`),
            `per session: LoRA r8 ${mb(r.lora_mb_per_session)} (${mb(r.lora_arena_mb_per_session)} with the arena), full weights ${mb(r.full_mb_per_session)}; LoRA sessions that fit in ${mb(r.machine_mb)}: ${r.lora_sessions_fit}`,
          ].join('\n') + '\n',
        );
      },
    );

  stepOptions(bench.command('snapshots'))
    .description(
      "what a training session's snapshot every 10 steps costs its steps: p50/p95 with none, written in the background (default) and before the step's answer (the peer)",
    )
    .option('--steps <n>', 'timed steps per variant (a snapshot every 10th)', positiveInt('--steps'), 40)
    .action(async (o: { json?: boolean; model: string; steps: number; batch: number; tokens: number }) => {
      const { runSnapshotsBench } = await import('../../../bench/snapshots.js');
      const r = await runSnapshotsBench({ ...o, log: progress });
      if (printedAsJson(o.json, r)) return;
      process.stdout.write(
        [
          `model ${r.model} (${(r.params / 1e6).toFixed(1)}M), ${r.batch}×${r.tokens} tokens per step, ${r.steps} steps, state ${(r.state_bytes / 2 ** 20).toFixed(0)} MiB, journal on ${r.journal}`,
          'snapshots        p50 ms   p95 ms   slowest ms   p95 / none',
          ...r.variants.map(
            (v) =>
              `${v.variant.padEnd(14)} ${v.p50_ms.toFixed(0).padStart(8)} ${v.p95_ms.toFixed(0).padStart(8)} ${v.max_ms.toFixed(0).padStart(12)} ${v.p95_vs_none.toFixed(2).padStart(12)}`,
          ),
        ].join('\n') + '\n',
      );
    });

  bench
    .command('session-probe')
    .description(
      "training sessions in this process, stage by stage: a full-weight session's memory, LoRA sessions on one base, a snapshot's parts",
    )
    .option('--json', 'print one JSON line instead of the progress lines')
    .option('--model <name>', 'testbed, 25M (21.9M parameters) or smollm-135m', '25M')
    .option('--lora-sessions <n>', 'LoRA sessions on one base', positiveInt('--lora-sessions'), 4)
    .option('--arena', "keep ONNX Runtime's memory arena (the trainer's sessions turn it off)")
    .option('--no-in-place', 'steps write a fresh state each time instead of into its buffers (the peer)')
    .option('--round-only', "only a LoRA run's training round, in this fresh process: what its peak adds")
    .option(
      '--gradient-checkpointing',
      "the sessions recompute each layer's activations in the backward pass",
    )
    .action(
      async (o: {
        json?: boolean;
        model: string;
        loraSessions: number;
        arena?: boolean;
        inPlace: boolean;
        roundOnly?: boolean;
        gradientCheckpointing?: boolean;
      }) => {
        const { runRoundProbe, runSessionProbe } = await import('../../../bench/session-probe.js');
        const r = o.roundOnly
          ? await runRoundProbe({ model: o.model, log: progress })
          : await runSessionProbe({
              ...o,
              arena: o.arena ?? false,
              checkpointing: o.gradientCheckpointing ?? false,
              log: progress,
            });
        printedAsJson(o.json, r);
      },
    );

  bench
    .command('largest')
    .description(
      'the largest Llama-shaped model this machine trains, with every weight and with LoRA r16 (AdamW, a session step in a child process per size, stopped before memory runs out)',
    )
    .option('--json', 'print one JSON line instead of the progress lines')
    .option('--models <list>', 'sizes to try, smallest first (comma-separated)', (raw) => raw.split(','), [
      'smollm-135m',
      'smollm-360m',
      'qwen2.5-0.5b',
      'tinyllama-1.1b',
      'smollm-1.7b',
    ])
    .option('--modes <list>', 'full, lora (comma-separated)', (raw) => raw.split(','), ['full', 'lora'])
    .option('--batch <n>', 'sequences per step', positiveInt('--batch'), 8)
    .option('--seq <n>', 'tokens per sequence (half prompt, half completion)', positiveInt('--seq'), 512)
    .option(
      '--reserve <mb>',
      'stop a size when the machine has less than this available',
      positiveInt('--reserve'),
      1024,
    )
    .option(
      '--gradient-checkpointing',
      "recompute each layer's activations in the backward pass instead of keeping them",
    )
    .option('--only <model>', 'run one size in this process and print its figures (what each child does)')
    .action(
      async (o: {
        json?: boolean;
        models: string[];
        modes: string[];
        batch: number;
        seq: number;
        reserve: number;
        gradientCheckpointing?: boolean;
        only?: string;
      }) => {
        const { runLargest, trainOnce } = await import('../../../bench/largest.js');
        const modes = o.modes.map((m) => {
          if (m !== 'full' && m !== 'lora')
            throw DuelError.invalidArgument([
              { field: '--modes', description: `'${m}' is not full or lora` },
            ]);
          return m;
        });
        if (o.only) {
          const checkpointing = o.gradientCheckpointing ?? false;
          const r = await trainOnce(o.only, modes[0]!, o.batch, o.seq, checkpointing);
          process.stdout.write(`${JSON.stringify(r)}\n`);
          return;
        }
        const r = await runLargest({
          ...o,
          modes,
          reserveMb: o.reserve,
          checkpointing: o.gradientCheckpointing ?? false,
          log: progress,
        });
        if (!printedAsJson(o.json, r))
          process.stdout.write(
            `largest with every weight: ${r.largest_full ?? 'none'}; with LoRA r16: ${r.largest_lora ?? 'none'} (${r.memory_gb.toFixed(0)} GiB, ${r.batch} × ${r.seq}${r.gradient_checkpointing ? ', gradient checkpointing' : ''})\n`,
          );
      },
    );

  bench
    .command('judge')
    .description(
      "scorer throughput on real shapes, random weights: PairRM pairs/s and a Qwen3-0.6B-shaped reward model's rewards/s, beside the MatMul ceiling",
    )
    .option('--json', 'print one JSON line instead of a table')
    .option(...providerOption)
    .option('--judges <list>', 'pairrm, reward (comma-separated)', (raw) => raw.split(','), [
      'pairrm',
      'reward',
    ])
    .option('--k <n>', 'candidates per comparison', positiveInt('--k'), 8)
    .option('--source <n>', 'prompt tokens', positiveInt('--source'), 512)
    .option('--candidate <n>', 'tokens per candidate', positiveInt('--candidate'), 256)
    .option('--reps <n>', 'timed comparisons', positiveInt('--reps'), 3)
    .option('--small', 'small shapes of both judges instead of the real ones (a software adapter, the tests)')
    .option(...dtypeOption('what both judges compute in'))
    .action(
      async (o: {
        json?: boolean;
        provider?: Provider;
        dtype?: ComputeDtype;
        small?: boolean;
        judges: string[];
        k: number;
        source: number;
        candidate: number;
        reps: number;
      }) => {
        const bad = o.judges.filter((j) => j !== 'pairrm' && j !== 'reward');
        if (bad.length)
          throw DuelError.invalidArgument([
            { field: '--judges', description: `unknown judge(s) ${bad.join(', ')} (pairrm, reward)` },
          ]);
        const { runJudgeBench, SMALL_JUDGE_SHAPES } = await import('../../../bench/judge.js');
        const r = await runJudgeBench({
          ...o,
          ...(o.small ? { shapes: SMALL_JUDGE_SHAPES } : {}),
          judges: o.judges as ('pairrm' | 'reward')[],
          provider: o.provider ?? envProvider(),
          dtype: o.dtype ?? envDtype(),
          log: progress,
        });
        if (printedAsJson(o.json, r)) return;
        process.stdout.write(`ceiling ${r.ceiling_gflops.toFixed(1)} GFLOP/s (${r.provider})\n`);
        for (const m of r.rows)
          process.stdout.write(
            `${m.judge} (${m.dtype}), ${(m.parameters / 1e6).toFixed(0)}M: K=${m.k}, ${m.passes} passes of ${m.tokens_per_pass} tokens in ${m.compare_ms.toFixed(0)} ms = ${m.passes_per_s.toFixed(2)} ${m.judge === 'pairrm' ? 'pairs' : 'rewards'}/s; ${m.gflop_per_pass.toFixed(0)} GFLOP a pass, ${m.achieved_gflops.toFixed(1)} GFLOP/s = ${(100 * m.fraction_of_ceiling).toFixed(0)}% of the ceiling\n`,
          );
      },
    );

  bench
    .command('train')
    .description(
      'training tokens/s of every round recipe, end to end and in the step loop, and the cost per token relative to SFT',
    )
    .option('--json', 'print one JSON line instead of a table')
    .option('--steps <n>', 'steps per recipe', positiveInt('--steps'), 4)
    .action(async (o: { json?: boolean; steps: number }) => {
      const { runTrainBench } = await import('../../../bench/train.js');
      const r = await runTrainBench({
        steps: o.steps,
        records: 32,
        k: 4,
        length: 16,
        log: progress,
      });
      if (printedAsJson(o.json, r)) return;
      process.stdout.write('model    algo         tokens/s   loop tokens/s   cost vs SFT\n');
      for (const row of r.rows)
        process.stdout.write(
          `${row.model.padEnd(8)} ${row.algo.padEnd(12)} ${row.tokens_per_s.toFixed(0).padStart(8)} ${row.loop_tokens_per_s.toFixed(0).padStart(15)} ${row.cost_vs_sft.toFixed(2).padStart(12)}×\n`,
        );
    });

  bench
    .command('cold-start')
    .description(
      'ms from spawning each service to SERVING, without and with a model, beside a bare node process',
    )
    .option('--json', 'print one JSON line instead of a table')
    .option('--repeats <n>', 'starts per case (the median is reported)', positiveInt('--repeats'), 5)
    .action(async (o: { json?: boolean; repeats: number }) => {
      const { runColdStartBench } = await import('../../../bench/cold-start.js');
      const r = await runColdStartBench({ repeats: o.repeats, log: progress });
      if (printedAsJson(o.json, r)) return;
      for (const row of r.rows)
        process.stdout.write(`${row.name.padEnd(38)} ${row.ms.toFixed(0).padStart(6)} ms\n`);
    });

  bench
    .command('load')
    .description(
      'the sampler and scorer under many concurrent clients: latency, refusals when full, memory over a soak',
    )
    .option('--json', 'print one JSON line instead of a table')
    .option('--streams <n>', 'concurrent clients in the steady and soak phases', positiveInt('--streams'), 32)
    .option('--seconds <n>', 'length of each steady phase', positiveInt('--seconds'), 20)
    .option('--overload-streams <n>', 'clients in the overload phase', positiveInt('--overload-streams'), 160)
    .option('--overload-seconds <n>', 'length of each overload phase', positiveInt('--overload-seconds'), 15)
    .option('--soak-seconds <n>', 'length of the soak', positiveInt('--soak-seconds'), 120)
    .option('--prompts <n>', 'prompts per call', positiveInt('--prompts'), 4)
    .option('--k <n>', 'completions (Sample) or candidates (Compare) per prompt', positiveInt('--k'), 6)
    .action(async (o: Omit<import('../../../bench/load.js').LoadOptions, 'log'> & { json?: boolean }) => {
      const { runLoadBench } = await import('../../../bench/load.js');
      const r = await runLoadBench({ ...o, log: progress });
      if (printedAsJson(o.json, r)) return;
      const f = (x: number | undefined, d = 0) =>
        x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(d);
      const line = (
        name: string,
        l: import('../../../bench/load.js').Latencies,
        mem?: import('../../../bench/load.js').Memory,
      ) =>
        `${name.padEnd(26)} ${f(l.per_s, 1).padStart(7)}/s  p50 ${f(l.p50_ms).padStart(6)} ms  p99 ${f(l.p99_ms).padStart(6)} ms  ${Object.entries(
          l.codes,
        )
          .map(([c, n]) => `${c} ${n}`)
          .join(
            ', ',
          )}${l.refused_p99_ms !== undefined ? `  refusals p50 ${f(l.refused_p50_ms, 1)} / p99 ${f(l.refused_p99_ms, 1)} ms` : ''}${mem ? `  RSS idle ${f(mem.idle_mib)} max ${f(mem.max_mib)} end ${f(mem.end_mib)} MiB, slope ${f(mem.slope_mib_per_min, 2)} MiB/min` : ''}\n`;
      process.stdout.write(line('Sample, 1 client', r.single.sample));
      process.stdout.write(line('Compare, 1 client', r.single.compare));
      process.stdout.write(line(`Sample, ${r.streams} streams`, r.steady.sample));
      process.stdout.write(line(`Compare, ${r.streams} streams`, r.steady.compare));
      process.stdout.write(
        line(`Sample, ${r.overload.streams} streams`, r.overload.sample, r.overload.sample),
      );
      process.stdout.write(
        line(`Compare, ${r.overload.streams} streams`, r.overload.compare, r.overload.compare),
      );
      process.stdout.write(line(`Sample, soak ${r.soak.seconds} s`, r.soak.sample, r.soak.sample));
      process.stdout.write(line(`Compare, soak ${r.soak.seconds} s`, r.soak.compare, r.soak.compare));
    });

  bench
    .command('artifacts')
    .description('checkpoint publish and load throughput, file:// and nats://, beside copy + sha256')
    .option('--json', 'print one JSON line instead of a table')
    .option('--sizes <mib>', 'checkpoint sizes in MiB, comma-separated', '16,256')
    .option('--repeats <n>', 'puts and gets per case (the median is reported)', positiveInt('--repeats'), 3)
    .action(async (o: { json?: boolean; sizes: string; repeats: number }) => {
      const sizesMib = o.sizes.split(',').map(Number);
      if (sizesMib.some((m) => !Number.isInteger(m) || m < 1))
        throw DuelError.invalidArgument([
          { field: '--sizes', description: `'${o.sizes}' is not a list of whole MiB` },
        ]);
      const { runArtifactBench } = await import('../../../bench/artifacts.js');
      const r = await runArtifactBench({
        sizesMib,
        repeats: o.repeats,
        log: progress,
      });
      if (printedAsJson(o.json, r)) return;
      for (const row of r.rows)
        process.stdout.write(
          `${`${row.mib} MiB ${row.store}`.padEnd(30)} publish ${row.publish_mib_s.toFixed(0).padStart(5)} MiB/s   load ${row.load_mib_s.toFixed(0).padStart(5)} MiB/s\n`,
        );
    });

  bench
    .command('overlap')
    .description(
      "wall time a round saves with max_staleness 1 against 0: the demo's run twice, sampler/scorer and trainer pinned to their own CPUs",
    )
    .option('--json', 'print one JSON line instead of a table')
    .option('--rounds <n>', 'rounds of each run', positiveInt('--rounds'), 10)
    .option('--seed <n>', 'seed', positiveInt('--seed'), 1)
    .option('--worker-cpus <list>', 'CPUs of the sampler, scorer and orchestrator (taskset -c)', '0')
    .option('--trainer-cpus <list>', 'CPUs of the trainer (taskset -c)', '1')
    .option('--out <dir>', 'where both runs and their models go', 'runs/bench-overlap')
    .option('--judge <kind>', "the run's judge: learned (a real judge's scoring cost) or oracle", 'learned')
    .option(
      '--set <key=value>',
      "the demo's settings (run.epochs 4 unless set: training about as long as sampling and scoring)",
      (v: string, acc: string[]) => [...acc, v],
      [] as string[],
    )
    .action(
      async (o: {
        json?: boolean;
        rounds: number;
        seed: number;
        workerCpus: string;
        trainerCpus: string;
        out: string;
        set: string[];
        judge: string;
      }) => {
        if (o.judge !== 'learned' && o.judge !== 'oracle')
          throw DuelError.invalidArgument([
            { field: '--judge', description: `must be learned or oracle, got '${o.judge}'` },
          ]);
        const { runOverlapBench } = await import('../../../bench/overlap.js');
        const { parseSets } = await import('../../algorithms/recipes/index.js');
        const runtime = cliRuntime({ workers: 1, intraOpThreads: 1 });
        try {
          const r = await runOverlapBench({
            ...o,
            judge: o.judge,
            sets: parseSets(o.set),
            runtime,
            log: progress,
          });
          if (printedAsJson(o.json, r)) return;
          for (const x of r.rows)
            process.stdout.write(
              `max_staleness ${x.max_staleness}: ${x.round_seconds.toFixed(1)} s a round (training ${x.train_seconds.toFixed(1)} s, evaluation ${x.evaluate_seconds.toFixed(1)} s${x.sample_score_seconds === null ? '' : `, the rest ${x.sample_score_seconds.toFixed(1)} s`}); last round: win rate vs π_ref ${x.last_win_rate_vs_ref.toFixed(3)}, exploitability ${x.last_exploitability.toFixed(3)}\n`,
            );
          process.stdout.write(`overlap saves ${(100 * r.saved).toFixed(0)}% of a round's wall time\n`);
        } finally {
          await runtime.close();
        }
      },
    );
  bench
    .command('nats-cluster')
    .description(
      "three clustered nats-servers with three copies of everything against one: a publish's and a compare-and-set's latency, the pause when a leader dies, and the demo's round",
    )
    .option('--json', 'print one JSON line instead of a table')
    .option('--ops <n>', 'operations of each kind timed', positiveInt('--ops'), 300)
    .option('--trials <n>', 'leaders killed', positiveInt('--trials'), 3)
    .option('--rounds <n>', "rounds of the demo's run on each", positiveInt('--rounds'), 3)
    .option('--out <dir>', 'where both runs and their models go', 'runs/bench-nats-cluster')
    .action(async (o: { json?: boolean; ops: number; trials: number; rounds: number; out: string }) => {
      const { runNatsClusterBench } = await import('../../../bench/nats-cluster.js');
      const runtime = cliRuntime({ workers: 1, intraOpThreads: 1 });
      try {
        const r = await runNatsClusterBench({ ...o, runtime, log: progress });
        if (printedAsJson(o.json, r)) return;
        const ms = (x: { p50: number; p95: number }) => `${x.p50.toFixed(2)} / ${x.p95.toFixed(2)} ms`;
        process.stdout.write(
          [
            `publish (p50 / p95): R1 ${ms(r.op_ms.publish.r1)}, R3 ${ms(r.op_ms.publish.r3)}`,
            `compare-and-set (p50 / p95): R1 ${ms(r.op_ms.cas.r1)}, R3 ${ms(r.op_ms.cas.r3)}`,
            `a leader killed: writes paused ${r.failover_pause_ms.map((x) => x.toFixed(0)).join(', ')} ms`,
            `a round: R1 ${r.round_seconds.r1.toFixed(2)} s, R3 ${r.round_seconds.r3.toFixed(2)} s`,
          ].join('\n') + '\n',
        );
      } finally {
        await runtime.close();
      }
    });
  bench
    .command('round-overhead')
    .description('share of each self-play round that is not model work, through the local suite')
    .option('--json', 'print one JSON line instead of a table')
    .option('--rounds <n>', 'rounds of the run', positiveInt('--rounds'), 3)
    .option('--prompts <n>', 'prompts per round', positiveInt('--prompts'), 64)
    .option('--tracing', 'every service exports its spans (OTLP/HTTP) to a local sink')
    .action(async (o: { json?: boolean; rounds: number; prompts: number; tracing?: boolean }) => {
      const { runRoundOverheadBench } = await import('../../../bench/round-overhead.js');
      const r = await runRoundOverheadBench({ ...o, log: progress });
      if (printedAsJson(o.json, r)) return;
      for (const x of [...r.rounds, r.total]) {
        process.stdout.write(
          `${(x.round ? `round ${x.round}` : 'all rounds').padEnd(12)} ${x.round_ms.toFixed(0).padStart(7)} ms, model work ${x.model_ms.toFixed(0).padStart(7)} ms, overhead ${x.overhead_ms.toFixed(0).padStart(5)} ms = ${(100 * x.overhead_fraction).toFixed(1)}%\n`,
        );
        for (const g of x.gaps)
          process.stdout.write(
            `${''.padEnd(14)}${g.ms.toFixed(0).padStart(5)} ms between ${g.after} and ${g.before}\n`,
          );
      }
      process.stdout.write(
        `NATS per stage hand-off: event publish ${r.nats.event_ms.toFixed(1)} ms, run-record CAS ${r.nats.cas_ms.toFixed(1)} ms (medians of 20)\n`,
      );
      if (o.tracing) process.stdout.write(`tracing on: ${r.spans_exported} spans exported\n`);
    });
}
