import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Matrix, solve } from 'ml-matrix';
import { randomCondition } from '../data/captions.js';
import { duplicateForCfg, dropLearnedSigma, splitGuided } from '../diffusion/cfg.js';
import { createSampler, initialNoise } from '../diffusion/sampler.js';
import type { Engine } from '../engine/engine.js';
import { Rng } from '../tensor/rng.js';
import { tensor } from '../tensor/tensor.js';
import { Progress } from '../util/progress.js';
import { CachedExecutor } from './executor.js';
import { relativeL1 } from './policy.js';
import { TEACACHE_FILE, TEACACHE_PROBE, type TeaCacheCalibration } from './teacache.js';

/** Least-squares polynomial fit, coefficients highest power first (numpy.polyfit order). */
export function polyfit(x: readonly number[], y: readonly number[], degree: number): number[] {
  const A = new Matrix(x.map((v) => Array.from({ length: degree + 1 }, (_, k) => v ** (degree - k))));
  return solve(A, Matrix.columnVector([...y]), true).to1DArray();
}

export interface CalibrateOptions {
  steps: number;
  sampler: string;
  cfg: number;
  trajectories: number;
  seed: number;
  degree: number;
}

/**
 * Fits TeaCache's rescaling polynomial on this model: over uncached trajectories, the relative
 * L1 change of the first block's modulated input (what the policy can see before a step)
 * against the relative L1 change of the model output (what reusing would get wrong).
 * Writes teacache.json into the model package.
 */
export async function calibrateTeaCache(engine: Engine, o: CalibrateOptions): Promise<TeaCacheCalibration> {
  const [c, h, w] = engine.model.latentShape;
  const guided = o.cfg > 1;
  const rows = guided ? 2 : 1;
  const executor = await CachedExecutor.create(engine.model, engine.weights, rows, { threads: undefined });
  const xs: number[] = [];
  const ys: number[] = [];
  const progress = new Progress('calibrate teacache', o.trajectories, 'trajectories');
  const classes = engine.pkg.manifest.classes?.length ?? 0;
  for (let k = 0; k < o.trajectories; k++) {
    const rng = new Rng(o.seed).fork(`calibrate-${k}`);
    const { feeds: condition } = await engine.conditioning.build({ ...randomCondition(classes, rng), n: 1 }, rows);
    const sampler = createSampler(o.sampler, { steps: o.steps });
    let x = initialNoise(c * h * w, rng);
    let previous: { probe: ReturnType<typeof tensor>; out: ReturnType<typeof tensor> } | null = null;
    executor.reset();
    for (let i = 0; i < o.steps; i++) {
      const feeds = { ...condition, x: tensor('float32', [rows, c, h, w], guided ? duplicateForCfg(x) : x), t: tensor('float32', [rows], new Array<number>(rows).fill(sampler.timesteps[i]!)) };
      const probe = (await executor.probe(feeds, [TEACACHE_PROBE]))[TEACACHE_PROBE]!;
      const { out } = await executor.step(feeds, engine.model.slots.map(() => true), false);
      if (previous) {
        xs.push(relativeL1(probe, previous.probe));
        ys.push(relativeL1(out, previous.out));
      }
      previous = { probe, out };
      const o2 = out.data as Float32Array;
      x = sampler.step(i, x, guided ? splitGuided(o2, 1, engine.model.outChannels, c, h * w, o.cfg) : dropLearnedSigma(o2, 1, engine.model.outChannels, c, h * w));
    }
    progress.tick();
  }
  await executor.release();
  const calibration: TeaCacheCalibration = {
    coefficients: polyfit(xs, ys, o.degree),
    fittedOn: { model: engine.id, sha256: engine.pkg.sha256, steps: o.steps, sampler: o.sampler, cfg: o.cfg, trajectories: o.trajectories, points: xs.length },
  };
  await writeFile(join(engine.pkg.dir, TEACACHE_FILE), `${JSON.stringify(calibration, null, 2)}\n`);
  return calibration;
}
