/**
 * The Kubernetes manifests, checked offline: every overlay renders and validates against the
 * Kubernetes, KEDA and Knative schemas; the rendered YAML on disk is what the code renders (CI
 * fails on stale files: run `npm run deploy:render`); misspelt fields fail to compile and wrong
 * values fail validation; and the invariants a cluster relies on hold in every overlay.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { alertRules, dashboard, MONITORING_DEFAULTS } from '../../deploy/k8s/monitoring.js';
import { OVERLAYS } from '../../deploy/k8s/overlays.js';
import { renderedDir, renderOverlay } from '../../deploy/k8s/render.js';
import { packageRoot } from '../../src/platform/paths.js';

type Obj = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string> };
  // biome-ignore lint/suspicious/noExplicitAny: parsed YAML of many kinds; each test reads its spec by path
  spec?: any;
};
type Container = {
  name: string;
  image: string;
  ports?: { containerPort: number; name?: string }[];
  resources?: { limits?: Record<string, string> };
  env?: { name: string; value?: string; valueFrom?: unknown }[];
  [probe: string]: unknown;
};

const objectsOf = (overlay: string): Obj[] =>
  [...renderOverlay(overlay)]
    .filter(([f]) => f !== 'kustomization.yaml')
    .map(([, text]) => parse(text) as Obj);

function podTemplates(
  objs: Obj[],
): { owner: Obj; labels: Record<string, string>; spec: { containers: Container[] } }[] {
  return objs.flatMap((o) => {
    if (['Deployment', 'StatefulSet'].includes(o.kind))
      return [{ owner: o, labels: o.spec.template.metadata.labels, spec: o.spec.template.spec }];
    if (o.apiVersion.startsWith('serving.knative.dev'))
      return [{ owner: o, labels: o.spec.template.metadata.labels, spec: o.spec.template.spec }];
    return [];
  });
}

describe.each(Object.keys(OVERLAYS))('overlay %s', (overlay) => {
  const objs = objectsOf(overlay);

  it('is rendered on disk exactly as the code renders it', () => {
    const dir = renderedDir(packageRoot(), overlay);
    const rendered = renderOverlay(overlay);
    expect(readdirSync(dir).sort(), 'run `npm run deploy:render`').toEqual([...rendered.keys()].sort());
    for (const [file, text] of rendered)
      expect(readFileSync(join(dir, file), 'utf8'), `${file} is stale: run npm run deploy:render`).toBe(text);
  });

  it('pins every image to a version, never latest', () => {
    for (const { spec } of podTemplates(objs))
      for (const c of spec.containers) expect(c.image).toMatch(/^[^:]+:(?!latest$)[\w][\w.-]*$/);
  });

  it('probes integer ports that the container exposes', () => {
    for (const { owner, spec } of podTemplates(objs))
      for (const c of spec.containers) {
        const exposed = (c.ports ?? []).map((p) => p.containerPort);
        for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
          const p = c[probe] as { grpc?: { port: unknown }; httpGet?: { port: unknown } } | undefined;
          if (!p) continue;
          const port = p.grpc?.port ?? p.httpGet?.port;
          expect(Number.isInteger(port), `${owner.metadata.name} ${probe}`).toBe(true);
          expect(exposed, `${owner.metadata.name} ${probe} port ${port}`).toContain(port);
        }
      }
  });

  it('gives every GPU workload nvidia.com/gpu limits, and only GPU workloads', () => {
    for (const { owner, spec } of podTemplates(objs))
      for (const c of spec.containers) {
        const env = new Map((c.env ?? []).map((e) => [e.name, e.value]));
        const gpu = env.get('DUEL_RUNTIME_PROVIDER') === 'webgpu';
        expect(c.resources?.limits?.['nvidia.com/gpu'] !== undefined, `${owner.metadata.name}`).toBe(gpu);
        if (gpu) {
          expect(c.image).toMatch(/-gpu$/);
          // Without `graphics` the container runtime mounts no Vulkan driver and Dawn finds no adapter.
          expect(env.get('NVIDIA_DRIVER_CAPABILITIES')?.split(',')).toContain('graphics');
        }
      }
  });

  it('selects existing pods with every core Service, and targets ports those pods name', () => {
    const pods = podTemplates(objs);
    for (const s of objs.filter((o) => o.kind === 'Service' && o.apiVersion === 'v1')) {
      const sel = s.spec.selector as Record<string, string>;
      const matching = pods.filter((p) => Object.entries(sel).every(([k, v]) => p.labels[k] === v));
      expect(matching.length, `Service ${s.metadata.name} selects no pods`).toBeGreaterThan(0);
      for (const port of s.spec.ports as { targetPort: string | number }[])
        for (const p of matching)
          expect(
            p.spec.containers.some((c) =>
              (c.ports ?? []).some(
                (cp) => cp.name === port.targetPort || cp.containerPort === port.targetPort,
              ),
            ),
            `Service ${s.metadata.name} port ${port.targetPort}`,
          ).toBe(true);
    }
  });

  it('runs every container as non-root with a read-only root filesystem and no privilege escalation', () => {
    for (const { spec } of podTemplates(objs))
      for (const c of spec.containers)
        expect(c.securityContext).toMatchObject({
          runAsNonRoot: true,
          readOnlyRootFilesystem: true,
          allowPrivilegeEscalation: false,
        });
  });

  it('lets only the orchestrator reach the workers', () => {
    const np = objs.find((o) => o.metadata.name === 'duel-workers-from-orchestrator')!;
    const grpcRule = np.spec.ingress.find((r: { ports: { port: number }[] }) => r.ports[0]!.port === 50051);
    expect(grpcRule.from).toEqual([
      {
        podSelector: {
          matchLabels: { 'app.kubernetes.io/name': 'duel', 'app.kubernetes.io/component': 'orchestrator' },
        },
      },
    ]);
    expect(objs.find((o) => o.metadata.name === 'duel-default-deny')!.spec).toEqual({
      podSelector: {},
      policyTypes: ['Ingress'],
    });
  });

  it('lets only pods labelled as training clients, and the other trainers, reach the TrainingService', () => {
    const np = objs.find((o) => o.metadata.name === 'duel-trainer-from-training-clients')!;
    expect(np.spec.podSelector.matchLabels).toMatchObject({ 'app.kubernetes.io/component': 'trainer' });
    expect(np.spec.ingress).toEqual([
      {
        from: [
          { podSelector: { matchLabels: { 'duel.dev/training-client': 'true' } } },
          {
            podSelector: {
              matchLabels: { 'app.kubernetes.io/name': 'duel', 'app.kubernetes.io/component': 'trainer' },
            },
          },
        ],
        ports: [{ port: 50051 }],
      },
    ]);
  });

  it('runs trainer replicas that name themselves by pod and advertise their pod IP', () => {
    const trainer = podTemplates(objs).find((p) => p.owner.metadata.name === 'duel-trainer')!;
    const env = trainer.spec.containers[0]!.env ?? [];
    expect(env.find((e) => e.name === 'DUEL_TRAINER_ID')?.valueFrom).toEqual({
      fieldRef: { fieldPath: 'metadata.name' },
    });
    // $(POD_IP) expands only from a variable defined before it.
    const ip = env.findIndex((e) => e.name === 'POD_IP');
    const advertise = env.findIndex((e) => e.name === 'DUEL_TRAINER_ADVERTISE');
    expect(ip).toBeGreaterThanOrEqual(0);
    expect(advertise).toBeGreaterThan(ip);
    expect(env[advertise]!.value).toBe('$(POD_IP):50051');
    // dev runs one of each; keda scales the trainer from zero.
    expect(trainer.owner.spec.replicas).toBe({ dev: 1, keda: 0 }[overlay] ?? 2);
  });
});

describe('manifest validation', () => {
  it('refuses a value of the wrong type and a missing required field', () => {
    const d = new Deployment({
      metadata: { name: 'x' },
      spec: {
        selector: { matchLabels: { a: 'b' } },
        template: {
          metadata: { labels: { a: 'b' } },
          // @ts-expect-error containerPort must be a number: the type checker catches it first.
          spec: { containers: [{ name: 'c', image: 'i:1', ports: [{ containerPort: 'grpc' }] }] },
        },
      },
    });
    expect(() => d.validate()).toThrow(/containerPort must be integer/);
    const noSelector = { metadata: { name: 'y' }, spec: { template: {} } } as never;
    expect(() => new Deployment(noSelector).validate()).toThrow(/data\/spec must have required property/);
  });

  it('refuses a misspelt field at compile time', () => {
    const container = {
      name: 'c',
      image: 'i:1',
      // The schemas allow unknown keys, so typed objects are what catch misspellings: tsc fails
      // if this line stops being an error.
      // @ts-expect-error imagePullPolcy is not a Container field
      imagePullPolcy: 'Always',
    } satisfies import('kubernetes-models/v1/Container').IContainer;
    expect(container.name).toBe('c');
  });

  it('scales the trainer from zero on the wake consumer in the keda overlay', () => {
    const keda = objectsOf('keda');
    const so = keda.find((o) => o.kind === 'ScaledObject' && o.metadata.name === 'duel-trainer')!;
    expect(so.spec).toMatchObject({ minReplicaCount: 0, scaleTargetRef: { name: 'duel-trainer' } });
    expect(so.spec.triggers[0]).toMatchObject({
      type: 'nats-jetstream',
      metadata: { stream: 'DUEL_RUNS', consumer: 'duel-trainer-wake' },
    });
    const envOf = (name: string) =>
      (podTemplates(keda).find((p) => p.owner.metadata.name === name)!.spec.containers[0]!.env ?? []).map(
        (e) => `${e.name}=${e.value}`,
      );
    expect(envOf('duel-trainer')).toContain('DUEL_TRAINER_WAKE_CONSUMER=duel-trainer-wake');
    expect(envOf('duel-orchestrator')).toContain('DUEL_ORCHESTRATOR_TRAINER_WAKE_CONSUMER=duel-trainer-wake');
  });

  it('scales the orchestrator from zero on the control consumer, and holds it up while it drives runs', () => {
    const so = objectsOf('keda').find(
      (o) => o.kind === 'ScaledObject' && o.metadata.name === 'duel-orchestrator',
    )!;
    expect(so.spec).toMatchObject({ minReplicaCount: 0, scaleTargetRef: { name: 'duel-orchestrator' } });
    expect(so.spec.triggers[0]).toMatchObject({
      type: 'nats-jetstream',
      metadata: { stream: 'DUEL_CTL', consumer: 'duel-orchestrator', activationLagThreshold: '0' },
    });
    expect(so.spec.triggers[1]).toMatchObject({ type: 'prometheus', metadata: { activationThreshold: '0' } });
    expect(so.spec.triggers[1].metadata.query).toMatch(/duel_orchestrator_runs_driving/);
  });

  it('runs orchestrator replicas, each named in run leases by its pod name', () => {
    const gpu = objectsOf('gpu');
    const d = gpu.find((o) => o.kind === 'Deployment' && o.metadata.name === 'duel-orchestrator')!;
    expect(d.spec.replicas).toBe(2);
    const env = podTemplates(gpu).find((p) => p.owner.metadata.name === 'duel-orchestrator')!.spec
      .containers[0]!.env as unknown[];
    expect(env.find((e) => (e as { name: string }).name === 'DUEL_ORCHESTRATOR_ID')).toEqual({
      name: 'DUEL_ORCHESTRATOR_ID',
      valueFrom: { fieldRef: { fieldPath: 'metadata.name' } },
    });
  });
});

describe('monitoring: scrape config, dashboard and alerts', () => {
  const objs = objectsOf('monitoring');

  it('is rendered on disk exactly as the code renders it, and validates', () => {
    const rendered = renderOverlay('monitoring');
    const dir = renderedDir(packageRoot(), 'monitoring');
    expect(readdirSync(dir).sort()).toEqual([...rendered.keys()].sort());
    for (const [file, text] of rendered) expect(readFileSync(join(dir, file), 'utf8')).toBe(text);
  });

  it('scrapes the metrics port every service pod exposes', () => {
    const pm = objs.find((o) => o.kind === 'PodMonitor')!;
    expect(pm.spec.podMetricsEndpoints).toEqual([{ port: 'metrics', path: '/metrics', interval: '15s' }]);
    const selected = (l: Record<string, string>) =>
      Object.entries(pm.spec.selector.matchLabels).every(([k, v]) => l[k] === v) &&
      pm.spec.selector.matchExpressions.every((e: { key: string; values: string[] }) =>
        e.values.includes(l[e.key]!),
      );
    const pods = podTemplates(objectsOf('gpu'));
    const scraped = pods.filter((p) => selected(p.labels));
    expect(scraped.map((p) => p.owner.metadata.name).sort()).toEqual([
      'duel-orchestrator',
      'duel-sampler',
      'duel-scorer',
      'duel-trainer',
    ]);
    for (const p of scraped) expect(p.spec.containers[0]!.ports!.map((x) => x.name)).toContain('metrics');
    // NATS has no duel metrics port: not selected.
    expect(pods.filter((p) => !selected(p.labels)).map((p) => p.owner.metadata.name)).toEqual(['duel-nats']);
  });

  it('ships the dashboard to Grafana’s sidecar, and every panel has a query and a unique id', () => {
    const cm = objs.find((o) => o.kind === 'ConfigMap')!;
    expect(cm.metadata.labels!.grafana_dashboard).toBe('1');
    const d = JSON.parse((cm as unknown as { data: Record<string, string> }).data['duel.json']!);
    expect(d).toEqual(dashboard());
    const ids = d.panels.map((p: { id: number }) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of d.panels) expect(p.targets.length).toBeGreaterThan(0);
  });

  it('alerts on a stalled run and on load shedding, with the configured windows', () => {
    const rules = alertRules({ stallAfter: '45m', sheddingFor: '3m' });
    expect(rules.map((r) => r.alert)).toEqual(['DuelRunStalled', 'DuelShedding']);
    expect(rules[0]!.expr).toContain('increase(duel_orchestrator_stage_seconds_count[45m])');
    expect(rules[1]!.for).toBe('3m');
    const rendered = objs.find((o) => o.kind === 'PrometheusRule')!;
    expect(rendered.spec.groups[0].rules).toEqual(alertRules(MONITORING_DEFAULTS));
  });
});
