/**
 * The evaluation suite for class-conditional MNIST models: generate n samples, score them
 * with our digit classifier (class accuracy, FID on its features against the held-out digits,
 * Inception Score on its probabilities) and, for a cache policy, compare against the same
 * seeds generated without cache (PSNR, SSIM, cache usage ratio).
 */
import { PADDED_SIDE, splitMnist } from '../data/mnist.js';
import { Engine, LIMITS } from '../engine/engine.js';
import type { Device } from '../onnx/session.js';
import { Rng } from '../tensor/rng.js';
import type { HostTensor } from '../tensor/tensor.js';
import { HarmonicaError } from '../util/errors.js';
import { Progress } from '../util/progress.js';
import { CLASSES, CLASSIFIER_DIR, DigitClassifier, digitImages, FEATURES } from './classifier.js';
import { accuracy, frechetDistance, inceptionScore, psnr, ssim } from './metrics.js';

const PIXELS = PADDED_SIDE * PADDED_SIDE;

export interface EvalOptions {
  /** Bundled model name or package directory (class-conditional, 1x32x32 images). */
  model: string;
  /** Defaults: the model's. */
  steps?: number;
  sampler?: string;
  cfg?: number;
  /** Cache policy spec; absent or 'none' evaluates uncached generation only. */
  cache?: string;
  /** Number of samples. */
  n: number;
  seed?: number;
  /** Images per generation request (at most the engine's limit). */
  batch?: number;
  /** Classifier package directory (default: the bundled models/classifier). */
  classifier?: string;
  threads?: number;
  device?: Device;
}

export interface Scores {
  /** Fraction of samples the classifier labels as the requested class. */
  accuracy: number;
  /** Fréchet distance of the samples' classifier features to the held-out digits'. */
  fid: number;
  /** The same distance for n real train digits: what a perfect model would score at this n. */
  fidFloor: number;
  isScore: number;
  /** Cached vs uncached samples of the same seeds (only with a cache policy). */
  psnr?: number;
  ssim?: number;
}

export interface EvalResult extends Scores {
  model: string;
  steps: number;
  sampler: string;
  cfg: number;
  cache: string;
  n: number;
  seed: number;
  /** Mean cache usage ratio over the requests (only with a cache policy). */
  cur?: number;
  /** Mean theoretical speedup over the requests (only with a cache policy). */
  macSpeedup?: number;
  seconds: number;
}

export interface EvalRequest {
  classLabel: number;
  n: number;
  seed: number;
}

export const DEFAULT_EVAL_BATCH = Math.min(10, LIMITS.maxImages);

/**
 * Splits n samples into generation requests: sample i asks for class i mod 10, so the classes
 * are balanced; each class's samples go out in requests of at most `batch` images. Request
 * seeds derive from `seed`, the class and the request's index within the class, and the
 * requests alternate between classes (round-robin) so that partial progress stays balanced.
 */
export function planRequests(n: number, batch: number, seed: number): EvalRequest[] {
  if (!Number.isInteger(n) || n < 2) throw new HarmonicaError('BAD_INPUT', `n must be an integer >= 2 (a covariance needs 2 samples), got ${n}`);
  if (!Number.isInteger(batch) || batch < 1 || batch > LIMITS.maxImages) throw new HarmonicaError('BAD_INPUT', `batch must be an integer in 1..${LIMITS.maxImages}, got ${batch}`);
  const root = new Rng(seed);
  const perClass = Array.from({ length: CLASSES }, (_, c) => Math.floor(n / CLASSES) + (c < n % CLASSES ? 1 : 0));
  const rounds = Math.ceil(Math.max(...perClass) / batch);
  const requests: EvalRequest[] = [];
  for (let k = 0; k < rounds; k++) {
    for (let c = 0; c < CLASSES; c++) {
      const count = Math.min(batch, perClass[c]! - k * batch);
      if (count > 0) requests.push({ classLabel: c, n: count, seed: root.fork(`class-${c}/request-${k}`).nextUint32() });
    }
  }
  return requests;
}

/** Samples of one setting over the planned requests, with the cache statistics. */
export interface SampleSet {
  samples: Float32Array;
  targets: number[];
  /** Means over the requests. */
  cur: number;
  macSpeedup: number;
}

/** Checks that an engine's model can be evaluated with the digit classifier. */
export function checkEvaluable(engine: Engine): void {
  const numClasses = (engine.pkg.manifest.config as { numClasses?: number }).numClasses;
  if (engine.model.conditioning === 'text' || numClasses !== CLASSES) {
    throw new HarmonicaError('BAD_INPUT', `${engine.id}: evaluation needs a class-conditional model of the ${CLASSES} MNIST digits`);
  }
  const [c, h, w] = engine.model.latentShape;
  // Latent models are decoded by a VAE; what the classifier needs is the decoded image.
  if (!engine.pkg.manifest.vae && (c !== 1 || h !== PADDED_SIDE || w !== PADDED_SIDE)) {
    throw new HarmonicaError('BAD_INPUT', `${engine.id}: evaluation needs 1x${PADDED_SIDE}x${PADDED_SIDE} images, the model makes ${c}x${h}x${w}`);
  }
}

