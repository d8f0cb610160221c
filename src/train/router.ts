import { buildPlainStep, stepNames } from '../cache/step-graph.js';
import { ROUTER_FORMAT, type RouterArtifact } from '../cache/router.js';
import { dropLearnedSigma, duplicateForCfg, splitGuided } from '../diffusion/cfg.js';
import { createSampler, initialNoise, type Sampler } from '../diffusion/sampler.js';
import type { Engine } from '../engine/engine.js';
import { Session, type SessionConfig } from '../onnx/session.js';
import { Rng } from '../tensor/rng.js';
import { tensor, type HostTensor } from '../tensor/tensor.js';
import { Progress } from '../util/progress.js';
import { HarmonicaError } from '../util/errors.js';
import { captionFor, randomCondition, randomLayout, renderDigit } from '../data/captions.js';
import { DIGIT_CLASSES, splitMnist, toModelImage, type Digit } from '../data/mnist.js';
import { alphasCumprod, linearBetas } from '../diffusion/schedule.js';
import { AdamW } from './optim.js';
import { buildRouterStep, routerNames } from './router-graph.js';

/** HarmoniCa reference hyperparameters (section 3 of ../shared/spec/HARMONICA.md). */
export const HARMONICA_DEFAULTS = {
  lr: 0.01,
  beta: 7e-8,
  tauTrain: 0.1,
  tau: 0.1,
  refresh: 500,
  /** First row: everything computes (the cache is empty). */
  firstRowLogit: 5,
  clamp: 5,
};

export interface RouterTrainOptions {
  steps: number;
  sampler: string;
  cfg: number;
  beta: number;
  lr: number;
  updates: number;
  /** Noises per trajectory (each duplicated for guidance). */
  batch: number;
  tauTrain: number;
  /** Inference threshold written into the artifact. */
  tau: number;
  lambdaMode: 'paper' | 'incremental';
  lambdaNorm: 'none' | 'mean';
  /** Recompute lambda every C updates. */
  refresh: number;
  seed: number;
  session?: SessionConfig;
  progress?: boolean;
}

interface Trajectory {
  /** Current sample x_t of the n noises. */
  x: Float32Array;
  conditions: Record<string, HostTensor>;
  caches: Record<string, HostTensor>;
}

/** A trajectory's state before some step, to branch from. */
interface Branch extends Trajectory {
  sampler: Sampler;
}

const sigmoid = (v: number) => 1 / (1 + Math.exp(-v));

/**
 * HarmoniCa router training: Step-wise Denoising Training along whole trajectories (the
 * student's cache and input come from its own earlier steps, as at inference) weighted by
 * the Image Error Proxy Objective lambda(t). Image-free: only noise and conditions.
 */
export class RouterTrainer {
  readonly logits: number[][];
  private readonly adam: AdamW;
  private lambda: number[];
  private method: 'harmonica' | 'ltc' = 'harmonica';
  private readonly rows: number;
  private readonly latent: number;

  private constructor(
    private readonly engine: Engine,
    private readonly opts: RouterTrainOptions,
    private readonly teacher: Session,
    private readonly student: Session,
    private readonly forward: Session,
  ) {
    const { steps } = opts;
    const S = engine.model.slots.length;
    const rng = new Rng(opts.seed).fork('router-init');
    this.logits = Array.from({ length: steps }, (_, i) => Array.from({ length: S }, () => (i === 0 ? HARMONICA_DEFAULTS.firstRowLogit : rng.normal())));
    // One AdamW over all of P, as the reference trains the router parameter.
    this.adam = new AdamW(new Map([['P', Float32Array.from(this.logits.flat())]]), { lr: opts.lr, weightDecay: 0 });
    this.lambda = new Array<number>(steps).fill(1);
    this.rows = opts.cfg > 1 ? 2 * opts.batch : opts.batch;
    const [c, h, w] = engine.model.latentShape;
    this.latent = c * h * w;
  }

