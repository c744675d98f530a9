/**
 * Dynamic loss scaling for training whose backward pass runs in float16, after PyTorch's
 * GradScaler (same defaults, same rule): the loss is multiplied by a scale S before the backward
 * pass so that small gradients stay above half precision's smallest normal (6.1e-5), and the
 * float32 gradients are divided by S before clipping and the update. A step whose unscaled
 * gradient is not finite overflowed: it is skipped (the optimizer already leaves everything
 * unchanged then) and S halves; after `growthInterval` applied steps in a row S doubles. S stays
 * a power of two, so scaling and unscaling are exact.
 */

export interface LossScaleSpec {
  /** @default 2 ** 16 (GradScaler's init_scale) */
  init?: number;
  /** @default 2 */
  growthFactor?: number;
  /** @default 0.5 */
  backoffFactor?: number;
  /** Applied steps in a row before the scale grows. @default 2000 */
  growthInterval?: number;
}

/** Where a scaler stands: what a snapshot keeps, so a restored state scales as it would have. */
export interface LossScaleState {
  scale: number;
  /** Applied steps since the scale last changed. */
  goodSteps: number;
}

/** The scale input of a training graph that scales its loss. */
export const LOSS_SCALE_INPUT = 'loss_scale';

export class LossScaler {
  private readonly growthFactor: number;
  private readonly backoffFactor: number;
  private readonly growthInterval: number;
  private current: LossScaleState;

  constructor(spec: LossScaleSpec = {}) {
    this.growthFactor = spec.growthFactor ?? 2;
    this.backoffFactor = spec.backoffFactor ?? 0.5;
    this.growthInterval = spec.growthInterval ?? 2000;
    const init = spec.init ?? 2 ** 16;
    for (const [field, v, ok] of [
      ['init', init, init > 0],
      ['growthFactor', this.growthFactor, this.growthFactor > 1],
      ['backoffFactor', this.backoffFactor, this.backoffFactor > 0 && this.backoffFactor < 1],
      [
        'growthInterval',
        this.growthInterval,
        Number.isInteger(this.growthInterval) && this.growthInterval > 0,
      ],
    ] as const)
      if (!ok || !Number.isFinite(v)) throw new Error(`loss scale: ${field} ${v} is out of range`);
    this.current = { scale: init, goodSteps: 0 };
  }

  get scale(): number {
    return this.current.scale;
  }

  get state(): LossScaleState {
    return { ...this.current };
  }

  set state(s: LossScaleState) {
    if (!(s.scale > 0) || !Number.isInteger(s.goodSteps) || s.goodSteps < 0)
      throw new Error(`loss scale: cannot resume from scale ${s.scale} after ${s.goodSteps} good steps`);
    this.current = { ...s };
  }

  /** Moves the scale after a step that used it: `applied` false means its gradient overflowed. */
  update(applied: boolean): void {
    const { scale, goodSteps } = this.current;
    if (!applied) this.current = { scale: scale * this.backoffFactor, goodSteps: 0 };
    else if (goodSteps + 1 >= this.growthInterval)
      this.current = { scale: scale * this.growthFactor, goodSteps: 0 };
    else this.current = { scale, goodSteps: goodSteps + 1 };
  }
}
