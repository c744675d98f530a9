/**
 * The Kubernetes base: every object duel needs on a cluster, CPU-only, as typed kubernetes-models
 * objects. Manifests are TypeScript rather than kustomize YAML because this project's machines have
 * no kustomize or kubectl to build with, and because a typed object makes a misspelt field a
 * compile error before it is a schema error; overlays (overlays.ts) are functions over this list,
 * and render.ts writes each overlay to plain YAML under deploy/rendered/<overlay>/.
 *
 * Shape: NATS with JetStream as a three-server cluster (routes between the StatefulSet's pods,
 * every stream and bucket in three copies), each server on a persistent volume; sampler and scorer Deployments behind headless
 * Services (the orchestrator resolves every pod: `dns:///`); two orchestrator replicas sharing the
 * control consumer, each run driven by the one holding its lease (named by its pod name); two
 * trainers sharing the training sessions (each session served by its owner, calls reaching the
 * other replica forwarded over the pod network, a dead owner's sessions taken over);
 * checkpoints in the NATS object store, so no shared volume; probes are native gRPC health checks.
 */

import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { StatefulSet } from 'kubernetes-models/apps/v1/StatefulSet';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import type { IContainer } from 'kubernetes-models/v1/Container';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import type { IPodSpec } from 'kubernetes-models/v1/PodSpec';
import { Secret } from 'kubernetes-models/v1/Secret';
import type { ISecurityContext } from 'kubernetes-models/v1/SecurityContext';
import { Service } from 'kubernetes-models/v1/Service';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';

export const NAMESPACE = 'duel';
export const VERSION = '0.1.0';
const IMAGE = `ghcr.io/duel-ml/duel:${VERSION}`;
const NATS_IMAGE = 'nats:2.10.22-alpine';
export const GRPC_PORT = 50051;
const METRICS_PORT = 9464;
const NATS_PORT = 4222;
/** NATS servers routed into one JetStream cluster: the loss of one leaves a quorum. */
const NATS_SERVERS = 3;
const NATS_ROUTE_PORT = 6222;
export const NATS_MONITOR_PORT = 8222;
/** Where the nats:// store caches verified downloads: a scratch volume, never the image. */
const ARTIFACT_CACHE = '/var/lib/duel/artifacts';
export const WORKERS = ['sampler', 'scorer', 'trainer'] as const;
export const ROLES = [...WORKERS, 'orchestrator'] as const;
export type Role = (typeof ROLES)[number];

/** Every object the overlays may change; `kind` narrows the union. */
export type KubeObject =
  | Namespace
  | ConfigMap
  | Secret
  | Service
  | ServiceAccount
  | Deployment
  | StatefulSet
  | NetworkPolicy
  | PodDisruptionBudget
  | { apiVersion: string; kind: string; metadata?: { name?: string; namespace?: string }; validate(): void };

export const labels = (component: string) => ({
  'app.kubernetes.io/name': 'duel',
  'app.kubernetes.io/component': component,
  'app.kubernetes.io/version': VERSION,
});
const selector = (component: string) => ({
  'app.kubernetes.io/name': 'duel',
  'app.kubernetes.io/component': component,
});
const svc = (role: string) => `duel-${role}.${NAMESPACE}.svc.cluster.local`;

