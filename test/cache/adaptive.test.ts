import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parsePolicy, type PolicyContext } from '../../src/cache/index.js';
import { FIRST_BLOCK_PROBE } from '../../src/cache/first-block.js';
import { TEACACHE_FILE, TEACACHE_PROBE } from '../../src/cache/teacache.js';
import { calibrateTeaCache, polyfit } from '../../src/cache/teacache-calibrate.js';
import { Engine } from '../../src/engine/engine.js';
import { ditSlots } from '../../src/models/dit.js';
import { tensor } from '../../src/tensor/tensor.js';
import { TINY_DIT } from '../helpers/dit-checkpoint.js';
import { tinyDitPackage } from '../helpers/packages.js';

const slots = ditSlots({ ...TINY_DIT, depth: 3 });
const ctx = (modelDir?: string): PolicyContext => ({ steps: 6, sampler: 'ddim', slots, model: { id: 'tiny', sha256: 'x' }, modelDir });
const probe = (v: number) => tensor('float32', [4], [v, v, v, v]);

describe('Delta-DiT, First-Block-Cache and TeaCache policies', () => {
  it('delta-dit reuses the rear blocks before the boundary and the front blocks after it', () => {
    const p = parsePolicy('delta-dit:3,1,2');
    p.start(ctx());
    // slots: [b0 attn, b0 mlp, b1 attn, b1 mlp, b2 attn, b2 mlp]
    expect(p.decide(0, {})).toEqual([true, true, true, true, true, true]);
    expect(p.decide(1, {})).toEqual([true, true, true, true, false, false]);
    expect(p.decide(2, {})).toEqual([true, true, true, true, true, true]);
    expect(p.decide(3, {})).toEqual([false, false, true, true, true, true]);
    expect(() => parsePolicy('delta-dit:3')).toThrow(/range must be a whole number/);
    const wide = parsePolicy('delta-dit:3,4');
    expect(() => wide.start(ctx())).toThrow(/range 4 is more than the model's 3 blocks/);
  });

  it('first-block reuses all but block 0 while the first block residual stays close to the last computed one', () => {
    const p = parsePolicy('first-block:0.1');
    p.start(ctx());
    const all = slots.map(() => true);
    const onlyFirst = slots.map((s) => s.block === 0);
    expect(p.decide(0, { [FIRST_BLOCK_PROBE]: probe(1) })).toEqual(all);
    expect(p.decide(1, { [FIRST_BLOCK_PROBE]: probe(1.05) })).toEqual(onlyFirst);
    expect(p.decide(2, { [FIRST_BLOCK_PROBE]: probe(1.09) })).toEqual(onlyFirst); // still vs step 0
    expect(p.decide(3, { [FIRST_BLOCK_PROBE]: probe(1.2) })).toEqual(all);
    expect(p.decide(4, { [FIRST_BLOCK_PROBE]: probe(1.25) })).toEqual(onlyFirst); // vs step 3 now
  });

  it('teacache accumulates the rescaled change and computes when the sum passes the threshold', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'teacache-'));
    await writeFile(join(dir, TEACACHE_FILE), JSON.stringify({ coefficients: [2, 0], fittedOn: { sha256: 'x' } })); // poly(x) = 2x
    const p = parsePolicy('teacache:0.25');
    p.start(ctx(dir));
    const decisions = [1, 1.05, 1.1025, 1.157625, 1.2155].map((v, i) => p.decide(i, { [TEACACHE_PROBE]: probe(v) })[0]);
    // relative changes 0.05 each -> +0.1 per step: 0.1, 0.2 reuse; 0.3 computes and resets; 0.1 reuses
    expect(decisions).toEqual([true, false, false, true, false]);
    const uncalibrated = parsePolicy('teacache:0.1');
    const empty = await mkdtemp(join(tmpdir(), 'none-'));
    expect(() => uncalibrated.start(ctx(empty))).toThrow(/run "harmonica calibrate teacache --model tiny"/);
    const retrained = { ...ctx(dir), model: { id: 'tiny', sha256: 'y' } };
    expect(() => uncalibrated.start(retrained)).toThrow(/fitted on other weights .*run "harmonica calibrate teacache --model tiny"/);
  });

  it('polyfit recovers a polynomial', () => {
    const x = [0, 0.1, 0.2, 0.3, 0.5, 0.8];
    const coefficients = polyfit(x, x.map((v) => 3 * v ** 2 - v + 0.5), 2);
    expect(coefficients.map((c) => Number(c.toFixed(6)))).toEqual([3, -1, 0.5]);
  });

  it('calibrates TeaCache on a model and runs both input-adaptive policies through the engine', async () => {
    const engine = await Engine.open((await tinyDitPackage()).dir, { threads: 1 });
    const calibration = await calibrateTeaCache(engine, { steps: 6, sampler: 'ddim', cfg: 1.5, trajectories: 2, seed: 1, degree: 2 });
    expect(calibration.coefficients).toHaveLength(3);
    expect(calibration.fittedOn).toMatchObject({ points: 10 });
    const tea = await engine.generate({ classLabel: 2, cache: 'teacache:0.5' });
    expect(tea.report.decisions[0]!.every(Boolean)).toBe(true);
    const fb = await engine.generate({ classLabel: 2, cache: 'first-block:0.5' });
    expect(fb.report.decisions.slice(1).some((d) => d[0] && !d[2])).toBe(true); // some step reused the rest
    expect(fb.report.cur).toBeGreaterThan(0);
  });
});