/** Generates the planned requests with one setting. */
export async function generateSamples(engine: Engine, requests: EvalRequest[], setting: { steps: number; sampler: string; cfg: number; cache: string }, progress?: Progress): Promise<SampleSet> {
  const n = requests.reduce((s, r) => s + r.n, 0);
  const samples = new Float32Array(n * PIXELS);
  const targets: number[] = [];
  let cur = 0;
  let macSpeedup = 0;
  let at = 0;
  for (const r of requests) {
    const gen = await engine.generate({ ...setting, classLabel: r.classLabel, seed: r.seed, n: r.n });
    gen.images.forEach((img, i) => {
      if (img.shape.join() !== `1,${PADDED_SIDE},${PADDED_SIDE}`) throw new HarmonicaError('BAD_INPUT', `${engine.id}: generated images are [${img.shape}], evaluation needs [1,${PADDED_SIDE},${PADDED_SIDE}]`);
      samples.set(img.data as Float32Array, (at + i) * PIXELS);
    });
    for (let i = 0; i < r.n; i++) targets.push(r.classLabel);
    cur += gen.report.cur;
    macSpeedup += gen.report.macSpeedup;
    at += r.n;
    progress?.tick(r.n);
  }
  return { samples, targets, cur: cur / requests.length, macSpeedup: macSpeedup / requests.length };
}

/** Classifier-based scores of samples, and their fidelity to a reference of the same seeds. */
export async function scoreSamples(set: SampleSet, classifier: DigitClassifier, seed: number, reference?: Float32Array): Promise<Scores> {
  const n = set.targets.length;
  // Real features: the held-out digits, and for the floor n train digits picked by the seed.
  const { train, heldOut } = splitMnist();
  const floorDigits = new Rng(seed).fork('fid-floor').shuffle(train.map((_, i) => i)).slice(0, Math.min(n, train.length)).map((i) => train[i]!);
  const generated = await classifier.classify(set.samples, n);
  const realFeatures = (await classifier.classify(digitImages(heldOut).images, heldOut.length)).features;
  const floorFeatures = (await classifier.classify(digitImages(floorDigits).images, floorDigits.length)).features;
  const scores: Scores = {
    accuracy: accuracy(generated.labels, set.targets),
    fid: frechetDistance(generated.features, realFeatures, FEATURES),
    fidFloor: frechetDistance(floorFeatures, realFeatures, FEATURES),
    isScore: inceptionScore(generated.probs, n, CLASSES),
  };
  if (reference) {
    scores.psnr = psnr(set.samples, reference, 2);
    scores.ssim = ssim(set.samples, reference, PADDED_SIDE, 2);
  }
  return scores;
}

export async function evaluate(opts: EvalOptions): Promise<EvalResult> {
  const started = performance.now();
  const seed = opts.seed ?? 0;
  const cache = opts.cache ?? 'none';
  const cached = cache !== 'none';
  const engine = await Engine.open(opts.model, { threads: opts.threads, device: opts.device });
  checkEvaluable(engine);
  const requests = planRequests(opts.n, opts.batch ?? DEFAULT_EVAL_BATCH, seed);
  // Validate the settings once, up front, and report what the defaults resolved to.
  const resolved = engine.resolve({ classLabel: 0, steps: opts.steps, sampler: opts.sampler, cfg: opts.cfg, cache, seed: 0, n: 1 });
  const classifier = await DigitClassifier.load(opts.classifier ?? CLASSIFIER_DIR, { threads: opts.threads, device: opts.device });
  const progress = new Progress(`evaluate ${engine.id}`, opts.n * (cached ? 2 : 1), 'images');
  const setting = { steps: resolved.steps, sampler: resolved.sampler, cfg: resolved.cfg };
  const set = await generateSamples(engine, requests, { ...setting, cache }, progress);
  const reference = cached ? (await generateSamples(engine, requests, { ...setting, cache: 'none' }, progress)).samples : undefined;
  const scores = await scoreSamples(set, classifier, seed, reference);
  await classifier.release();
  return {
    model: engine.id, steps: resolved.steps, sampler: resolved.sampler, cfg: resolved.cfg, cache, n: opts.n, seed,
    ...scores, ...(cached ? { cur: set.cur, macSpeedup: set.macSpeedup } : {}),
    seconds: (performance.now() - started) / 1000,
  };
}
