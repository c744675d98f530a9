/** The tensor API model code writes against. */
export { checkpoint, checkpointGate } from './checkpoint.js';
export * from './elementwise.js';
export { scalar, type TensorLike, unbroadcast } from './helpers.js';
export * from './linalg-index.js';
export * from './nn.js';
export * from './reduce-layout.js';
export * from './sequence.js';
