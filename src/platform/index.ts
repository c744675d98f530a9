/** What services and the CLI import from the platform. */

export { Code, DuelError, type FieldViolation } from '../errors.js';
export {
  type ArtifactRef,
  FileArtifactStore,
  localArtifactDir,
  MANIFEST,
  verifyArtifact,
  writeManifest,
} from './artifacts.js';
export { type ConfigSources, describeConfig, envName, loadConfig } from './config.js';
export { checkModelRef, checkPrefs, checkSampling, type SamplingLimits } from './contract-checks.js';
export type { CallContext, ServiceHandlers } from './grpc/handlers.js';
export { fullServiceName, GrpcServer, type GrpcServerOptions, service } from './grpc/server.js';
export { violationsOf } from './grpc/status-details.js';
export { LoadOnce } from './load-once.js';
export { createLogger, type Logger } from './logger.js';
export { packageRoot, protoRoot } from './paths.js';
export { Violations } from './violations.js';
