import { readFile, writeFile } from 'node:fs/promises';
import { calibrateTeaCache } from '../cache/teacache-calibrate.js';
import { loadTeaCacheCalibration } from '../cache/teacache.js';
import type { RouterArtifact } from '../cache/router.js';
import { Engine } from '../engine/engine.js';
import { CLASSIFIER_DIR, DigitClassifier } from '../eval/classifier.js';
import { checkEvaluable, DEFAULT_EVAL_BATCH, generateSamples, planRequests, requestConditioning, scoreSamples, type SampleSet, type Scores } from '../eval/run.js';
import { Progress } from '../util/progress.js';
import { qualitySpeedPlot } from './plot.js';
import { median } from './timing.js';

export type CacheMethod = 'none' | 'harmonica' | 'ltc' | 'fora' | 'delta-dit' | 'teacache' | 'first-block' | 'fewer-steps';

export interface CacheBenchRow {
  method: CacheMethod;
  setting: string;
  cur: number;
  macSpeedup: number;
  measuredSpeedup: number;
  fid: number;
  fidFloor: number;
  isScore: number;
  accuracy: number;
  /** Text models only: size and place accuracy against the caption. */
  positionAccuracy?: number;
  sizeAccuracy?: number;
  psnr: number | null;
  ssim: number | null;
}

export interface TrainingRow {
  method: 'harmonica' | 'ltc';
  seconds: number;
  peakRssMb: number | null;
  updates: number;
}

export interface CacheBenchResult {
  model: string;
  steps: number;
  sampler: string;
  cfg: number;
  n: number;
  machine: string;
  rows: CacheBenchRow[];
  training: TrainingRow[];
}

interface Variant {
  method: CacheMethod;
  setting: string;
  steps: number;
  cache: string;
}

/** The training-free operating points, scaled to the model's depth and step count. */
function baselineVariants(steps: number, depth: number): Variant[] {
  const v = (method: CacheMethod, setting: string, cache: string, s = steps): Variant => ({ method, setting, steps: s, cache });
  return [
    v('none', `T=${steps}`, 'none'),
    v('fora', 'N=2', 'fora:2'),
    v('fora', 'N=3', 'fora:3'),
    v('delta-dit', `b=${Math.round(steps / 2)},k=${Math.max(1, Math.round(depth / 2))}`, `delta-dit:${Math.round(steps / 2)},${Math.max(1, Math.round(depth / 2))},2`),
    v('teacache', 'l1=0.1', 'teacache:0.1'),
    v('teacache', 'l1=0.3', 'teacache:0.3'),
    v('first-block', 'l1=0.1', 'first-block:0.1'),
    v('first-block', 'l1=0.2', 'first-block:0.2'),
    v('fewer-steps', `T=${Math.round(steps * 0.7)}`, 'none', Math.round(steps * 0.7)),
    v('fewer-steps', `T=${Math.round(steps * 0.5)}`, 'none', Math.round(steps * 0.5)),
  ];
}

/**
 * Every method side by side on one model: sample quality (classifier FID/IS/accuracy),
 * fidelity to the uncached samples of the same seeds (PSNR/SSIM), CUR, MAC speedup and the
 * measured speedup from interleaved timed runs.
 */
