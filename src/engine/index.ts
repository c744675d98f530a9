/** duel's tensor compiler: trace → autodiff → ONNX → onnxruntime-node in worker threads. */
export { grad } from './autodiff.js';
export { allocate, type DType, fromFloat16, type TypedArray, toFloat16 } from './dtype.js';
export { countFlops, type FlopCount } from './flops.js';
export { Graph, inputName, type OpDef, Tensor } from './graph.js';
export { compileLoop, type LoopProgram } from './loop.js';
export { LOSS_SCALE_INPUT, LossScaler, type LossScaleSpec, type LossScaleState } from './loss-scale.js';
export { type CompiledModel, type CompileOptions, compile, OPSET } from './onnx.js';
export * as T from './ops/index.js';
export {
  buildTrainStep,
  defaultUpdateLayout,
  learningRate,
  type OptimizerSpec,
  type ScheduleSpec,
  type TrainStepSpec,
  type UpdateLayout,
} from './optim.js';
export { freeHostTensors } from './runtime/free-host.js';
export {
  type ComputeDtype,
  cpuLimit,
  type DeviceStats,
  type LoadOptions,
  type Moved,
  type Provider,
  Runtime,
  type RuntimeOptions,
  Session,
  type WireTensor,
} from './runtime/runtime.js';
export {
  type NamedTensor,
  parseSafetensors,
  readSafetensors,
  SafetensorsError,
  type StoredTensor,
  serializeSafetensors,
  toBfloat16,
  writeSafetensors,
  writeSafetensorsAsync,
} from './safetensors.js';
export { addDims, type Dim, divDims, mulDims, type Shape } from './shape.js';
export { SharedTensors } from './shared-tensors.js';
export {
  type BuildTimings,
  type ParameterSource,
  type PinnedSnapshot,
  type StateReader,
  type StepMetrics,
  type TraceTarget,
  type TrainingSnapshot,
  TrainingState,
  type TrainingStateOptions,
  type TrainProgram,
} from './train-state.js';
export { WeightsSession } from './weights-session.js';