  static async create(engine: Engine, opts: RouterTrainOptions): Promise<RouterTrainer> {
    const rows = opts.cfg > 1 ? 2 * opts.batch : opts.batch;
    const cfg = { threads: undefined, ...opts.session };
    const [teacher, student, forward] = await Promise.all([
      Session.create(buildPlainStep(engine.model, engine.weights, rows).graph, cfg),
      Session.create(buildRouterStep(engine.model, engine.weights, rows).graph, cfg),
      Session.create(buildRouterStep(engine.model, engine.weights, rows, false).graph, cfg),
    ]);
    return new RouterTrainer(engine, opts, teacher, student, forward);
  }

  private sampler(): Sampler {
    return createSampler(this.opts.sampler, { steps: this.opts.steps });
  }

  /** The model output -> the guided epsilon for the n noises. */
  private epsilon(out: HostTensor): Float32Array {
    const [c, h, w] = this.engine.model.latentShape;
    const o = out.data as Float32Array;
    return this.opts.cfg > 1 ? splitGuided(o, this.opts.batch, this.engine.model.outChannels, c, h * w, this.opts.cfg) : dropLearnedSigma(o, this.opts.batch, this.engine.model.outChannels, c, h * w);
  }

  private feeds(traj: Trajectory, sampler: Sampler, step: number): Record<string, HostTensor> {
    const [c, h, w] = this.engine.model.latentShape;
    const input = this.opts.cfg > 1 ? duplicateForCfg(traj.x) : traj.x;
    return {
      ...traj.conditions,
      x: tensor('float32', [this.rows, c, h, w], input),
      t: tensor('float32', [this.rows], new Array<number>(this.rows).fill(sampler.timesteps[step]!)),
    };
  }

  /** A fresh trajectory: noise, random conditions, and step 0 computed in full (fills the cache). */
  private async start(rng: Rng, sampler: Sampler): Promise<Trajectory> {
    const conditions = await this.randomConditions(rng);
    const traj: Trajectory = { x: initialNoise(this.opts.batch * this.latent, rng), conditions, caches: {} };
    await this.softStep(traj, sampler, 0, this.logits[0]!.map(() => 40));
    return traj;
  }

  /** Conditions are per request in the engine; one random condition per trajectory keeps that shape. */
  private async randomConditions(rng: Rng): Promise<Record<string, HostTensor>> {
    const classes = this.engine.pkg.manifest.classes?.length ?? 0;
    return (await this.engine.conditioning.build({ ...randomCondition(classes, rng), n: this.opts.batch }, this.rows)).feeds;
  }

  /** A forward-only step with the soft router row `logits`; updates cache and x. */
  private async softStep(traj: Trajectory, sampler: Sampler, step: number, logits: readonly number[], overwriteAll = true): Promise<void> {
    const feeds = { ...this.feeds(traj, sampler, step), ...this.cacheFeeds(traj), [routerNames.logits]: tensor('float32', [logits.length], logits) };
    const out = await this.forward.run(feeds);
    this.updateCache(traj, out, logits, overwriteAll);
    traj.x = sampler.step(step, traj.x, this.epsilon(out[stepNames.out]!));
  }

  private cacheFeeds(traj: Trajectory): Record<string, HostTensor> {
    const feeds: Record<string, HostTensor> = {};
    for (const s of this.engine.model.slots) feeds[stepNames.cache(s.name)] = traj.caches[s.name] ?? tensor('float32', [this.rows, ...this.cacheShape()]);
    return feeds;
  }

  private cacheShape(): number[] {
    const [, h] = this.engine.model.latentShape;
    const cfg = this.engine.pkg.manifest.config as { patchSize: number; hidden: number };
    return [(h / cfg.patchSize) ** 2, cfg.hidden];
  }

  /** The cache becomes the (detached) mixed output where r > tau_train. */
  private updateCache(traj: Trajectory, out: Record<string, HostTensor>, logits: readonly number[], overwriteAll: boolean): void {
    this.engine.model.slots.forEach((s, i) => {
      if (overwriteAll || sigmoid(logits[i]!) > this.opts.tauTrain) traj.caches[s.name] = out[routerNames.mixed(s.name)]!;
    });
  }