/** The DUEL_* settings of a role, exactly as `duel serve <role>` reads them. */
export function roleEnv(role: Role): Record<string, string> {
  const common = {
    DUEL_HOST: '0.0.0.0',
    DUEL_PORT: String(GRPC_PORT),
    DUEL_METRICS_PORT: String(METRICS_PORT),
    DUEL_LOG_LEVEL: 'info',
    DUEL_ARTIFACTS_STORE: 'nats',
    DUEL_ARTIFACTS_ROOT: ARTIFACT_CACHE,
    DUEL_GRPC_SHUTDOWN_GRACE_MS: '20000',
    // Three copies of every stream, KV bucket and object store, one per NATS server.
    DUEL_NATS_REPLICAS: String(NATS_SERVERS),
  };
  if (role !== 'orchestrator') return common;
  return {
    ...common,
    DUEL_ORCHESTRATOR_SAMPLERS: `dns:///${svc('sampler')}:${GRPC_PORT}`,
    DUEL_ORCHESTRATOR_SCORERS: `dns:///${svc('scorer')}:${GRPC_PORT}`,
    DUEL_ORCHESTRATOR_TRAINER: `${svc('trainer')}:${GRPC_PORT}`,
    // Workers that scale from zero take a while to come up: the stage waits this long for one.
    DUEL_ORCHESTRATOR_MAX_WAIT_MS: '600000',
    // Any replica serves any run's live page, so answers name the Service, not the pod; an
    // ingress in front of it is named here instead (docs/DEPLOY.md "The live run page").
    DUEL_ORCHESTRATOR_PAGE_URL: `http://${svc('orchestrator')}:${METRICS_PORT}`,
  };
}

const securityContext: ISecurityContext = {
  runAsNonRoot: true,
  runAsUser: 10001,
  runAsGroup: 10001,
  allowPrivilegeEscalation: false,
  readOnlyRootFilesystem: true,
  capabilities: { drop: ['ALL'] },
  seccompProfile: { type: 'RuntimeDefault' },
};

/** The container of a role: env from the role's settings, NATS URL from the Secret, gRPC probes. */
function roleContainer(role: Role): IContainer {
  return {
    name: role,
    image: IMAGE,
    imagePullPolicy: 'IfNotPresent',
    // The image's entrypoint is `duel serve`; the argument is the role.
    args: [role],
    env: [
      ...Object.entries(roleEnv(role)).map(([name, value]) => ({ name, value })),
      { name: 'DUEL_NATS_URL', valueFrom: { secretKeyRef: { name: 'duel-nats', key: 'url' } } },
      // A run's lease names its driver by pod name: a container restarted in place resumes its
      // runs at once, a new pod takes them over when the lease runs out.
      ...(role === 'orchestrator'
        ? [{ name: 'DUEL_ORCHESTRATOR_ID', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } }]
        : []),
      // A session's owner is a trainer pod by name; the other replicas forward its calls to the
      // pod's IP (services/trainer/forwarding.ts).
      ...(role === 'trainer'
        ? [
            { name: 'DUEL_TRAINER_ID', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
            { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
            { name: 'DUEL_TRAINER_ADVERTISE', value: `$(POD_IP):${GRPC_PORT}` },
          ]
        : []),
    ],
    ports: [
      { name: 'grpc', containerPort: GRPC_PORT, protocol: 'TCP' },
      { name: 'metrics', containerPort: METRICS_PORT, protocol: 'TCP' },
    ],
    // SERVING only once preloaded models are verified and loaded: give that up to 10 minutes.
    startupProbe: { grpc: { port: GRPC_PORT }, periodSeconds: 5, failureThreshold: 120 },
    readinessProbe: { grpc: { port: GRPC_PORT }, periodSeconds: 5, failureThreshold: 2 },
    livenessProbe: { grpc: { port: GRPC_PORT }, periodSeconds: 20, timeoutSeconds: 5, failureThreshold: 3 },
    resources:
      role === 'orchestrator'
        ? { requests: { cpu: '100m', memory: '256Mi' }, limits: { memory: '1Gi' } }
        : { requests: { cpu: '1', memory: '2Gi' }, limits: { memory: '8Gi' } },
    securityContext,
    volumeMounts: [
      { name: 'artifact-cache', mountPath: ARTIFACT_CACHE },
      { name: 'tmp', mountPath: '/tmp' },
    ],
  };
}

function podSpec(role: Role): IPodSpec {
  const specs = role === 'orchestrator';
  return {
    serviceAccountName: 'duel',
    automountServiceAccountToken: false,
    // Longer than the service's own drain grace (DUEL_GRPC_SHUTDOWN_GRACE_MS) so it exits by itself.
    terminationGracePeriodSeconds: 30,
    securityContext: { runAsNonRoot: true, fsGroup: 10001, seccompProfile: { type: 'RuntimeDefault' } },
    containers: [
      specs
        ? {
            ...roleContainer(role),
            volumeMounts: [
              ...roleContainer(role).volumeMounts!,
              { name: 'run-specs', mountPath: '/etc/duel/run-specs', readOnly: true },
            ],
          }
        : roleContainer(role),
    ],
    volumes: [
      { name: 'artifact-cache', emptyDir: { sizeLimit: '20Gi' } },
      { name: 'tmp', emptyDir: { sizeLimit: '2Gi' } },
      // The orchestrator reads prompt sets named in run specs from its own filesystem.
      ...(specs ? [{ name: 'run-specs', configMap: { name: 'duel-run-specs' } }] : []),
    ],
  };
}

function roleDeployment(role: Role): Deployment {
  return new Deployment({
    metadata: { name: `duel-${role}`, namespace: NAMESPACE, labels: labels(role) },
    spec: {
      replicas: role === 'scorer' ? 1 : 2,
      selector: { matchLabels: selector(role) },
      // A replaced trainer deletes its lease as it drains: the other takes its sessions at once.
      strategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } },
      template: { metadata: { labels: labels(role) }, spec: podSpec(role) },
    },
  });
}

