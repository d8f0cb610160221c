import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { CAPTION_WORDS } from '../../src/data/captions.js';
import { CachedExecutor } from '../../src/cache/executor.js';
import { ltcComputesAll } from '../../src/cache/router.js';
import { duplicateForCfg, splitGuided } from '../../src/diffusion/cfg.js';
import { createSampler, initialNoise } from '../../src/diffusion/sampler.js';
import { Engine } from '../../src/engine/engine.js';
import { Rng } from '../../src/tensor/rng.js';
import { tensor } from '../../src/tensor/tensor.js';
import { RouterTrainer, type RouterTrainOptions } from '../../src/train/router.js';
import { tinyDitPackage, tinyPixArtPackage, TINY_PIXEL_DIT } from '../helpers/packages.js';

let engine: Engine;
beforeAll(async () => {
  engine = await Engine.open((await tinyDitPackage()).dir, { threads: 1 });
});

const options = (over: Partial<RouterTrainOptions> = {}): RouterTrainOptions => ({
  steps: 4, sampler: 'ddim', cfg: 1.5, beta: 1e-3, lr: 0.05, updates: 6, batch: 2, tauTrain: 0.1, tau: 0.1,
  lambdaMode: 'paper', lambdaNorm: 'none', refresh: 3, seed: 7, session: { threads: 1 }, ...over,
});