  /**
   * A whole soft-routed trajectory with the current router, keeping the state before each
   * step so that variants that differ from step t on can branch there instead of starting
   * over (about half the forwards of running every variant from the noise).
   */
  private async routedTrajectory(seed: number): Promise<{ final: Float32Array; before: Branch[] }> {
    const sampler = this.sampler();
    const traj = await this.start(new Rng(seed), sampler);
    const before: Branch[] = [];
    for (let i = 1; i < this.opts.steps; i++) {
      before[i] = { x: traj.x, caches: { ...traj.caches }, conditions: traj.conditions, sampler: sampler.fork() };
      await this.softStep(traj, sampler, i, this.logits[i]!, false);
    }
    return { final: traj.x, before };
  }

  /** Finishes a trajectory from a saved state with rows `logitsFor(step)`; the final sample. */
  private async finishFrom(state: Branch, from: number, logitsFor: (step: number) => readonly number[]): Promise<Float32Array> {
    const sampler = state.sampler.fork();
    const traj: Trajectory = { x: state.x, caches: { ...state.caches }, conditions: state.conditions };
    for (let i = from; i < this.opts.steps; i++) await this.softStep(traj, sampler, i, logitsFor(i), false);
    return traj.x;
  }

  /** IEPO: lambda(t) from how much routing at step t changes the final image. */
  async refreshLambda(seed: number): Promise<number[]> {
    const T = this.opts.steps;
    const ones = this.logits[0]!.map(() => 40);
    const sq = (a: Float32Array, b: Float32Array) => a.reduce((s, v, k) => s + (v - b[k]!) ** 2, 0);
    const lambda = new Array<number>(T).fill(0);
    const routed = await this.routedTrajectory(seed);
    if (this.opts.lambdaMode === 'paper') {
      // x0 with the router, against x0 with step t alone computed in full.
      for (let t = 1; t < T; t++) {
        const alt = await this.finishFrom(routed.before[t]!, t, (i) => (i === t ? ones : this.logits[i]!));
        lambda[t] = sq(routed.final, alt);
      }
    } else {
      // The router switched on one step at a time: rows 1..t routed, the rest in full.
      const routedUpTo = (t: number) => (t === T - 1 ? Promise.resolve(routed.final) : this.finishFrom(routed.before[t + 1]!, t + 1, () => ones));
      let previous = await routedUpTo(0);
      for (let t = 1; t < T; t++) {
        const current = await routedUpTo(t);
        lambda[t] = sq(current, previous) / current.length;
        previous = current;
      }
    }
    if (this.opts.lambdaNorm === 'mean') {
      const mean = lambda.slice(1).reduce((a, b) => a + b, 0) / Math.max(1, T - 1);
      for (let t = 1; t < T; t++) lambda[t] = mean > 0 ? lambda[t]! / mean : 1;
    }
    this.lambda = lambda;
    return lambda;
  }

  /** Runs `updates` router updates (T - 1 per trajectory) and returns the artifact. */
  async train(): Promise<RouterArtifact> {
    const { steps: T, updates, refresh, seed } = this.opts;
    const started = performance.now();
    const progress = this.opts.progress ? new Progress('train-router harmonica', updates, 'updates') : null;
    let update = 0;
    let trajectory = 0;
    const history: { update: number; dataLoss: number; cur: number }[] = [];
    while (update < updates) {
      const rng = new Rng(seed).fork(`trajectory-${trajectory++}`);
      const sampler = this.sampler();
      const traj = await this.start(rng, sampler);
      for (let i = 1; i < T && update < updates; i++) {
        if (update % refresh === 0) await this.refreshLambda(seed + update);
        const row = [...this.logits[i]!]; // the row the student ran with, before the update
        const out = await this.updateRow(traj, sampler, i, this.lambda[i]!);
        this.updateCache(traj, out, row, false);
        traj.x = sampler.step(i, traj.x, this.epsilon(out[stepNames.out]!));
        update++;
        const dataLoss = (out[routerNames.dataLoss]!.data as Float32Array)[0]!;
        if (update % 10 === 0) history.push({ update, dataLoss, cur: this.cur() });
        progress?.tick(1, { loss: dataLoss, cur: this.cur() });
      }
    }
    return this.artifact((performance.now() - started) / 1000, history);
  }

