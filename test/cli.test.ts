import { execFileSync, spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { buildProgram } from '../src/cli/program.js';
import { duelBin, packageVersion } from '../src/platform/paths.js';

const BIN = duelBin();

describe('duel CLI', () => {
  it('lists its commands in --help', async () => {
    const help = (await buildProgram(['node', 'duel'])).helpInformation();
    for (const cmd of ['bench', 'contracts', 'config', 'serve', 'train', 'demo', 'testbed', 'sample', 'runs'])
      expect(help).toMatch(new RegExp(`^\\s+${cmd}\\b`, 'm'));
  });

  it('runs as the installed bin: --version prints the package version', () => {
    const out = execFileSync(process.execPath, [BIN, '--version'], { encoding: 'utf8' });
    expect(out.trim()).toBe(packageVersion());
  });

  it('lists every RPC of the services', () => {
    const out = execFileSync(process.execPath, [BIN, 'contracts'], { encoding: 'utf8' });
    expect(out).toContain('/duel.v1.PolicySamplerService/Sample  (→ stream)');
    expect(out).toContain('/duel.v1.TrainerService/TrainRound  (stream → unary)');
    expect(out).toContain('/duel.v1.RunsService/WatchRun  (→ stream)');
    expect(out).toContain('/duel.v1.TrainingService/ForwardBackward  (→ unary)');
    expect(out.trim().split('\n')).toHaveLength(26);
  });

  it('exits non-zero with the key named when a setting is bad', () => {
    const r = spawnSync(process.execPath, [BIN, 'config'], {
      encoding: 'utf8',
      env: { ...process.env, DUEL_PORT: '99999' },
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^duel: port: .*65535.*\(from DUEL_PORT\)/);
  });

  it('refuses a bad benchmark flag before measuring anything', () => {
    const r = spawnSync(process.execPath, [BIN, 'bench', 'engine', '--steps', '0'], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toBe("duel: --steps: must be a positive integer, got '0'\n");
  });

  it('measures artifact throughput end to end at a small size, and refuses a bad size list', () => {
    const r = spawnSync(
      process.execPath,
      [BIN, 'bench', 'artifacts', '--sizes', '1', '--repeats', '1', '--json'],
      {
        encoding: 'utf8',
      },
    );
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { rows: { store: string; mib: number; load_mib_s: number }[] };
    expect(out.rows.map((x) => x.store)).toEqual(['copy + sha256 (peer)', 'file://', 'nats://']);
    for (const row of out.rows) expect(row.load_mib_s).toBeGreaterThan(0);
    const bad = spawnSync(process.execPath, [BIN, 'bench', 'artifacts', '--sizes', '1,x'], {
      encoding: 'utf8',
    });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/--sizes: '1,x' is not a list of whole MiB/);
  });

  it('rejects an unknown command with a usage error', () => {
    const r = spawnSync(process.execPath, [BIN, 'frobnicate'], { encoding: 'utf8' });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/unknown command 'frobnicate'/);
  });
});
