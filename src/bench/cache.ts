import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { calibrateTeaCache } from '../cache/teacache-calibrate.js';
import { TEACACHE_FILE } from '../cache/teacache.js';
import type { RouterArtifact } from '../cache/router.js';
import { Engine } from '../engine/engine.js';
import { CLASSIFIER_DIR, DigitClassifier } from '../eval/classifier.js';
import { checkEvaluable, DEFAULT_EVAL_BATCH, generateSamples, planRequests, requestConditioning, scoreSamples, type SampleSet, type Scores } from '../eval/run.js';
import { Progress } from '../util/progress.js';
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

/** A quality vs measured speedup scatter plot, as SVG rendered to PNG. */
async function plot(rows: CacheBenchRow[], title: string): Promise<Buffer> {
  const W = 720, H = 480, m = 60;
  const xs = rows.map((r) => r.measuredSpeedup);
  const ys = rows.map((r) => r.fid);
  const [x0, x1] = [Math.min(1, ...xs) * 0.95, Math.max(...xs) * 1.05];
  const [y0, y1] = [0, Math.max(...ys) * 1.1 || 1];
  const px = (x: number) => m + ((x - x0) / (x1 - x0)) * (W - 2 * m);
  const py = (y: number) => H - m - ((y - y0) / (y1 - y0)) * (H - 2 * m);
  const colors: Record<string, string> = { none: '#000', harmonica: '#d62728', ltc: '#1f77b4', fora: '#2ca02c', 'delta-dit': '#9467bd', teacache: '#8c564b', 'first-block': '#e377c2', 'fewer-steps': '#7f7f7f' };
  const points = rows.map((r) => `<circle cx="${px(r.measuredSpeedup)}" cy="${py(r.fid)}" r="5" fill="${colors[r.method]}"/><text x="${px(r.measuredSpeedup) + 7}" y="${py(r.fid) - 4}" font-size="11" fill="${colors[r.method]}">${r.method} ${r.setting}</text>`).join('');
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}"><rect width="100%" height="100%" fill="#fff"/>
<text x="${W / 2}" y="24" text-anchor="middle" font-size="15">${title}</text>
<line x1="${m}" y1="${H - m}" x2="${W - m}" y2="${H - m}" stroke="#000"/><line x1="${m}" y1="${m}" x2="${m}" y2="${H - m}" stroke="#000"/>
<text x="${W / 2}" y="${H - 15}" text-anchor="middle" font-size="13">measured speedup (x)</text>
<text x="18" y="${H / 2}" text-anchor="middle" font-size="13" transform="rotate(-90 18 ${H / 2})">FID-style (lower is better)</text>
<text x="${m}" y="${H - m + 16}" font-size="11">${x0.toFixed(2)}</text><text x="${W - m}" y="${H - m + 16}" font-size="11" text-anchor="end">${x1.toFixed(2)}</text>
<text x="${m - 5}" y="${H - m}" font-size="11" text-anchor="end">${y0}</text><text x="${m - 5}" y="${m + 4}" font-size="11" text-anchor="end">${y1.toFixed(1)}</text>
${points}</svg>`;
  return sharp(Buffer.from(svg)).png().toBuffer();
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
  if (!existsSync(join(engine.pkg.dir, TEACACHE_FILE))) {
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
    await writeFile(opts.plotPath, await plot(rows, `${engine.id}, ${d.sampler} T=${steps}, CFG ${d.cfg}, n=${opts.n}`));
  }
  return result;
}
