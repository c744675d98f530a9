/**
 * What an operator watches duel with, for the Prometheus Operator and Grafana: a PodMonitor that
 * scrapes every duel pod's metrics port, a Grafana dashboard (a ConfigMap that Grafana's
 * dashboard sidecar picks up by its `grafana_dashboard` label) and alerts (a PrometheusRule).
 * Every query names only metrics the services export; test/e2e/monitoring.test.ts scrapes running
 * services and checks each name in `monitoredMetrics()`.
 */
import { PodMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor';
import { PrometheusRule } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { type KubeObject, labels, NAMESPACE, ROLES } from './base.js';

export interface MonitoringSettings {
  /** A run is stalled when no stage of any round completed for this long (a PromQL duration). */
  stallAfter: string;
  /** Load shedding alerts when calls were refused with RESOURCE_EXHAUSTED for this long. */
  sheddingFor: string;
}

export const MONITORING_DEFAULTS: MonitoringSettings = { stallAfter: '30m', sheddingFor: '10m' };

const RATE = '$__rate_interval';
/** The dashboard's data source variable, in Grafana's syntax. */
// biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana interpolates it, not JavaScript
const DATASOURCE = '${datasource}';

/** A time series panel of Grafana's dashboard schema. */
function panel(
  id: number,
  title: string,
  unit: string,
  targets: { expr: string; legend: string }[],
  at: { x: number; y: number },
) {
  return {
    id,
    type: 'timeseries',
    title,
    datasource: { type: 'prometheus', uid: DATASOURCE },
    gridPos: { h: 8, w: 12, ...at },
    fieldConfig: { defaults: { unit }, overrides: [] },
    options: { legend: { displayMode: 'list', placement: 'bottom' }, tooltip: { mode: 'multi' } },
    targets: targets.map((t, i) => ({
      refId: String.fromCharCode(65 + i),
      expr: t.expr,
      legendFormat: t.legend,
    })),
  };
}

/** The mean of a histogram over the rate window, by `by`. */
const meanOf = (metric: string, by: string) =>
  `sum by (${by}) (rate(${metric}_sum[${RATE}])) / sum by (${by}) (rate(${metric}_count[${RATE}]))`;
const quantileOf = (q: number, metric: string, filter = '') =>
  `histogram_quantile(${q}, sum by (le) (rate(${metric}_bucket${filter}[${RATE}])))`;

/** The dashboard's panels, two to a row. */
function panels() {
  const rows: [string, string, { expr: string; legend: string }[]][] = [
    [
      'Stage duration (mean per round)',
      's',
      [{ expr: meanOf('duel_orchestrator_stage_seconds', 'stage'), legend: '{{stage}}' }],
    ],
    [
      'Round duration and rounds completed',
      's',
      [
        {
          expr: `sum(rate(duel_orchestrator_round_seconds_sum[${RATE}])) / sum(rate(duel_orchestrator_round_seconds_count[${RATE}]))`,
          legend: 'mean round',
        },
        { expr: 'sum(duel_orchestrator_runs_driving)', legend: 'runs driving' },
      ],
    ],
    [
      'Samples, tokens and pairs per second',
      'ops',
      [
        { expr: `sum(rate(duel_sampler_completions_total[${RATE}]))`, legend: 'completions/s' },
        { expr: `sum(rate(duel_sampler_tokens_generated_total[${RATE}]))`, legend: 'tokens/s' },
        { expr: `sum(rate(duel_scorer_pairs_judged_total[${RATE}]))`, legend: 'pairs judged/s' },
      ],
    ],
    [
      'Trainer step time',
      's',
      [
        { expr: quantileOf(0.5, 'duel_trainer_step_seconds'), legend: 'round step p50' },
        { expr: quantileOf(0.95, 'duel_trainer_step_seconds'), legend: 'round step p95' },
        {
          expr: quantileOf(0.95, 'duel_grpc_server_handling_seconds', '{method=~".*/OptimStep"}'),
          legend: 'session OptimStep p95',
        },
      ],
    ],
    [
      'Admission: calls running and queued',
      'short',
      [
        { expr: 'sum by (service, pod) (duel_admission_active)', legend: '{{pod}} running' },
        { expr: 'sum by (service, pod) (duel_admission_queued)', legend: '{{pod}} queued' },
      ],
    ],
    [
      'Calls shed (RESOURCE_EXHAUSTED) per second',
      'ops',
      [
        {
          expr: `sum by (service, method) (rate(duel_grpc_server_handled_total{code="RESOURCE_EXHAUSTED"}[${RATE}]))`,
          legend: '{{service}} {{method}}',
        },
      ],
    ],
    [
      'Open training sessions',
      'short',
      [{ expr: 'sum by (pod) (duel_trainer_sessions_open)', legend: '{{pod}}' }],
    ],
    [
      'Process memory (resident)',
      'bytes',
      [{ expr: 'sum by (service, pod) (duel_process_resident_memory_bytes)', legend: '{{pod}}' }],
    ],
  ];
  return rows.map(([title, unit, targets], i) =>
    panel(i + 1, title, unit, targets, { x: (i % 2) * 12, y: Math.floor(i / 2) * 8 }),
  );
}

/** The Grafana dashboard (schema 39), with a Prometheus data source chosen by a variable. */
export function dashboard() {
  return {
    uid: 'duel-overview',
    title: 'duel: self-play runs',
    tags: ['duel'],
    timezone: 'browser',
    schemaVersion: 39,
    version: 1,
    refresh: '30s',
    time: { from: 'now-3h', to: 'now' },
    templating: {
      list: [{ name: 'datasource', type: 'datasource', query: 'prometheus', label: 'Prometheus' }],
    },
    panels: panels(),
  };
}

export function alertRules(s: MonitoringSettings = MONITORING_DEFAULTS) {
  return [
    {
      alert: 'DuelRunStalled',
      // Runs are being driven, and no stage of any round completed in the window: each stage
      // observes duel_orchestrator_stage_seconds when it ends.
      expr: `max by (pod) (duel_orchestrator_runs_driving) > 0 unless on (pod) sum by (pod) (increase(duel_orchestrator_stage_seconds_count[${s.stallAfter}])) > 0`,
      for: '5m',
      labels: { severity: 'warning' },
      annotations: {
        summary: `{{ $labels.pod }} drives runs whose rounds completed no stage in ${s.stallAfter}`,
        description:
          'A sampler, scorer or trainer is down, stuck or too slow for its shard deadline: `duel runs list` shows the run, `duel runs watch ID` its events.',
      },
    },
    {
      alert: 'DuelShedding',
      expr: `sum by (service, pod) (rate(duel_grpc_server_handled_total{code="RESOURCE_EXHAUSTED"}[5m])) > 0`,
      for: s.sheddingFor,
      labels: { severity: 'warning' },
      annotations: {
        summary: `{{ $labels.pod }} ({{ $labels.service }}) has refused calls as busy for ${s.sheddingFor}`,
        description:
          'Its admission queue is full: add replicas (or GPUs), or raise admission.max_active where memory allows.',
      },
    },
  ];
}

/** Every `duel_*` series name the dashboard and the alerts query (histograms with their suffixes). */
export function monitoredMetrics(): string[] {
  const exprs = [
    ...dashboard().panels.flatMap((p) => p.targets.map((t) => t.expr)),
    ...alertRules().map((r) => r.expr),
  ];
  return [...new Set(exprs.flatMap((e) => e.match(/\bduel_[a-z_]+/g) ?? []))].sort();
}

export function monitoring(s: MonitoringSettings = MONITORING_DEFAULTS): KubeObject[] {
  const meta = (name: string, extra: Record<string, string> = {}) => ({
    name,
    namespace: NAMESPACE,
    labels: { ...labels('monitoring'), ...extra },
  });
  return [
    new PodMonitor({
      metadata: meta('duel'),
      spec: {
        selector: {
          matchLabels: { 'app.kubernetes.io/name': 'duel' },
          matchExpressions: [{ key: 'app.kubernetes.io/component', operator: 'In', values: [...ROLES] }],
        },
        podMetricsEndpoints: [{ port: 'metrics', path: '/metrics', interval: '15s' }],
      },
    }),
    new ConfigMap({
      metadata: meta('duel-dashboard', { grafana_dashboard: '1' }),
      data: { 'duel.json': `${JSON.stringify(dashboard(), null, 2)}\n` },
    }),
    new PrometheusRule({
      metadata: meta('duel-alerts'),
      spec: { groups: [{ name: 'duel', rules: alertRules(s) }] },
    }),
  ];
}
