/**
 * The evaluation suite for the MNIST models: generate n samples, score them with our digit
 * classifier (class accuracy, FID on its features against the held-out digits, Inception
 * Score on its probabilities) and, for a cache policy, compare against the same seeds
 * generated without cache (PSNR, SSIM, cache usage ratio). Text models are asked for a digit
 * at a size and place; their samples are also scored for size and place (the CLIP-score
 * stand-in), and the digit is cropped back into the classifier's frame before it is read.
 */
import { captionFor, cropDigit, type DigitSize, type Layout, measureLayout, PLACES, renderDigit } from '../data/captions.js';
import { type Digit, PADDED_SIDE, splitMnist } from '../data/mnist.js';
import { Engine, LIMITS } from '../engine/engine.js';
import type { Device } from '../onnx/session.js';
import { Rng } from '../tensor/rng.js';
import type { HostTensor } from '../tensor/tensor.js';
import { HarmonicaError } from '../util/errors.js';
import { Progress } from '../util/progress.js';
import { CLASSES, CLASSIFIER_DIR, DigitClassifier, digitImages, FEATURES } from './classifier.js';
import { accuracy, frechetBootstrapHalfWidth, frechetDistance, inceptionScore, psnr, ssim } from './metrics.js';

const PIXELS = PADDED_SIDE * PADDED_SIDE;

export interface EvalOptions {
  /** Bundled model name or package directory (1x32x32 images, class- or text-conditional). */
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
  /** Half-width of fid's 95% bootstrap interval (only when asked for: it costs 100 more distances). */
  fidCi?: number;
  isScore: number;
  /** Text models: fraction of samples whose digit is at the place / of the size the caption asked for. */
  positionAccuracy?: number;
  sizeAccuracy?: number;
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
  /** The digit asked for: a class label, or for text models the digit of the caption. */
  classLabel: number;
  n: number;
  seed: number;
  /** Text models: the caption, and the size and place it states. */
  prompt?: string;
  layout?: Layout;
}

const SIZES: DigitSize[] = ['small', 'large'];

export const DEFAULT_EVAL_BATCH = Math.min(10, LIMITS.maxImages);

/**
 * Splits n samples into generation requests: sample i asks for class i mod 10, so the classes
 * are balanced; each class's samples go out in requests of at most `batch` images. Request
 * seeds derive from `seed`, the class and the request's index within the class, and the
 * requests alternate between classes (round-robin) so that partial progress stays balanced.
 * With `captions`, each request also gets a size and place (cycling through all 18, offset
 * by the class) and a caption that states them.
 */
export function planRequests(n: number, batch: number, seed: number, captions = false): EvalRequest[] {
  if (!Number.isInteger(n) || n < 2) throw new HarmonicaError('BAD_INPUT', `n must be an integer >= 2 (a covariance needs 2 samples), got ${n}`);
  if (!Number.isInteger(batch) || batch < 1 || batch > LIMITS.maxImages) throw new HarmonicaError('BAD_INPUT', `batch must be an integer in 1..${LIMITS.maxImages}, got ${batch}`);
  const root = new Rng(seed);
  const perClass = Array.from({ length: CLASSES }, (_, c) => Math.floor(n / CLASSES) + (c < n % CLASSES ? 1 : 0));
  const rounds = Math.ceil(Math.max(...perClass) / batch);
  const requests: EvalRequest[] = [];
  for (let k = 0; k < rounds; k++) {
    for (let c = 0; c < CLASSES; c++) {
      const count = Math.min(batch, perClass[c]! - k * batch);
      if (count <= 0) continue;
      const rng = root.fork(`class-${c}/request-${k}`);
      const request: EvalRequest = { classLabel: c, n: count, seed: rng.nextUint32() };
      if (captions) {
        const combo = (k + c) % (2 * PLACES.length);
        request.layout = { label: c, size: SIZES[combo % 2]!, place: Math.floor(combo / 2) };
        request.prompt = captionFor(request.layout, rng);
      }
      requests.push(request);
    }
  }
  return requests;
}

/** Samples of one setting over the planned requests, with the cache statistics. */
export interface SampleSet {
  samples: Float32Array;
  targets: number[];
  /** Text models: the size and place each sample's caption asked for. */
  layouts?: Layout[];
  /** Means over the requests. */
  cur: number;
  macSpeedup: number;
}

/** Checks that an engine's model makes images the digit classifier can read. */
export function checkEvaluable(engine: Engine): void {
  const numClasses = (engine.pkg.manifest.config as { numClasses?: number }).numClasses;
  if (engine.model.conditioning === 'class' && numClasses !== CLASSES) {
    throw new HarmonicaError('BAD_INPUT', `${engine.id}: evaluation needs a model of the ${CLASSES} MNIST digits, this one has ${numClasses} classes`);
  }
  const [c, h, w] = engine.model.latentShape;
  // Latent models are decoded by a VAE; what the classifier needs is the decoded image.
  if (!engine.pkg.manifest.vae && (c !== 1 || h !== PADDED_SIDE || w !== PADDED_SIDE)) {
    throw new HarmonicaError('BAD_INPUT', `${engine.id}: evaluation needs 1x${PADDED_SIDE}x${PADDED_SIDE} images, the model makes ${c}x${h}x${w}`);
  }
}

/** The conditioning of a request: its class, or its caption for text models. */
export function requestConditioning(engine: Engine, r: EvalRequest): { classLabel: number } | { prompt: string } {
  if (engine.model.conditioning !== 'text') return { classLabel: r.classLabel };
  if (r.prompt === undefined) throw new HarmonicaError('BAD_INPUT', `${engine.id} is a text model: plan its requests with captions`);
  return { prompt: r.prompt };
}