  /**
   * One router update at step i: the teacher (full forward on the student's x_t), the
   * student with row i and the current cache, and the AdamW step on the row.
   */
  private async updateRow(traj: Trajectory, sampler: Sampler, i: number, lambda: number): Promise<Record<string, HostTensor>> {
    const feeds = this.feeds(traj, sampler, i);
    const teacher = (await this.teacher.run(feeds))[stepNames.out]!;
    const row = this.logits[i]!;
    const out = await this.student.run({
      ...feeds, ...this.cacheFeeds(traj),
      [routerNames.logits]: tensor('float32', [row.length], row),
      [routerNames.teacher]: teacher,
      [routerNames.lambda]: tensor('float32', [], [lambda]),
      [routerNames.beta]: tensor('float32', [], [this.opts.beta]),
    });
    this.stepRow(i, out[routerNames.grad]!.data as Float32Array);
    return out;
  }

  /**
   * AdamW on P with the gradient in row i only (other rows still move by their momentum, as
   * with PyTorch's AdamW); the first row stays at its fixed value; then the clamp to [-5, 5].
   */
  private stepRow(i: number, grad: Float32Array): void {
    const S = grad.length;
    const full = new Float32Array(this.logits.length * S);
    full.set(grad, i * S);
    this.adam.step(new Map([['P', full]]));
    const P = this.adam.params.get('P')!;
    P.fill(HARMONICA_DEFAULTS.firstRowLogit, 0, S);
    for (let k = 0; k < P.length; k++) P[k] = Math.min(HARMONICA_DEFAULTS.clamp, Math.max(-HARMONICA_DEFAULTS.clamp, P[k]!));
    this.logits.forEach((row, r) => row.forEach((_, s) => (row[s] = P[r * S + s]!)));
  }

  /**
   * Learning-to-Cache (the baseline): real training images noised to a random odd step k,
   * step k computed in full (fills a one-step-old cache), then row k + 1 learns to mix
   * against the full teacher. A text model gets one caption per update, drawn with digits
   * of its class at its size and place (one condition per batch, as in the engine).
   */
  async trainLtc(): Promise<RouterArtifact> {
    const { steps: T, updates, seed } = this.opts;
    this.method = 'ltc';
    const started = performance.now();
    const { train } = splitMnist();
    const text = !this.engine.pkg.manifest.classes?.length;
    const byLabel = text ? Array.from({ length: DIGIT_CLASSES }, (_, label) => train.filter((d) => d.label === label)) : [];
    const ab = alphasCumprod(linearBetas());
    // LTC starts mid-trajectory with no sampler history: the step from k to k + 1 is then
    // DDIM's (stateless, so one for the run), which is also DPM-Solver++'s first-order step
    // on the same timesteps.
    const sampler = createSampler('ddim', { steps: T });
    const oddSteps = Array.from({ length: T }, (_, k) => k).filter((k) => k % 2 === 1 && k + 1 < T);
    if (!oddSteps.length) throw new HarmonicaError('BAD_INPUT', `LTC needs at least 3 steps, got ${T}`);
    const progress = this.opts.progress ? new Progress('train-router ltc', updates, 'updates') : null;
    const history: { update: number; dataLoss: number; cur: number }[] = [];
    for (let update = 0; update < updates; update++) {
      const rng = new Rng(seed).fork(`ltc-${update}`);
      const k = oddSteps[rng.int(oddSteps.length)]!;
      const { x, conditions } = text ? await this.captionedBatch(rng, byLabel) : this.labelledBatch(rng, train);
      const abk = ab[sampler.timesteps[k]!]!;
      const noise = initialNoise(x.length, rng);
      for (let j = 0; j < x.length; j++) x[j] = Math.sqrt(abk) * x[j]! + Math.sqrt(1 - abk) * noise[j]!;
      const traj: Trajectory = { x, conditions, caches: {} };
      await this.softStep(traj, sampler, k, this.logits[k]!.map(() => 40));
      const out = await this.updateRow(traj, sampler, k + 1, 1);
      const dataLoss = (out[routerNames.dataLoss]!.data as Float32Array)[0]!;
      if ((update + 1) % 10 === 0) history.push({ update: update + 1, dataLoss, cur: this.cur() });
      progress?.tick(1, { loss: dataLoss, cur: this.cur() });
    }
    // At inference odd rows recompute everything; the learned rows are the even ones.
    return this.artifact((performance.now() - started) / 1000, history);
  }

