/** Progress of long work as periodic stderr lines with count, rate and ETA (silent with --quiet). */
export interface Progress {
  tick(done: number, extra?: string): void;
  finish(extra?: string): void;
}

export function progress(label: string, total: number, quiet = false, everyMs = 1000): Progress {
  const start = performance.now();
  let last = 0;
  let printed = -1;
  const line = (done: number, extra?: string) => {
    printed = done;
    const secs = (performance.now() - start) / 1000;
    const rate = done / Math.max(secs, 1e-9);
    const eta = rate > 0 ? (total - done) / rate : Number.POSITIVE_INFINITY;
    const tail = extra ? `, ${extra}` : '';
    process.stderr.write(
      `${label} ${done}/${total} (${rate.toFixed(1)}/s, ${secs.toFixed(1)} s, ETA ${Number.isFinite(eta) ? eta.toFixed(0) : '?'} s${tail})\n`,
    );
  };
  return {
    tick(done, extra) {
      if (quiet) return;
      const now = performance.now();
      if (now - last < everyMs && done < total) return;
      last = now;
      line(done, extra);
    },
    finish(extra) {
      if (!quiet && (printed !== total || extra)) line(total, extra);
    },
  };
}