/** Generates the planned requests with one setting. */
export async function generateSamples(engine: Engine, requests: EvalRequest[], setting: { steps: number; sampler: string; cfg: number; cache: string }, progress?: Progress): Promise<SampleSet> {
  const n = requests.reduce((s, r) => s + r.n, 0);
  const samples = new Float32Array(n * PIXELS);
  const targets: number[] = [];
  const layouts: Layout[] = [];
  let cur = 0;
  let macSpeedup = 0;
  let at = 0;
  for (const r of requests) {
    const gen = await engine.generate({ ...setting, ...requestConditioning(engine, r), seed: r.seed, n: r.n });
    gen.images.forEach((img, i) => {
      if (img.shape.join() !== `1,${PADDED_SIDE},${PADDED_SIDE}`) throw new HarmonicaError('BAD_INPUT', `${engine.id}: generated images are [${img.shape}], evaluation needs [1,${PADDED_SIDE},${PADDED_SIDE}]`);
      samples.set(img.data as Float32Array, (at + i) * PIXELS);
    });
    for (let i = 0; i < r.n; i++) {
      targets.push(r.classLabel);
      if (r.layout) layouts.push(r.layout);
    }
    cur += gen.report.cur;
    macSpeedup += gen.report.macSpeedup;
    at += r.n;
    progress?.tick(r.n);
  }
  return { samples, targets, ...(layouts.length ? { layouts } : {}), cur: cur / requests.length, macSpeedup: macSpeedup / requests.length };
}

/**
 * Where each canvas's digit is (measured), and the digits cropped back into the classifier's
 * frame from there: a digit drawn in the wrong place is still read as the digit it is.
 */
export function readCanvases(canvases: Float32Array, n: number): { layouts: Omit<Layout, 'label'>[]; digits: Float32Array } {
  const digits = new Float32Array(n * PIXELS);
  const layouts = Array.from({ length: n }, (_, i) => {
    const { size, place } = measureLayout(canvases.subarray(i * PIXELS, (i + 1) * PIXELS));
    cropDigit(canvases.subarray(i * PIXELS, (i + 1) * PIXELS), size, place, digits, i * PIXELS);
    return { size, place };
  });
  return { layouts, digits };
}

/** Classifier-based scores of samples, and their fidelity to a reference of the same seeds. */
export async function scoreSamples(set: SampleSet, classifier: DigitClassifier, seed: number, reference?: Float32Array, withFidCi = false): Promise<Scores> {
  const n = set.targets.length;
  // Real features: the held-out digits, and for the floor n train digits picked by the seed,
  // drawn and read back like the samples (for text models: rendered at the asked layouts).
  const { train, heldOut } = splitMnist();
  const floorDigits = new Rng(seed).fork('fid-floor').shuffle(train.map((_, i) => i)).slice(0, Math.min(n, train.length)).map((i) => train[i]!);
  const read = set.layouts ? readCanvases(set.samples, n) : undefined;
  const generated = await classifier.classify(read?.digits ?? set.samples, n);
  const realFeatures = (await classifier.classify(digitImages(heldOut).images, heldOut.length)).features;
  const floorImages = set.layouts ? readCanvases(renderAt(floorDigits, set.layouts), floorDigits.length).digits : digitImages(floorDigits).images;
  const floorFeatures = (await classifier.classify(floorImages, floorDigits.length)).features;
  const scores: Scores = {
    accuracy: accuracy(generated.labels, set.targets),
    fid: frechetDistance(generated.features, realFeatures, FEATURES),
    fidFloor: frechetDistance(floorFeatures, realFeatures, FEATURES),
    isScore: inceptionScore(generated.probs, n, CLASSES),
  };
  if (withFidCi) {
    const rng = new Rng(seed).fork('fid-bootstrap');
    scores.fidCi = frechetBootstrapHalfWidth(generated.features, realFeatures, FEATURES, (k) => rng.int(k));
  }
  if (read && set.layouts) {
    scores.positionAccuracy = read.layouts.filter((l, i) => l.place === set.layouts![i]!.place).length / n;
    scores.sizeAccuracy = read.layouts.filter((l, i) => l.size === set.layouts![i]!.size).length / n;
  }
  if (reference) {
    scores.psnr = psnr(set.samples, reference, 2);
    scores.ssim = ssim(set.samples, reference, PADDED_SIDE, 2);
  }
  return scores;
}

/** Digits drawn on canvases at the given layouts (cycled). */
function renderAt(digits: readonly Digit[], layouts: readonly Layout[]): Float32Array {
  const out = new Float32Array(digits.length * PIXELS);
  digits.forEach((d, i) => {
    const l = layouts[i % layouts.length]!;
    renderDigit(d, l.size, l.place, out, i * PIXELS);
  });
  return out;
}

export async function evaluate(opts: EvalOptions): Promise<EvalResult> {
  const started = performance.now();
  const seed = opts.seed ?? 0;
  const cache = opts.cache ?? 'none';
  const cached = cache !== 'none';
  const engine = await Engine.open(opts.model, { threads: opts.threads, device: opts.device });
  checkEvaluable(engine);
  const text = engine.model.conditioning === 'text';
  const requests = planRequests(opts.n, opts.batch ?? DEFAULT_EVAL_BATCH, seed, text);
  // Validate the settings once, up front, and report what the defaults resolved to.
  const resolved = engine.resolve({ ...requestConditioning(engine, requests[0]!), steps: opts.steps, sampler: opts.sampler, cfg: opts.cfg, cache, seed: 0, n: 1 });
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