function roleService(role: Role): Service {
  const headless = role === 'sampler' || role === 'scorer';
  return new Service({
    metadata: { name: `duel-${role}`, namespace: NAMESPACE, labels: labels(role) },
    spec: {
      ...(headless ? { clusterIP: 'None' } : {}),
      selector: selector(role),
      ports: [
        { name: 'grpc', port: GRPC_PORT, targetPort: 'grpc', appProtocol: 'grpc' },
        { name: 'metrics', port: METRICS_PORT, targetPort: 'metrics' },
      ],
    },
  });
}

function nats(): KubeObject[] {
  // Each server routes to every member by its stable name under the headless Service.
  const routes = Array.from(
    { length: NATS_SERVERS },
    (_, i) => `nats://duel-nats-${i}.duel-nats-cluster.${NAMESPACE}.svc.cluster.local:${NATS_ROUTE_PORT}`,
  ).join(',');
  return [
    new StatefulSet({
      metadata: { name: 'duel-nats', namespace: NAMESPACE, labels: labels('nats') },
      spec: {
        serviceName: 'duel-nats-cluster',
        replicas: NATS_SERVERS,
        // Members start together: a JetStream cluster elects its meta leader once a quorum is up.
        podManagementPolicy: 'Parallel',
        selector: { matchLabels: selector('nats') },
        template: {
          metadata: { labels: labels('nats') },
          spec: {
            automountServiceAccountToken: false,
            securityContext: {
              runAsNonRoot: true,
              runAsUser: 1000,
              fsGroup: 1000,
              seccompProfile: { type: 'RuntimeDefault' },
            },
            containers: [
              {
                name: 'nats',
                image: NATS_IMAGE,
                args: [
                  '--jetstream',
                  '--store_dir',
                  '/data',
                  '--http_port',
                  String(NATS_MONITOR_PORT),
                  // JetStream in a cluster needs a server name: the pod's, stable across restarts.
                  '--server_name',
                  '$(POD_NAME)',
                  '--cluster_name',
                  'duel',
                  '--cluster',
                  `nats://0.0.0.0:${NATS_ROUTE_PORT}`,
                  '--routes',
                  routes,
                ],
                env: [{ name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } }],
                ports: [
                  { name: 'client', containerPort: NATS_PORT },
                  { name: 'cluster', containerPort: NATS_ROUTE_PORT },
                  { name: 'monitor', containerPort: NATS_MONITOR_PORT },
                ],
                readinessProbe: {
                  httpGet: { path: '/healthz?js-enabled-only=true', port: NATS_MONITOR_PORT },
                  periodSeconds: 5,
                },
                livenessProbe: { httpGet: { path: '/healthz', port: NATS_MONITOR_PORT }, periodSeconds: 20 },
                resources: { requests: { cpu: '250m', memory: '512Mi' }, limits: { memory: '2Gi' } },
                securityContext,
                volumeMounts: [{ name: 'data', mountPath: '/data' }],
              },
            ],
          },
        },
        volumeClaimTemplates: [
          {
            metadata: { name: 'data' },
            spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '50Gi' } } },
          },
        ],
      },
    }),
    new Service({
      metadata: { name: 'duel-nats', namespace: NAMESPACE, labels: labels('nats') },
      spec: {
        selector: selector('nats'),
        ports: [
          { name: 'client', port: NATS_PORT, targetPort: 'client' },
          { name: 'monitor', port: NATS_MONITOR_PORT, targetPort: 'monitor' },
        ],
      },
    }),
    // The members' stable names (duel-nats-0.duel-nats-cluster…), published before they are ready:
    // a server must reach the others' routes to become ready at all.
    new Service({
      metadata: { name: 'duel-nats-cluster', namespace: NAMESPACE, labels: labels('nats') },
      spec: {
        clusterIP: 'None',
        publishNotReadyAddresses: true,
        selector: selector('nats'),
        ports: [{ name: 'cluster', port: NATS_ROUTE_PORT, targetPort: 'cluster' }],
      },
    }),
    new PodDisruptionBudget({
      metadata: { name: 'duel-nats', namespace: NAMESPACE, labels: labels('nats') },
      // Two of three keep the quorum every replicated stream and bucket needs: one may go at a time.
      spec: { maxUnavailable: 1, selector: { matchLabels: selector('nats') } },
    }),
  ];
}

