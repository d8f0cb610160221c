import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { compareCached } from '../../src/bench/compare.js';
import { Engine } from '../../src/engine/engine.js';
import { tinyDitPackage, TINY_PIXEL_DIT } from '../helpers/packages.js';

describe('compare', () => {
  it('runs a request cached and uncached, interleaved, and puts the two images side by side', async () => {
    const engine = await Engine.open((await tinyDitPackage(3, 'tiny-dit-32', { ...TINY_PIXEL_DIT, inputSize: 32, patchSize: 8 })).dir, { threads: 1 });
    const generate = engine.generate.bind(engine);
    const policies: string[] = [];
    engine.generate = (req, opts) => (policies.push(engine.resolve(req).cache), generate(req, opts));
    const c = await compareCached(engine, { classLabel: 2, steps: 4, cache: 'fora:2', seed: 3 }, 2);
    expect(policies).toEqual(['none', 'fora:2', 'fora:2', 'none', 'none', 'fora:2']); // warm-up, then alternating order
    expect(c).toMatchObject({ cache: 'fora:2', steps: 4, cur: 0.5 });
    expect(c.macSpeedup).toBeGreaterThan(1.5);
    expect(c.measuredSpeedup).toBeGreaterThan(0);
    expect(c.measuredRange[0]).toBeLessThanOrEqual(c.measuredRange[1]);
    expect(Number.isFinite(c.psnr)).toBe(true);
    const meta = await sharp(c.png).metadata();
    expect(meta.format).toBe('png');
    expect(meta.width).toBeGreaterThan(meta.height! * 1.8); // two images side by side
    const same = await compareCached(engine, { classLabel: 2, steps: 4, cache: 'none', seed: 3 }, 1);
    expect(same.psnr).toBe(Infinity);
  });
});
