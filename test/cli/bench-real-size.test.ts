import { mkdtemp } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { benchRealSize } from '../../src/bench/real-size.js';
import { TINY_DIT } from '../helpers/dit-checkpoint.js';

const TINY_VAE = { latentChannels: 4, outChannels: 3, blockOutChannels: [8, 16], layersPerBlock: 1, normNumGroups: 4, scalingFactor: 0.18215, midBlockAddAttention: true };

describe('bench real-size, at tiny widths', () => {
  it('writes an original checkpoint, converts it with --vae, generates cold, from the compiled cache and with fora:2', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'real-size-'));
    const r = await benchRealSize({ dir, layout: 'original', steps: 4, seed: 1, threads: 1, sizes: { dit: TINY_DIT, vae: TINY_VAE } });
    expect(r.phases.map((p) => [p.phase, p.compiledCache])).toEqual([
      ['write random checkpoint (or reuse)', undefined], ['convert', undefined],
      ['generate, cold (empty compiled cache)', 'miss'], ['generate, second start', 'hit'], ['generate fora:2, second start', 'hit'],
    ]);
    for (const p of r.phases) expect(p.peakRssGb).toBeGreaterThan(0.01);
    expect(r.fora2Speedup).toBeGreaterThan(0);
    expect(existsSync(join(dir, 'generate-second-start.png'))).toBe(true);
  }, 120_000);
});