/**
 * Ingress rules: nothing reaches a pod unless a rule says so. Only the orchestrator calls the
 * workers; every duel pod (and KEDA, for the lag it scales on) reaches NATS; clients in the
 * namespace reach the orchestrator; pods labelled `duel.dev/training-client: "true"` reach the
 * trainer (its TrainingService), and trainers reach each other (forwarded session calls); Prometheus (namespace label `duel.dev/scrape: "true"`)
 * reaches every metrics port; the orchestrator's, which also serves the live run pages, is open
 * to the namespace and to an ingress controller's namespace labelled `duel.dev/run-pages: "true"`.
 */
function networkPolicies(): NetworkPolicy[] {
  const meta = (name: string) => ({ name, namespace: NAMESPACE, labels: labels('network') });
  const scrape = { namespaceSelector: { matchLabels: { 'duel.dev/scrape': 'true' } } };
  return [
    new NetworkPolicy({
      metadata: meta('duel-default-deny'),
      spec: { podSelector: {}, policyTypes: ['Ingress'] },
    }),
    new NetworkPolicy({
      metadata: meta('duel-workers-from-orchestrator'),
      spec: {
        podSelector: {
          matchExpressions: [{ key: 'app.kubernetes.io/component', operator: 'In', values: [...WORKERS] }],
        },
        policyTypes: ['Ingress'],
        ingress: [
          {
            from: [{ podSelector: { matchLabels: selector('orchestrator') } }],
            ports: [{ port: GRPC_PORT }],
          },
          { from: [scrape], ports: [{ port: METRICS_PORT }] },
        ],
      },
    }),
    // A training loop's client (TrainingService) is a pod the user labels, not anything in the
    // namespace; trainers forward a session's calls to the replica that owns it.
    new NetworkPolicy({
      metadata: meta('duel-trainer-from-training-clients'),
      spec: {
        podSelector: { matchLabels: selector('trainer') },
        policyTypes: ['Ingress'],
        ingress: [
          {
            from: [
              { podSelector: { matchLabels: { 'duel.dev/training-client': 'true' } } },
              { podSelector: { matchLabels: selector('trainer') } },
            ],
            ports: [{ port: GRPC_PORT }],
          },
        ],
      },
    }),
    new NetworkPolicy({
      metadata: meta('duel-orchestrator-from-clients'),
      spec: {
        podSelector: { matchLabels: selector('orchestrator') },
        policyTypes: ['Ingress'],
        ingress: [
          { from: [{ podSelector: {} }], ports: [{ port: GRPC_PORT }] },
          // The live run pages share the metrics port: clients in the namespace, Prometheus, and
          // an ingress controller whose namespace is labelled `duel.dev/run-pages: "true"`.
          {
            from: [
              { podSelector: {} },
              scrape,
              { namespaceSelector: { matchLabels: { 'duel.dev/run-pages': 'true' } } },
            ],
            ports: [{ port: METRICS_PORT }],
          },
        ],
      },
    }),
    new NetworkPolicy({
      metadata: meta('duel-nats-from-all'),
      spec: {
        podSelector: { matchLabels: selector('nats') },
        policyTypes: ['Ingress'],
        ingress: [
          { ports: [{ port: NATS_PORT }, { port: NATS_MONITOR_PORT }] },
          // Cluster routes: only between the NATS servers themselves.
          { from: [{ podSelector: { matchLabels: selector('nats') } }], ports: [{ port: NATS_ROUTE_PORT }] },
        ],
      },
    }),
  ];
}

