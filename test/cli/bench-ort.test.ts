import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);

describe('harmonica bench ort --json', () => {
  it('prints one JSON object with the keys scripts depend on', async () => {
    const { stdout } = await run('node', ['bin/harmonica.js', 'bench', 'ort', '--runs', '1', '--json'], { env: { ...process.env, LOG_LEVEL: 'warn' } });
    const result = JSON.parse(stdout) as Record<string, number>;
    for (const key of ['runOverheadUs', 'matmulGflops1t', 'matmulGflops2t', 'blockFwdMs', 'blockFwdBwdMs', 'fwdBwdOverFwd']) {
      expect(result[key], key).toBeGreaterThan(0);
    }
    expect(result.fwdBwdOverFwd).toBeCloseTo(result.blockFwdBwdMs! / result.blockFwdMs!, 1);
  });
});