  /** Real training digits with their class labels (the guidance rows get the null class). */
  private labelledBatch(rng: Rng, train: readonly Digit[]): { x: Float32Array; conditions: Record<string, HostTensor> } {
    const { batch } = this.opts;
    const x = new Float32Array(batch * this.latent);
    const labels: number[] = [];
    for (let i = 0; i < batch; i++) {
      const d = train[rng.int(train.length)]!;
      toModelImage(d.pixels, x, i * this.latent);
      labels.push(d.label);
    }
    const numClasses = this.engine.pkg.manifest.classes!.length;
    const y = [...labels, ...new Array<number>(this.rows - batch).fill(numClasses)];
    return { x, conditions: { y: tensor('int64', [this.rows], y) } };
  }

  /** Real training digits of one random class, drawn at one random size and place, with a caption saying so. */
  private async captionedBatch(rng: Rng, byLabel: readonly Digit[][]): Promise<{ x: Float32Array; conditions: Record<string, HostTensor> }> {
    const { batch } = this.opts;
    const x = new Float32Array(batch * this.latent);
    const layout = randomLayout(rng.int(DIGIT_CLASSES), rng);
    const digits = byLabel[layout.label]!;
    for (let i = 0; i < batch; i++) renderDigit(digits[rng.int(digits.length)]!, layout.size, layout.place, x, i * this.latent);
    const { feeds } = await this.engine.conditioning.build({ prompt: captionFor(layout, rng), n: batch }, this.rows);
    return { x, conditions: feeds };
  }

  /** Cache usage ratio the current router gives at inference (tau). */
  cur(): number {
    let reused = 0;
    const alwaysComputes = (i: number) => i === 0 || (this.method === 'ltc' && i % 2 === 1);
    this.logits.forEach((row, i) => row.forEach((v) => (reused += !alwaysComputes(i) && !(sigmoid(v) > this.opts.tau) ? 1 : 0)));
    return reused / (this.logits.length * this.logits[0]!.length);
  }

  artifact(seconds: number, history: unknown[] = []): RouterArtifact {
    const pkg = this.engine.pkg;
    return {
      format: ROUTER_FORMAT, method: this.method, model: { id: pkg.manifest.id, sha256: pkg.sha256 }, sampler: this.opts.sampler,
      steps: this.opts.steps, cfgScale: this.opts.cfg, sublayers: this.engine.model.slots.map((s) => s.name),
      logits: this.logits.map((row) => row.map((v) => Number(v.toFixed(6)))), tau: this.opts.tau,
      training: {
        beta: this.opts.beta, lr: this.opts.lr, updates: this.opts.updates, batch: this.opts.batch, lambdaMode: this.opts.lambdaMode,
        lambdaNorm: this.opts.lambdaNorm, refresh: this.opts.refresh, tauTrain: this.opts.tauTrain, seed: this.opts.seed,
        seconds: Number(seconds.toFixed(1)), lambda: this.lambda.map((v) => Number(v.toPrecision(6))), history,
      },
      eval: { cur: this.cur() },
    };
  }

  async release(): Promise<void> {
    await Promise.all([this.teacher.release(), this.student.release(), this.forward.release()]);
  }
}