/** An example run spec: models by reference into the nats:// store (`duel artifacts put`). */
const EXAMPLE_SPEC = `name: letters-sppo
algorithm: sppo
hyperparameters: { eta: 8, k: 6 }
policy: { uri: nats://duel_artifacts/models/ref, sha256: REPLACE_WITH_DIGEST_FROM_duel_artifacts_put }
judge: { uri: nats://duel_artifacts/models/judge, sha256: REPLACE_WITH_DIGEST_FROM_duel_artifacts_put }
prompts: /etc/duel/run-specs/prompts.jsonl
rounds: 16
sampling: { max_new_tokens: 9, temperature: 1 }
optimizer: { name: adamw, learning_rate: 1.0e-3, epochs: 3, batch_size: 16 }
`;

/** The testbed's prompt format (want-marker, target letters): a few lines to start from. */
const EXAMPLE_PROMPTS = `${[
  [2, 5, 6, 4],
  [2, 5, 9, 12, 4],
  [2, 5, 7, 15, 20, 4],
]
  .map((ids) => JSON.stringify({ prompt_ids: ids }))
  .join('\n')}\n`;

export function base(): KubeObject[] {
  return [
    new Namespace({ metadata: { name: NAMESPACE, labels: { 'app.kubernetes.io/name': 'duel' } } }),
    new ServiceAccount({
      metadata: { name: 'duel', namespace: NAMESPACE, labels: labels('serviceaccount') },
      automountServiceAccountToken: false,
    }),
    new Secret({
      metadata: { name: 'duel-nats', namespace: NAMESPACE, labels: labels('nats') },
      type: 'Opaque',
      // Replace with credentials (nats://user:password@host:4222) when NATS requires them.
      stringData: { url: `nats://duel-nats.${NAMESPACE}.svc.cluster.local:${NATS_PORT}` },
    }),
    new ConfigMap({
      metadata: { name: 'duel-run-specs', namespace: NAMESPACE, labels: labels('run-specs') },
      data: { 'letters-sppo.yaml': EXAMPLE_SPEC, 'prompts.jsonl': EXAMPLE_PROMPTS },
    }),
    ...nats(),
    ...ROLES.flatMap((role) => [roleDeployment(role), roleService(role)]),
    ...(['sampler', 'scorer', 'trainer'] as const).map(
      (role) =>
        new PodDisruptionBudget({
          metadata: { name: `duel-${role}`, namespace: NAMESPACE, labels: labels(role) },
          spec: { minAvailable: 1, selector: { matchLabels: selector(role) } },
        }),
    ),
    ...networkPolicies(),
  ];
}
