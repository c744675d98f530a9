/**
 * Overlays: functions from the base's objects to an environment's. `dev` is a CPU-only laptop
 * cluster (kind, k3d, minikube); `gpu` puts the sampler, scorer and trainer on NVIDIA nodes with the
 * GPU image and the webgpu execution provider (Dawn over the driver's Vulkan: the GPU path duel
 * tests; the cuda image stays for installs that can fetch ONNX Runtime's CUDA provider, untested);
 * `keda` and `knative` build on `gpu` and add event-driven and request-driven scale-to-zero.
 */

import { ScaledObject } from '@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject';
import { Service as KnativeService } from '@kubernetes-models/knative/serving.knative.dev/v1/Service';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { StatefulSet } from 'kubernetes-models/apps/v1/StatefulSet';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import type { IContainer } from 'kubernetes-models/v1/Container';
import {
  base,
  GRPC_PORT,
  type KubeObject,
  labels,
  NAMESPACE,
  NATS_MONITOR_PORT,
  type Role,
  VERSION,
  WORKERS,
} from './base.js';

const WAKE_CONSUMER = 'duel-trainer-wake';
/** The control stream and its shared consumer (orchestrator.control.*'s defaults). */
const CONTROL_STREAM = 'DUEL_CTL';
const CONTROL_CONSUMER = 'duel-orchestrator';
/** Where KEDA asks Prometheus (the Prometheus Operator's default service); change it to yours. */
const PROMETHEUS = 'http://prometheus-operated.monitoring.svc:9090';

const GPU_IMAGE = `ghcr.io/duel-ml/duel:${VERSION}-gpu`;

const isRole = (o: KubeObject, roles: readonly Role[]): o is Deployment =>
  o instanceof Deployment && roles.some((r) => o.metadata?.name === `duel-${r}`);

function mapContainers(d: Deployment, f: (c: IContainer) => IContainer): void {
  const spec = d.spec!.template.spec!;
  spec.containers = spec.containers.map(f);
}

function dev(): KubeObject[] {
  return base()
    .filter((o) => !(o instanceof PodDisruptionBudget))
    .map((o) => {
      if (o instanceof Deployment) {
        o.spec!.replicas = 1;
        mapContainers(o, (c) => ({
          ...c,
          // A locally built image loaded into the cluster (kind load docker-image ...).
          imagePullPolicy: 'Never',
          resources: { requests: { cpu: '100m', memory: '256Mi' }, limits: { memory: '2Gi' } },
        }));
      }
      if (o instanceof StatefulSet)
        o.spec!.volumeClaimTemplates![0]!.spec!.resources!.requests = { storage: '2Gi' };
      return o;
    });
}

function gpu(): KubeObject[] {
  return base().map((o) => {
    if (isRole(o, WORKERS)) {
      const spec = o.spec!.template.spec!;
      spec.nodeSelector = { 'nvidia.com/gpu.present': 'true' };
      spec.tolerations = [{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }];
      mapContainers(o, (c) => ({
        ...c,
        image: GPU_IMAGE,
        env: [
          ...(c.env ?? []),
          { name: 'DUEL_RUNTIME_PROVIDER', value: 'webgpu' },
          // The NVIDIA container runtime mounts the driver's Vulkan ICD only with `graphics`.
          { name: 'NVIDIA_DRIVER_CAPABILITIES', value: 'compute,utility,graphics' },
        ],
        resources: {
          requests: { cpu: '4', memory: '16Gi', 'nvidia.com/gpu': '1' },
          limits: { memory: '64Gi', 'nvidia.com/gpu': '1' },
        },
      }));
    }
    return o;
  });
}

/** KEDA's trigger on a JetStream consumer's lag: active from the first message waiting. */
const jetstreamLag = (stream: string, consumer: string, perReplica: number) => ({
  type: 'nats-jetstream',
  metadata: {
    natsServerMonitoringEndpoint: `duel-nats.${NAMESPACE}.svc.cluster.local:${NATS_MONITOR_PORT}`,
    account: '$G',
    stream,
    consumer,
    lagThreshold: String(perReplica),
    activationLagThreshold: '0',
  },
});

/**
 * The trainer scales from zero on pending work: its JetStream consumer `duel-trainer-wake` on the
 * run stream sees every `round.<n>.scored` event (a round waiting for training) and the trainer
 * acknowledges it once that round is trained, so the lag KEDA reads is the rounds waiting.
 */
function keda(): KubeObject[] {
  return [
    ...gpu().map((o) => {
      if (isRole(o, ['trainer'])) {
        o.spec!.replicas = 0;
        mapContainers(o, (c) => ({
          ...c,
          env: [...(c.env ?? []), { name: 'DUEL_TRAINER_WAKE_CONSUMER', value: WAKE_CONSUMER }],
        }));
      }
      if (isRole(o, ['orchestrator']))
        mapContainers(o, (c) => ({
          ...c,
          env: [...(c.env ?? []), { name: 'DUEL_ORCHESTRATOR_TRAINER_WAKE_CONSUMER', value: WAKE_CONSUMER }],
        }));
      return o;
    }),
    orchestratorScaler(),
    new ScaledObject({
      metadata: { name: 'duel-trainer', namespace: NAMESPACE, labels: labels('trainer') },
      spec: {
        scaleTargetRef: { name: 'duel-trainer' },
        minReplicaCount: 0,
        maxReplicaCount: 1,
        pollingInterval: 10,
        // A round's training follows the next round's sampling closely: stay up between rounds.
        cooldownPeriod: 600,
        triggers: [jetstreamLag('DUEL_RUNS', WAKE_CONSUMER, 1)],
      },
    }),
  ];
}