export async function benchCache(opts: { model: string; steps?: number; n: number; routers: string[]; timingRuns?: number; seed?: number; threads?: number; plotPath?: string }): Promise<CacheBenchResult> {
  const engine = await Engine.open(opts.model, { threads: opts.threads });
  checkEvaluable(engine);
  const d = engine.pkg.manifest.defaults;
  const steps = opts.steps ?? d.steps;
  const seed = opts.seed ?? 0;
  const depth = Math.max(...engine.model.slots.map((s) => s.block)) + 1;
  try {
    loadTeaCacheCalibration({ model: { id: engine.id, sha256: engine.pkg.sha256 }, modelDir: engine.pkg.dir });
  } catch {
    // Missing or fitted on other weights: fit it here, as `calibrate teacache` would.
    await calibrateTeaCache(engine, { steps, sampler: d.sampler, cfg: d.cfg, trajectories: 16, seed: 1, degree: 4 });
  }
  const variants = baselineVariants(steps, depth);
  const training: TrainingRow[] = [];
  for (const path of opts.routers) {
    const a = JSON.parse(await readFile(path, 'utf8')) as RouterArtifact;
    const t = a.training ?? {};
    variants.push({ method: a.method, setting: `beta=${t.beta ?? '?'},tau=${a.tau}`, steps: a.steps, cache: `router:${path}` });
    training.push({ method: a.method, seconds: Number(t.seconds ?? NaN), peakRssMb: typeof t.peakRssMb === 'number' ? t.peakRssMb : null, updates: Number(t.updates ?? NaN) });
  }

  const requests = planRequests(opts.n, DEFAULT_EVAL_BATCH, seed, engine.model.conditioning === 'text');
  const classifier = await DigitClassifier.load(CLASSIFIER_DIR, { threads: opts.threads });
  const progress = new Progress(`bench cache ${engine.id}`, opts.n * variants.length, 'images');
  const setting = (v: Variant) => ({ steps: v.steps, sampler: d.sampler, cfg: d.cfg, cache: v.cache });
  const reference = await generateSamples(engine, requests, setting(variants[0]!), progress);
  const quality: { set: SampleSet; scores: Scores }[] = [];
  for (const v of variants) {
    const set = v.method === 'none' ? reference : await generateSamples(engine, requests, setting(v), progress);
    quality.push({ set, scores: await scoreSamples(set, classifier, seed, v.method === 'none' ? undefined : reference.samples) });
  }
  await classifier.release();

  // Speed: the same request (one of the planned ones, DEFAULT_EVAL_BATCH images) per variant, interleaved.
  const times = variants.map(() => [] as number[]);
  const runs = opts.timingRuns ?? 5;
  for (let r = 0; r <= runs; r++) {
    // Each round starts at another variant, so that no method always runs first (or after the same one).
    for (let k = 0; k < variants.length; k++) {
      const i = (k + r) % variants.length;
      const v = variants[i]!;
      const t0 = performance.now();
      await engine.generate({ ...setting(v), ...requestConditioning(engine, requests[r % requests.length]!), seed: 1000 + r, n: DEFAULT_EVAL_BATCH });
      if (r > 0) times[i]!.push(performance.now() - t0); // round 0 warms every session up
    }
  }
  const baseMs = median(times[0]!);
  const round = (x: number) => Number(x.toFixed(4));
  const rows: CacheBenchRow[] = variants.map((v, i) => {
    const { set, scores } = quality[i]!;
    // Fewer steps: the MAC ratio is the ratio of steps.
    const macSpeedup = v.method === 'fewer-steps' ? steps / v.steps : set.macSpeedup;
    return {
      method: v.method, setting: v.setting, cur: round(set.cur), macSpeedup: round(macSpeedup), measuredSpeedup: round(baseMs / median(times[i]!)),
      fid: round(scores.fid), fidFloor: round(scores.fidFloor), isScore: round(scores.isScore), accuracy: round(scores.accuracy),
      ...(scores.positionAccuracy === undefined ? {} : { positionAccuracy: round(scores.positionAccuracy), sizeAccuracy: round(scores.sizeAccuracy!) }),
      psnr: scores.psnr === undefined ? null : round(scores.psnr), ssim: scores.ssim === undefined ? null : round(scores.ssim),
    };
  });
  const result: CacheBenchResult = {
    model: engine.id, steps, sampler: d.sampler, cfg: d.cfg, n: opts.n, machine: engine.machine, rows, training,
  };
  if (opts.plotPath) {
    await writeFile(opts.plotPath, await qualitySpeedPlot(rows, `${engine.id}, ${d.sampler} T=${steps}, CFG ${d.cfg}, n=${opts.n}`));
  }
  return result;
}