describe('HarmoniCa router trainer', () => {
  it('refuses a quantized transformer (the loss is differentiated through its MatMuls)', async () => {
    const int8 = await Engine.open((await tinyDitPackage()).dir, { threads: 1, precision: { transformer: 'int8' } });
    await expect(RouterTrainer.create(int8, options())).rejects.toMatchObject({ code: 'BAD_INPUT', message: expect.stringMatching(/router training needs the transformer at fp32 \(precision.transformer\), got int8/) });
  });

  it('trains rows 1..T-1, keeps row 0 at 5, clamps, and writes an artifact the engine accepts', async () => {
    const trainer = await RouterTrainer.create(engine, options());
    const before = trainer.logits.map((r) => [...r]);
    const artifact = await trainer.train();
    expect(artifact.logits[0]).toEqual([5, 5, 5, 5]);
    expect(artifact.logits.slice(1)).not.toEqual(before.slice(1).map((r) => r.map((v) => Number(v.toFixed(6)))));
    expect(artifact.logits.flat().every((v) => v >= -5 && v <= 5)).toBe(true);
    expect(artifact).toMatchObject({ method: 'harmonica', steps: 4, model: { sha256: engine.pkg.sha256 }, training: { updates: 6, lambdaMode: 'paper' } });
    const path = join(await mkdtemp(join(tmpdir(), 'router-')), 'r.json');
    await writeFile(path, JSON.stringify(artifact));
    const r = await engine.generate({ classLabel: 3, steps: 4, cache: `router:${path}` });
    expect(r.report.decisions[0]!.every(Boolean)).toBe(true);
    await trainer.release();
  });

  // The trainer branches variants off one routed trajectory; the direct computation runs each
  // variant from the noise. DPM++ also checks that a branch carries the sampler's history.
  it.each([
    ['paper', 'ddim'],
    ['paper', 'dpmpp'],
    ['incremental', 'dpmpp'],
  ] as const)('%s-mode lambda(t) equals a direct computation with the cached executor (%s, hard routers)', async (lambdaMode, sampler) => {
    const trainer = await RouterTrainer.create(engine, options({ lambdaMode, sampler }));
    // Hard decisions (r exactly 0 or 1): the soft-routed trajectory is the cached one.
    const hard = [[40, 40, 40, 40], [40, -40, -40, 40], [-40, -40, -40, -40], [-40, 40, 40, -40]];
    hard.forEach((row, i) => trainer.logits[i]!.splice(0, 4, ...row));
    const lambda = await trainer.refreshLambda(11);

    const exec = await CachedExecutor.create(engine.model, engine.weights, 4, { threads: 1 });
    const sample = async (masks: boolean[][]) => {
      const rng = new Rng(11); // as the trainer draws a trajectory: a class per noise, then the noise
      const labels = [rng.int(10), rng.int(10)];
      let x = initialNoise(2 * 64, rng);
      const feeds = { y: tensor('int64', [4], [...labels, 10, 10]) };
      const s = createSampler(sampler, { steps: 4 });
      exec.reset();
      for (let i = 0; i < 4; i++) {
        const { out } = await exec.step({ ...feeds, x: tensor('float32', [4, 1, 8, 8], duplicateForCfg(x)), t: tensor('float32', [4], new Array(4).fill(s.timesteps[i])) }, masks[i]!);
        x = s.step(i, x, splitGuided(out.data as Float32Array, 2, 2, 1, 64, 1.5));
      }
      return x;
    };
    const sq = (a: Float32Array, b: Float32Array) => a.reduce((s, v, k) => s + (v - b[k]!) ** 2, 0);
    const masks = hard.map((row) => row.map((v) => v > 0));
    const all = masks.map((row) => row.map(() => true));
    const direct: number[] = [0];
    if (lambdaMode === 'paper') {
      const x0 = await sample(masks);
      for (let t = 1; t < 4; t++) direct.push(sq(x0, await sample(masks.map((row, i) => (i === t ? all[i]! : row)))));
    } else {
      let previous = await sample(all);
      for (let t = 1; t < 4; t++) {
        const current = await sample(masks.map((row, i) => (i <= t ? row : all[i]!)));
        direct.push(sq(current, previous) / current.length);
        previous = current;
      }
    }
    direct.forEach((d, t) => expect(lambda[t]).toBeCloseTo(d, 4));
    expect(lambda[2]).toBeGreaterThan(0);
    await trainer.release();
  });

  it('a text model trains on captions: HarmoniCa on random captions (image-free), LTC on digits drawn as captioned; DPM++', async () => {
    const text = await Engine.open((await tinyPixArtPackage(5, 'tiny-mnist-pixart', { sampleSize: 32, patchSize: 8, words: CAPTION_WORDS })).dir, { threads: 1 });
    const build = vi.spyOn(text.conditioning, 'build');
    const harmonica = await RouterTrainer.create(text, options({ steps: 5, updates: 4, sampler: 'dpmpp', refresh: 4 }));
    const routed = await harmonica.train();
    const prompts = build.mock.calls.map(([req]) => req.prompt);
    expect(prompts.length).toBeGreaterThan(0);
    for (const p of prompts) expect(p).toMatch(/^an? \w+ \w+ (in|at) the /);
    const ltc = await RouterTrainer.create(text, options({ steps: 5, updates: 4, sampler: 'dpmpp', lr: 0.2 }));
    const before = ltc.logits.map((r) => [...r]);
    const learned = await ltc.trainLtc();
    expect(learned.logits[2]).not.toEqual(before[2]!.map((v) => Number(v.toFixed(6))));
    const dir = await mkdtemp(join(tmpdir(), 'text-routers-'));
    for (const artifact of [routed, learned]) {
      const path = join(dir, `${artifact.method}.json`);
      await writeFile(path, JSON.stringify(artifact));
      const r = await text.generate({ prompt: 'a small 7 in the top left corner', steps: 5, sampler: 'dpmpp', cache: `router:${path}` });
      expect(r.report.decisions[0]!.every(Boolean)).toBe(true);
    }
    await Promise.all([harmonica.release(), ltc.release()]);
  });

  it('LTC computes everything where its diffusion index is odd (even sampling steps for even T) and trains the rows after them', async () => {
    expect([0, 1, 2, 3, 4, 5].map((k) => ltcComputesAll(k, 6))).toEqual([true, false, true, false, true, false]);
    expect([0, 1, 2, 3, 4].map((k) => ltcComputesAll(k, 5))).toEqual([false, true, false, true, false]);
    const mnistSized = await Engine.open((await tinyDitPackage(3, 'tiny-dit-32', { ...TINY_PIXEL_DIT, inputSize: 32, patchSize: 8 })).dir, { threads: 1 });
    const trainer = await RouterTrainer.create(mnistSized, options({ steps: 6, updates: 6, lr: 0.2 }));
    const before = trainer.logits.map((r) => [...r]);
    const artifact = await trainer.trainLtc();
    expect(artifact.method).toBe('ltc');
    expect(artifact.logits[0]).toEqual([5, 5, 5, 5]);
    const moved = artifact.logits.map((row, i) => row.some((v, s) => Math.abs(v - before[i]![s]!) > 1e-5));
    expect(moved.filter((_, i) => i % 2 === 0)).toEqual([false, false, false]); // rows the schedule computes in full never train
    expect(moved[1] || moved[3] || moved[5]).toBe(true);
    const path = join(await mkdtemp(join(tmpdir(), 'ltc-')), 'r.json');
    await writeFile(path, JSON.stringify({ ...artifact, logits: artifact.logits.map(() => [-5, -5, -5, -5]) }));
    const r = await mnistSized.generate({ classLabel: 1, steps: 6, cache: `router:${path}` });
    expect(r.report.decisions.map((d) => d.every(Boolean))).toEqual([true, false, true, false, true, false]);
    await trainer.release();
  });

  it('an update moves only its own row: rows that did not run keep their logits and their optimizer moments', async () => {
    // T = 4: updates 1..3 train rows 1, 2, 3; update 4 trains row 1 again. With one AdamW over
    // all rows and zero gradients elsewhere, rows 2 and 3 would keep moving on their momentum.
    const three = await RouterTrainer.create(engine, options({ updates: 3, refresh: 100 }));
    const four = await RouterTrainer.create(engine, options({ updates: 4, refresh: 100 }));
    const a = (await three.train()).logits;
    const b = (await four.train()).logits;
    expect(b[2]).toEqual(a[2]);
    expect(b[3]).toEqual(a[3]);
    expect(b[1]).not.toEqual(a[1]);
    await Promise.all([three.release(), four.release()]);
  });

  it('draws a class per noise (each condition built for one sample), not one per trajectory', async () => {
    const build = vi.spyOn(engine.conditioning, 'build');
    build.mockClear();
    const trainer = await RouterTrainer.create(engine, options({ batch: 4, updates: 6, refresh: 100 }));
    await trainer.train();
    const calls = build.mock.calls.map(([req, rows]) => ({ n: req.n, rows, classLabel: req.classLabel }));
    expect(calls.every((c) => c.n === 1 && c.rows === 2)).toBe(true);
    expect(calls.length).toBe(4 * 3); // two training trajectories and the IEPO one, 4 noises each
    expect(new Set(calls.slice(0, 4).map((c) => c.classLabel)).size).toBeGreaterThan(1);
    build.mockRestore();
    await trainer.release();
  });

  it('logs windows, checkpoints, and a resumed run ends where an uninterrupted one does; a changed setting is refused', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'router-resume-'));
    const checkpoint = join(dir, 'ckpt.json');
    const whole = await RouterTrainer.create(engine, options({ updates: 9, refresh: 4, plateau: { window: 3 } }));
    const expected = await whole.train();
    const first = await RouterTrainer.create(engine, options({ updates: 6, refresh: 4, plateau: { window: 3 }, checkpoint, checkpointEvery: 3 }));
    await first.train();
    const second = await RouterTrainer.create(engine, options({ updates: 9, refresh: 4, plateau: { window: 3 }, checkpoint, resume: true }));
    const resumed = await second.train();
    expect(resumed.logits).toEqual(expected.logits);
    expect(resumed.training!.lambda).toEqual(expected.training!.lambda);
    const history = resumed.training!.history as { update: number; cur: number; undecided: number; changed: number; dataLoss: number }[];
    expect(history.map((w) => w.update)).toEqual([3, 6, 9]);
    for (const w of history) for (const v of [w.cur, w.undecided, w.changed, w.dataLoss]) expect(Number.isFinite(v)).toBe(true);
    const other = await RouterTrainer.create(engine, options({ updates: 9, beta: 2e-3, refresh: 4, plateau: { window: 3 }, checkpoint, resume: true }));
    await expect(other.train()).rejects.toThrow(/trained with beta 0.001, this run asks for 0.002/);
    await Promise.all([whole.release(), first.release(), second.release(), other.release()]);
  });

  it('--until-plateau stops once the decisions at tau stop changing', async () => {
    // maxChanged 1 makes the second window a plateau: the rule, not the numbers, is under test.
    const trainer = await RouterTrainer.create(engine, options({ updates: 60, refresh: 100, untilPlateau: true, plateau: { window: 3, patience: 1, maxChanged: 1 } }));
    const a = await trainer.train();
    expect(a.training).toMatchObject({ updates: 6, plateauAt: 6, maxUpdates: 60 });
    const strict = await RouterTrainer.create(engine, options({ updates: 12, refresh: 100, untilPlateau: true, plateau: { window: 3, patience: 1, maxChanged: -1 } }));
    expect((await strict.train()).training).toMatchObject({ updates: 12, plateauAt: null });
    await Promise.all([trainer.release(), strict.release()]);
  });

  it('under a cache-age cap, slots whose cache would be too old compute, in training as at inference, and their logits do not train', async () => {
    const trainer = await RouterTrainer.create(engine, options({ updates: 3, refresh: 100, maxCacheAge: 1 }));
    // Every logit says reuse: with the cap, step 1 reuses step 0's outputs, step 2 must compute, step 3 reuses again.
    trainer.logits.slice(1).forEach((row) => row.fill(-5));
    const artifact = await trainer.train();
    expect(artifact.maxCacheAge).toBe(1);
    expect(artifact.logits[2]).toEqual([-5, -5, -5, -5]); // all forced at step 2: nothing trained there
    expect(artifact.logits[1]).not.toEqual([-5, -5, -5, -5]);
    expect(artifact.eval!.cur).toBeCloseTo(0.5, 1);
    await trainer.release();
  });

  it('straight-through and the hard lambda schedule train and are recorded in the artifact', async () => {
    const trainer = await RouterTrainer.create(engine, options({ straightThrough: true, lambdaSchedule: 'hard' }));
    const a = await trainer.train();
    expect(a.training).toMatchObject({ straightThrough: true, lambdaSchedule: 'hard', updates: 6 });
    expect(a.logits.flat().every(Number.isFinite)).toBe(true);
    await trainer.release();
  });
});
