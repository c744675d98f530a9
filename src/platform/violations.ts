/**
 * Collects every problem of one request or config before failing, so a caller fixes them all in
 * one go instead of one per round trip.
 */
import { DuelError, type FieldViolation } from '../errors.js';

export class Violations {
  private readonly list: FieldViolation[] = [];

  add(field: string, description: string): this {
    this.list.push({ field, description });
    return this;
  }

  /** Records a violation unless `ok`; returns `ok` so callers can skip dependent checks. */
  check(ok: boolean, field: string, description: string): boolean {
    if (!ok) this.add(field, description);
    return ok;
  }

  get empty(): boolean {
    return this.list.length === 0;
  }

  throwIfAny(): void {
    if (this.list.length > 0) throw DuelError.invalidArgument([...this.list]);
  }
}
