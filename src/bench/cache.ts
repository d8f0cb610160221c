import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { calibrateTeaCache } from '../cache/teacache-calibrate.js';
import { loadTeaCacheCalibration } from '../cache/teacache.js';
import type { RouterArtifact } from '../cache/router.js';
import { Engine } from '../engine/engine.js';
import { CLASSIFIER_DIR, DigitClassifier } from '../eval/classifier.js';
import { checkEvaluable, DEFAULT_EVAL_BATCH, generateSamples, planRequests, requestConditioning, scoreSamples, type SampleSet, type Scores } from '../eval/run.js';
import { Progress } from '../util/progress.js';
import { frontierPlot } from './plot.js';
import { median } from './timing.js';
import { baselineVariants, dominance, frontierVariants, type CacheMethod, type DominanceRow, type Variant } from './frontier.js';

export type { CacheMethod } from './frontier.js';

export interface CacheBenchRow {
  method: CacheMethod;
  setting: string;
  /** Sampling steps of this row (fewer steps, or a router trained for fewer steps). */
  steps: number;
  cur: number;
  /** MAC ratio against the uncached T-step run. */
  macSpeedup: number;
  /** Median uncached T-step time / median time of this row, over interleaved rounds. */
  measuredSpeedup: number;
  /** Lowest and highest per-round ratio (the spread of measuredSpeedup). */
  measuredRange: [number, number];
  fid: number;
  /** Half-width of the FID-style 95% bootstrap interval. */
  fidCi: number;
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
  /** With --frontier: each baseline point from 1.3x to 3x and whether a HarmoniCa row dominates it. */
  dominance?: DominanceRow[];
}

export interface BenchCacheOptions {
  model: string;
  steps?: number;
  n: number;
  routers: string[];
  /** Each router also at these thresholds (tau is a dial that needs no retraining). */
  taus?: number[];
  /** The frontier's operating points (frontierVariants) instead of a few per method. */
  frontier?: boolean;
  /** Guidance scale for every row (default: the model's). */
  cfg?: number;
  timingRuns?: number;
  seed?: number;
  threads?: number;
  plotPath?: string;
}

/** The routers a package ships for `sampler` at `steps` or fewer: the frontier's default. */
async function packageRouters(dir: string, steps: number, sampler: string): Promise<string[]> {
  const folder = join(dir, 'routers');
  const names = (await readdir(folder).catch(() => [] as string[])).filter((n) => n.endsWith('.json')).sort();
  const paths: string[] = [];
  for (const name of names) {
    const a = JSON.parse(await readFile(join(folder, name), 'utf8')) as RouterArtifact;
    if (a.steps <= steps && a.sampler === sampler) paths.push(join(folder, name));
  }
  return paths;
}

/**
 * Every method side by side on one model: sample quality (classifier FID/IS/accuracy),
 * fidelity to the uncached samples of the same seeds (PSNR/SSIM), CUR, MAC speedup and the
 * measured speedup from interleaved timed runs, all against the uncached T-step run.
 */
export async function benchCache(opts: BenchCacheOptions): Promise<CacheBenchResult> {
  const engine = await Engine.open(opts.model, { threads: opts.threads });
  checkEvaluable(engine);
  const d = engine.pkg.manifest.defaults;
  const steps = opts.steps ?? d.steps;
  const cfg = opts.cfg ?? d.cfg;
  const seed = opts.seed ?? 0;
  const depth = Math.max(...engine.model.slots.map((s) => s.block)) + 1;
  try {
    loadTeaCacheCalibration({ model: { id: engine.id, sha256: engine.pkg.sha256 }, modelDir: engine.pkg.dir });
  } catch {
    // Missing or fitted on other weights: fit it here, as `calibrate teacache` would.
    await calibrateTeaCache(engine, { steps, sampler: d.sampler, cfg: d.cfg, trajectories: 16, seed: 1, degree: 4 });
  }
  const variants = opts.frontier ? frontierVariants(steps, depth) : baselineVariants(steps, depth);
  const training: TrainingRow[] = [];
  for (const path of opts.routers.length || !opts.frontier ? opts.routers : await packageRouters(engine.pkg.dir, steps, d.sampler)) {
    const a = JSON.parse(await readFile(path, 'utf8')) as RouterArtifact;
    const t = a.training ?? {};
    for (const tau of opts.taus?.length ? opts.taus : [a.tau]) {
      const age = a.maxCacheAge === undefined ? '' : `,age=${a.maxCacheAge}`;
      variants.push({ method: a.method, setting: `T=${a.steps},beta=${t.beta ?? '?'}${age},tau=${tau}`, steps: a.steps, cache: `router:${path}@${tau}` });
    }
    training.push({ method: a.method, seconds: Number(t.seconds ?? NaN), peakRssMb: typeof t.peakRssMb === 'number' ? t.peakRssMb : null, updates: Number(t.updates ?? NaN) });
  }

  const requests = planRequests(opts.n, DEFAULT_EVAL_BATCH, seed, engine.model.conditioning === 'text');
  const classifier = await DigitClassifier.load(CLASSIFIER_DIR, { threads: opts.threads });
  const progress = new Progress(`bench cache ${engine.id}`, opts.n * variants.length, 'images');
  const setting = (v: Variant) => ({ steps: v.steps, sampler: d.sampler, cfg, cache: v.cache });
  const reference = await generateSamples(engine, requests, setting(variants[0]!), progress);
  const quality: { set: SampleSet; scores: Scores }[] = [];
  for (const v of variants) {
    const set = v.method === 'none' ? reference : await generateSamples(engine, requests, setting(v), progress);
    quality.push({ set, scores: await scoreSamples(set, classifier, seed, v.method === 'none' ? undefined : reference.samples, true) });
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
    // Against the T-step run: the executor's MAC ratio at v.steps times the ratio of steps.
    const macSpeedup = set.macSpeedup * (steps / v.steps);
    const ratios = times[i]!.map((ms, r) => times[0]![r]! / ms);
    return {
      method: v.method, setting: v.setting, steps: v.steps, cur: round(set.cur), macSpeedup: round(macSpeedup), measuredSpeedup: round(baseMs / median(times[i]!)),
      measuredRange: [round(Math.min(...ratios)), round(Math.max(...ratios))],
      fid: round(scores.fid), fidCi: round(scores.fidCi!), fidFloor: round(scores.fidFloor), isScore: round(scores.isScore), accuracy: round(scores.accuracy),
      ...(scores.positionAccuracy === undefined ? {} : { positionAccuracy: round(scores.positionAccuracy), sizeAccuracy: round(scores.sizeAccuracy!) }),
      psnr: scores.psnr === undefined ? null : round(scores.psnr), ssim: scores.ssim === undefined ? null : round(scores.ssim),
    };
  });
  const result: CacheBenchResult = {
    model: engine.id, steps, sampler: d.sampler, cfg, n: opts.n, machine: engine.machine, rows, training,
    ...(opts.frontier ? { dominance: dominance(rows) } : {}),
  };
  if (opts.plotPath) {
    await writeFile(opts.plotPath, await frontierPlot(rows, `${engine.id}, ${d.sampler} T=${steps}, CFG ${cfg}, n=${opts.n}`));
  }
  return result;
}
