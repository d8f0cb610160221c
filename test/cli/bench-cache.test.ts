import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { benchCache } from '../../src/bench/cache.js';
import { Engine } from '../../src/engine/engine.js';
import { RouterTrainer } from '../../src/train/router.js';
import { tinyDitPackage, TINY_PIXEL_DIT } from '../helpers/packages.js';

describe('bench cache', () => {
  it('puts every method side by side with quality, fidelity and speed', async () => {
    const pkg = await tinyDitPackage(3, 'tiny-dit-32', { ...TINY_PIXEL_DIT, inputSize: 32, patchSize: 8, numClasses: 10 });
    const engine = await Engine.open(pkg.dir, { threads: 1 });
    const dir = await mkdtemp(join(tmpdir(), 'bench-cache-'));
    const routers: string[] = [];
    for (const method of ['harmonica', 'ltc'] as const) {
      const trainer = await RouterTrainer.create(engine, { steps: 6, sampler: 'ddim', cfg: 1.5, beta: 1e-3, lr: 0.05, updates: 3, batch: 2, tauTrain: 0.1, tau: 0.1, lambdaMode: 'paper', lambdaNorm: 'none', refresh: 10, seed: 1, session: { threads: 1 } });
      const artifact = method === 'ltc' ? await trainer.trainLtc() : await trainer.train();
      const path = join(dir, `${method}.json`);
      await writeFile(path, JSON.stringify(artifact));
      routers.push(path);
      await trainer.release();
    }
    const plotPath = join(dir, 'plot.png');
    const r = await benchCache({ model: pkg.dir, n: 10, routers, timingRuns: 1, threads: 1, plotPath });
    expect(r.rows.map((row) => row.method)).toEqual(['none', 'fora', 'fora', 'delta-dit', 'teacache', 'teacache', 'first-block', 'first-block', 'fewer-steps', 'fewer-steps', 'harmonica', 'ltc']);
    const none = r.rows[0]!;
    expect(none).toMatchObject({ cur: 0, macSpeedup: 1, measuredSpeedup: 1, psnr: null });
    const fora2 = r.rows[1]!;
    expect(fora2.cur).toBeCloseTo(0.5);
    expect(fora2.psnr).toBeGreaterThan(0);
    expect(r.rows[8]!.macSpeedup).toBeCloseTo(6 / 4);
    expect(r.training.map((t) => t.method)).toEqual(['harmonica', 'ltc']);
    for (const row of r.rows) for (const k of ['fid', 'fidCi', 'fidFloor', 'accuracy', 'measuredSpeedup'] as const) expect(Number.isFinite(row[k]), `${row.method} ${k}`).toBe(true);
    expect(r.rows.every((row) => row.measuredRange[0] <= row.measuredSpeedup && row.measuredSpeedup <= row.measuredRange[1])).toBe(true);
    expect((await sharp(await readFile(plotPath)).metadata()).format).toBe('png');
  });

  it('--frontier: fewer steps down to T/4, FORA 2..4, three settings per policy, routers for fewer steps at several taus', async () => {
    const pkg = await tinyDitPackage(3, 'tiny-dit-32', { ...TINY_PIXEL_DIT, inputSize: 32, patchSize: 8, numClasses: 10 });
    const engine = await Engine.open(pkg.dir, { threads: 1 });
    // The frontier: every fewer-steps T' down to T/4, FORA 2..4, three settings per policy,
    // a router trained for fewer steps than the reference on the same chart, at two taus.
    const short = await RouterTrainer.create(engine, { steps: 4, sampler: 'ddim', cfg: 1.5, beta: 1e-3, lr: 0.05, updates: 3, batch: 2, tauTrain: 0.1, tau: 0.1, lambdaMode: 'paper', lambdaNorm: 'none', refresh: 10, seed: 1, session: { threads: 1 } });
    // Shipped in the package: the frontier takes the package's routers for 6 steps or fewer by default.
    await mkdir(join(pkg.dir, 'routers'), { recursive: true });
    const artifact = await short.train();
    await writeFile(join(pkg.dir, 'routers', 'short.json'), JSON.stringify(artifact));
    await writeFile(join(pkg.dir, 'routers', 'long.json'), JSON.stringify({ ...artifact, steps: 8, logits: [...artifact.logits, ...artifact.logits] }));
    await short.release();
    const f = await benchCache({ model: pkg.dir, n: 10, routers: [], taus: [0.1, 0.5], frontier: true, cfg: 2, timingRuns: 1, threads: 1 });
    expect(f.cfg).toBe(2);
    expect(f.rows.filter((row) => row.method === 'fewer-steps').map((row) => row.steps)).toEqual([5, 4, 3, 2]);
    expect(f.rows.filter((row) => row.method === 'fora').map((row) => row.setting)).toEqual(['N=2', 'N=3', 'N=4']);
    for (const m of ['delta-dit', 'teacache', 'first-block']) expect(f.rows.filter((row) => row.method === m)).toHaveLength(3);
    const routed = f.rows.filter((row) => row.method === 'harmonica');
    expect(routed.map((row) => row.setting)).toEqual(['T=4,beta=0.001,tau=0.1', 'T=4,beta=0.001,tau=0.5']);
    // MAC against the 6-step reference: at least the ratio of steps.
    for (const row of routed) expect(row.macSpeedup).toBeGreaterThanOrEqual(6 / 4 - 1e-9);
    expect(Array.isArray(f.dominance)).toBe(true);
  }, 180_000);
});
