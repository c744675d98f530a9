/** The DuelError a call refuses with; any other outcome fails the test. */
import { DuelError } from '../../src/errors.js';

export function refusal(f: () => unknown): DuelError {
  try {
    f();
  } catch (e) {
    if (e instanceof DuelError) return e;
    throw e;
  }
  throw new Error('expected a refusal');
}

/** refusal, for a promise. */
export function refused(p: Promise<unknown>): Promise<DuelError> {
  return p.then(
    () => {
      throw new Error('expected a refusal');
    },
    (e) => {
      if (e instanceof DuelError) return e;
      throw e;
    },
  );
}