/**
 * The orchestrator scales from zero on a message waiting on the control consumer (a pipeline's
 * submit), and up to three replicas with more waiting; the runs it drives hold it up, read from
 * its own gauge through Prometheus, since the control consumer's lag is zero again once a submit
 * is acked and a run lasts hours. Every replica shares the consumer; leases keep one driver a run.
 */
function orchestratorScaler(): ScaledObject {
  return new ScaledObject({
    metadata: { name: 'duel-orchestrator', namespace: NAMESPACE, labels: labels('orchestrator') },
    spec: {
      scaleTargetRef: { name: 'duel-orchestrator' },
      minReplicaCount: 0,
      maxReplicaCount: 3,
      pollingInterval: 5,
      cooldownPeriod: 300,
      triggers: [
        jetstreamLag(CONTROL_STREAM, CONTROL_CONSUMER, 4),
        {
          type: 'prometheus',
          metadata: {
            serverAddress: PROMETHEUS,
            query: `sum(duel_orchestrator_runs_driving{namespace="${NAMESPACE}"}) or vector(0)`,
            // Ten runs per replica before another is added; any run keeps one up.
            threshold: '10',
            activationThreshold: '0',
          },
        },
      ],
    },
  });
}

/**
 * Sampler and scorer as Knative Services: request-driven, scaled to zero when idle. Knative routes
 * by HTTP/2 cleartext (the `h2c` port name), so gRPC passes through its activator; the
 * orchestrator then reaches one address per role and waits (DUEL_ORCHESTRATOR_MAX_WAIT_MS) while a
 * revision scales from zero.
 */
function knative(): KubeObject[] {
  const objects = gpu();
  const kn = (role: 'sampler' | 'scorer') => {
    const d = objects.find((o): o is Deployment => isRole(o, [role]))!;
    const pod = d.spec!.template.spec!;
    const container = pod.containers[0]!;
    return new KnativeService({
      metadata: { name: `duel-${role}`, namespace: NAMESPACE, labels: labels(role) },
      spec: {
        template: {
          metadata: {
            labels: labels(role),
            annotations: {
              'autoscaling.knative.dev/min-scale': '0',
              'autoscaling.knative.dev/max-scale': '8',
              // One batch at a time per pod: the sampler batches inside a request.
              'autoscaling.knative.dev/target': '4',
              'autoscaling.knative.dev/scale-to-zero-pod-retention-period': '10m',
            },
          },
          spec: {
            serviceAccountName: pod.serviceAccountName!,
            timeoutSeconds: 3600,
            containerConcurrency: 8,
            ...(pod.nodeSelector ? { nodeSelector: pod.nodeSelector } : {}),
            ...(pod.tolerations ? { tolerations: pod.tolerations } : {}),
            containers: [
              {
                name: container.name,
                image: container.image!,
                args: container.args!,
                // Knative sets PORT; the service binds what DUEL_PORT says, and Knative's port matches it.
                env: container.env!,
                ports: [{ name: 'h2c', containerPort: GRPC_PORT }],
                // Knative Serving takes gRPC probes; the typings of @kubernetes-models/knative 2.4 (the
                // last whose engines include Node 20) predate them, so the probe is typed by hand.
                readinessProbe: { grpc: { port: GRPC_PORT }, periodSeconds: 5 } as { periodSeconds: number },
                resources: container.resources!,
                securityContext: container.securityContext!,
                volumeMounts: container.volumeMounts!,
              },
            ],
            volumes: pod.volumes!,
          },
        },
      },
    });
  };
  const dropped = (o: KubeObject) =>
    (o instanceof Deployment || o.kind === 'Service' || o instanceof PodDisruptionBudget) &&
    ['duel-sampler', 'duel-scorer'].includes(o.metadata?.name ?? '');
  return [
    ...objects
      .filter((o) => !dropped(o))
      .map((o) => {
        if (isRole(o, ['orchestrator']))
          mapContainers(o, (c) => ({
            ...c,
            env: (c.env ?? []).map((e) =>
              e.name === 'DUEL_ORCHESTRATOR_SAMPLERS' || e.name === 'DUEL_ORCHESTRATOR_SCORERS'
                ? {
                    name: e.name,
                    // The Knative route (port 80, h2c), not pod addresses.
                    value: `${e.name.endsWith('SAMPLERS') ? 'duel-sampler' : 'duel-scorer'}.${NAMESPACE}.svc.cluster.local:80`,
                  }
                : e,
            ),
          }));
        return o;
      }),
    kn('sampler'),
    kn('scorer'),
  ];
}

export const OVERLAYS: Record<string, () => KubeObject[]> = { dev, gpu, keda, knative };
