import { stepNames } from '../cache/step-graph.js';
import { CacheAges, ltcComputesAll, ROUTER_FORMAT, routerSchedule, sigmoid, type RouterArtifact } from '../cache/router.js';
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
import { loadCheckpoint, PLATEAU_DEFAULTS, saveCheckpoint, WindowLog, type PlateauRule, type RouterCheckpoint } from './router-progress.js';

/** HarmoniCa reference hyperparameters (ModelTC/HarmoniCa README, DiT-XL/2 256px, T = 10). */
export const HARMONICA_DEFAULTS = {
  lr: 0.01,
  beta: 7e-8,
  tauTrain: 0.1,
  tau: 0.1,
  /** lambda refresh interval C, in updates. */
  refresh: 500,
  /** The reference's --max-steps. */
  updates: 20000,
  /** First row: everything computes (the cache is empty). */
  firstRowLogit: 5,
  clamp: 5,
};

/** A logit that makes sigmoid exactly 1 (or 0) in float32: a hard decision in the soft graph. */
const HARD_LOGIT = 40;
/** Bounds of an "undecided" mix, where soft training and hard inference differ most. */
const UNDECIDED = [0.1, 0.9] as const;

export interface RouterTrainOptions {
  steps: number;
  sampler: string;
  cfg: number;
  beta: number;
  lr: number;
  /** Most updates to run. */
  updates: number;
  /** Stop early once the schedule stops changing (see PLATEAU_DEFAULTS); false = run all updates. */
  untilPlateau?: boolean;
  /** Window and plateau settings (defaults: PLATEAU_DEFAULTS). */
  plateau?: Partial<PlateauRule>;
  /** Noises per trajectory (each duplicated for guidance), each with its own class or caption. */
  batch: number;
  tauTrain: number;
  /** Inference threshold written into the artifact. */
  tau: number;
  lambdaMode: 'paper' | 'incremental';
  lambdaNorm: 'none' | 'mean';
  /** IEPO trajectories with the soft mixes (the paper) or the hard decisions at tau (what inference runs). */
  lambdaSchedule?: 'soft' | 'hard';
  /** Forward with the hard decisions, gradient of the soft ones (straight-through estimator). */
  straightThrough?: boolean;
  /** A reused cache entry may be at most this many steps old, in training as at inference (absent: no cap). */
  maxCacheAge?: number;
  /** Recompute lambda every C updates. */
  refresh: number;
  seed: number;
  /** Write a checkpoint here after the episode that passes every `checkpointEvery` updates. */
  checkpoint?: string;
  checkpointEvery?: number;
  /** Continue from `checkpoint` (refused unless it was written with the same settings). */
  resume?: boolean;
  session?: SessionConfig;
  progress?: boolean;
}

interface Trajectory {
  /** Current sample x_t of the n noises. */
  x: Float32Array;
  conditions: Record<string, HostTensor>;
  caches: Record<string, HostTensor>;
  ages: CacheAges;
}

/** A trajectory's state before some step, to branch from. */
interface Branch extends Trajectory {
  sampler: Sampler;
}

/**
 * Stacks per-sample condition feeds (each with 1 row, or 2 with guidance: cond, uncond) into
 * one batch in CFG_BATCH_ORDER: every sample's cond row, then every sample's uncond row.
 */
function stackConditions(parts: Record<string, HostTensor>[], guided: boolean): Record<string, HostTensor> {
  const out: Record<string, HostTensor> = {};
  for (const name of Object.keys(parts[0]!)) {
    const first = parts[0]![name]!;
    const rowSize = first.data.length / first.shape[0]!;
    const halves = guided ? [0, 1] : [0];
    const rows = halves.flatMap((h) => parts.map((p) => ({ t: p[name]!, h })));
    const Data = first.data.constructor as new (n: number) => HostTensor['data'];
    const data = new Data(rows.length * rowSize);
    rows.forEach(({ t, h }, i) => (data as Float32Array).set((t.data as Float32Array).subarray(h * rowSize, (h + 1) * rowSize), i * rowSize));
    out[name] = tensor(first.dtype, [rows.length, ...first.shape.slice(1)], data as never);
  }
  return out;
}

/**
 * Router training. HarmoniCa: Step-wise Denoising Training along whole trajectories (the
 * student's cache and input come from its own earlier steps, as at inference) weighted by
 * the Image Error Proxy Objective lambda(t); image-free. LTC: one mixed step after a full
 * one, on real images. Both: the loss is on the guided prediction the sampler uses, and
 * each step's row has its own AdamW, moved only when that row gets a gradient.
 */
export class RouterTrainer {
  readonly logits: number[][];
  /** One optimizer per trainable row: an update touches only its row's parameters and moments. */
  private readonly adams: (AdamW | null)[];
  private lambda: number[];
  private method: 'harmonica' | 'ltc' = 'harmonica';
  private readonly rows: number;
  private readonly latent: number;
  private readonly guided: boolean;
  private readonly rule: PlateauRule;

  private constructor(
    private readonly engine: Engine,
    private readonly opts: RouterTrainOptions,
    /** The loss graph: student forward, loss and its gradient w.r.t. one row. */
    private readonly student: Session,
    /** The soft-routed forward: the teacher (every logit at +40), cache filling, IEPO. */
    private readonly forward: Session,
  ) {
    const { steps } = opts;
    const S = engine.model.slots.length;
    const rng = new Rng(opts.seed).fork('router-init');
    this.logits = Array.from({ length: steps }, (_, i) => Array.from({ length: S }, () => (i === 0 ? HARMONICA_DEFAULTS.firstRowLogit : rng.normal())));
    this.adams = this.logits.map((row, i) => (i === 0 ? null : new AdamW(new Map([['P', Float32Array.from(row)]]), { lr: opts.lr, weightDecay: 0 })));
    this.lambda = new Array<number>(steps).fill(1);
    this.guided = opts.cfg > 1;
    this.rows = this.guided ? 2 * opts.batch : opts.batch;
    const [c, h, w] = engine.model.latentShape;
    this.latent = c * h * w;
    this.rule = { ...PLATEAU_DEFAULTS, ...opts.plateau };
  }

  static async create(engine: Engine, opts: RouterTrainOptions): Promise<RouterTrainer> {
    // The loss is differentiated through the transformer's MatMuls: autodiff has no rules for the quantized ones.
    const precision = engine.precision.transformer ?? 'fp32';
    if (precision !== 'fp32') throw new HarmonicaError('BAD_INPUT', `router training needs the transformer at fp32 (precision.transformer), got ${precision}: open the engine without a transformer precision`);
    const guided = opts.cfg > 1;
    const rows = guided ? 2 * opts.batch : opts.batch;
    const cfg = { threads: undefined, ...opts.session };
    const student = await Session.create(buildRouterStep(engine.model, engine.weights, rows, { withLoss: true, guidedBatch: guided ? opts.batch : undefined, straightThrough: opts.straightThrough }).graph, cfg);
    const forward = await Session.create(buildRouterStep(engine.model, engine.weights, rows).graph, cfg);
    return new RouterTrainer(engine, opts, student, forward);
  }

  private sampler(): Sampler {
    return createSampler(this.opts.sampler, { steps: this.opts.steps });
  }

  /** The model output -> the guided epsilon for the n noises. */
  private epsilon(out: HostTensor): Float32Array {
    const [c, h, w] = this.engine.model.latentShape;
    const o = out.data as Float32Array;
    return this.guided ? splitGuided(o, this.opts.batch, this.engine.model.outChannels, c, h * w, this.opts.cfg) : dropLearnedSigma(o, this.opts.batch, this.engine.model.outChannels, c, h * w);
  }

  private feeds(traj: Trajectory, step: number, timesteps: readonly number[]): Record<string, HostTensor> {
    const [c, h, w] = this.engine.model.latentShape;
    const input = this.guided ? duplicateForCfg(traj.x) : traj.x;
    return {
      ...traj.conditions,
      ...this.cacheFeeds(traj),
      x: tensor('float32', [this.rows, c, h, w], input),
      t: tensor('float32', [this.rows], new Array<number>(this.rows).fill(timesteps[step]!)),
    };
  }

  /** A fresh trajectory: conditions, noise, and step 0 computed in full (fills the cache). */
  private async start(rng: Rng, sampler: Sampler): Promise<Trajectory> {
    const conditions = await this.randomConditions(rng);
    const traj: Trajectory = { x: initialNoise(this.opts.batch * this.latent, rng), conditions, caches: {}, ages: this.freshAges() };
    await this.softStep(traj, sampler, 0, this.allCompute());
    return traj;
  }

  /** One random class (or caption) per noise, as the reference draws `y` per sample. */
  private async randomConditions(rng: Rng): Promise<Record<string, HostTensor>> {
    const classes = this.engine.pkg.manifest.classes?.length ?? 0;
    const parts: Record<string, HostTensor>[] = [];
    for (let j = 0; j < this.opts.batch; j++) parts.push(await this.conditionRows(randomCondition(classes, rng)));
    return stackConditions(parts, this.guided);
  }

  /** One sample's condition rows (its cond row, and the uncond row with guidance). */
  private async conditionRows(condition: { classLabel: number } | { prompt: string }): Promise<Record<string, HostTensor>> {
    return (await this.engine.conditioning.build({ ...condition, n: 1 }, this.guided ? 2 : 1)).feeds;
  }

  private allCompute(): number[] {
    return this.engine.model.slots.map(() => HARD_LOGIT);
  }

  private freshAges(): CacheAges {
    return new CacheAges(this.engine.model.slots.length, this.opts.maxCacheAge);
  }

  /** The row as the step runs it: slots whose cache would be too old compute (logit +40). */
  private capped(traj: Trajectory, logits: readonly number[]): { row: number[]; forced: boolean[] } {
    const forced = traj.ages.forced();
    return { row: logits.map((v, s) => (forced[s] ? HARD_LOGIT : v)), forced };
  }

  /** A forward-only step with the soft router row `logits`; updates cache and x. */
  private async softStep(traj: Trajectory, sampler: Sampler, step: number, logits: readonly number[], overwriteAll = true): Promise<void> {
    const { row } = this.capped(traj, logits);
    const out = await this.forward.run({ ...this.feeds(traj, step, sampler.timesteps), [routerNames.logits]: tensor('float32', [row.length], row) });
    this.updateCache(traj, out, row, overwriteAll);
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
    const refreshed = logits.map((v) => overwriteAll || sigmoid(v) > this.opts.tauTrain);
    this.engine.model.slots.forEach((s, i) => {
      if (refreshed[i]) traj.caches[s.name] = out[routerNames.mixed(s.name)]!;
    });
    traj.ages.advance(refreshed);
  }

  /** Row i as IEPO runs it: the soft logits, or with `lambdaSchedule: hard` the decisions at tau. */
  private lambdaRow(i: number): readonly number[] {
    const row = this.logits[i]!;
    return this.opts.lambdaSchedule === 'hard' ? row.map((v) => (sigmoid(v) > this.opts.tau ? HARD_LOGIT : -HARD_LOGIT)) : row;
  }

  /**
   * A whole routed trajectory with the current router, keeping the state before each step so
   * that variants that differ from step t on can branch there instead of starting over
   * (about half the forwards of running every variant from the noise).
   */
  private async routedTrajectory(seed: number): Promise<{ final: Float32Array; before: Branch[] }> {
    const sampler = this.sampler();
    const traj = await this.start(new Rng(seed), sampler);
    const before: Branch[] = [];
    for (let i = 1; i < this.opts.steps; i++) {
      before[i] = { x: traj.x, caches: { ...traj.caches }, ages: traj.ages.clone(), conditions: traj.conditions, sampler: sampler.fork() };
      await this.softStep(traj, sampler, i, this.lambdaRow(i), false);
    }
    return { final: traj.x, before };
  }

  /** Finishes a trajectory from a saved state with rows `logitsFor(step)`; the final sample. */
  private async finishFrom(state: Branch, from: number, logitsFor: (step: number) => readonly number[]): Promise<Float32Array> {
    const sampler = state.sampler.fork();
    const traj: Trajectory = { x: state.x, caches: { ...state.caches }, ages: state.ages.clone(), conditions: state.conditions };
    for (let i = from; i < this.opts.steps; i++) await this.softStep(traj, sampler, i, logitsFor(i), false);
    return traj.x;
  }

  /** IEPO: lambda(t) from how much routing at step t changes the final image. */
  async refreshLambda(seed: number): Promise<number[]> {
    const T = this.opts.steps;
    const ones = this.allCompute();
    const sq = (a: Float32Array, b: Float32Array) => a.reduce((s, v, k) => s + (v - b[k]!) ** 2, 0);
    const lambda = new Array<number>(T).fill(0);
    const routed = await this.routedTrajectory(seed);
    if (this.opts.lambdaMode === 'paper') {
      // x0 with the router, against x0 with step t alone computed in full.
      for (let t = 1; t < T; t++) {
        const alt = await this.finishFrom(routed.before[t]!, t, (i) => (i === t ? ones : this.lambdaRow(i)));
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

  /**
   * One router update at step i: the teacher (full forward on the student's x_t), the
   * student with row i and the current cache, and the AdamW step on row i alone.
   */
  private async updateRow(traj: Trajectory, timesteps: readonly number[], i: number, lambda: number): Promise<{ out: Record<string, HostTensor>; row: number[] }> {
    const feeds = this.feeds(traj, i, timesteps);
    const S = this.logits[i]!.length;
    const teacher = (await this.forward.run({ ...feeds, [routerNames.logits]: tensor('float32', [S], this.allCompute()) }, [stepNames.out]))[stepNames.out]!;
    const { row, forced } = this.capped(traj, this.logits[i]!);
    const out = await this.student.run({
      ...feeds,
      [routerNames.logits]: tensor('float32', [S], row),
      ...(this.opts.straightThrough ? { [routerNames.hardOffset]: tensor('float32', [S], row.map((v) => (sigmoid(v) > this.opts.tauTrain ? 1 : 0) - sigmoid(v))) } : {}),
      ...(this.guided ? { [routerNames.cfgScale]: tensor('float32', [], [this.opts.cfg]) } : {}),
      [routerNames.teacher]: teacher,
      [routerNames.lambda]: tensor('float32', [], [lambda]),
      [routerNames.beta]: tensor('float32', [], [this.opts.beta]),
    });
    this.stepRow(i, out[routerNames.grad]!.data as Float32Array, forced);
    return { out, row };
  }

  /**
   * AdamW on row i only (its own moments and step count), then the clamp to [-5, 5]. Slots the
   * age cap forced to compute did not use their logit: it and its moments stay as they were.
   */
  private stepRow(i: number, grad: Float32Array, forced: readonly boolean[]): void {
    const adam = this.adams[i];
    if (!adam) throw new Error(`router row ${i} is not trainable`);
    adam.params.get('P')!.set(this.logits[i]!); // the logits are the truth; AdamW steps a float32 copy
    const before = forced.some(Boolean) ? { P: [...adam.params.get('P')!], state: adam.state() } : null;
    adam.step(new Map([['P', grad]]));
    const P = adam.params.get('P')!;
    if (before) {
      const state = adam.state();
      forced.forEach((f, s) => {
        if (!f) return;
        P[s] = before.P[s]!;
        state.m.P![s] = before.state.m.P![s]!;
        state.v.P![s] = before.state.v.P![s]!;
      });
      adam.loadState(state);
    }
    for (let s = 0; s < P.length; s++) P[s] = Math.min(HARMONICA_DEFAULTS.clamp, Math.max(-HARMONICA_DEFAULTS.clamp, P[s]!));
    this.logits[i] = [...P];
  }

  /** Runs HarmoniCa (SDT + IEPO) until `updates` or the plateau, and returns the artifact. */
  async train(): Promise<RouterArtifact> {
    const { steps: T, refresh, seed } = this.opts;
    return this.run('harmonica', async (episode, loop) => {
      const rng = new Rng(seed).fork(`trajectory-${episode}`);
      const sampler = this.sampler();
      const traj = await this.start(rng, sampler);
      for (let i = 1; i < T && !loop.done(); i++) {
        if (loop.update() % refresh === 0) await this.refreshLambda(seed + loop.update());
        const { out, row } = await this.updateRow(traj, sampler.timesteps, i, this.lambda[i]!); // row: as the student ran it
        this.updateCache(traj, out, row, false);
        traj.x = sampler.step(i, traj.x, this.epsilon(out[stepNames.out]!));
        loop.record((out[routerNames.dataLoss]!.data as Float32Array)[0]!);
      }
    });
  }

  /**
   * Learning-to-Cache (the baseline): real training images noised to a step k at which the
   * LTC schedule computes everything, step k run in full (fills a one-step-old cache), then
   * row k + 1 learns to mix against the full teacher. Each image has its own class (and for
   * a text model its own caption, the digit drawn at its size and place).
   */
  async trainLtc(): Promise<RouterArtifact> {
    const { steps: T, seed } = this.opts;
    const { train } = splitMnist();
    const text = !this.engine.pkg.manifest.classes?.length;
    const byLabel = text ? Array.from({ length: DIGIT_CLASSES }, (_, label) => train.filter((d) => d.label === label)) : [];
    const ab = alphasCumprod(linearBetas());
    // LTC starts mid-trajectory with no sampler history: the step from k to k + 1 is then
    // DDIM's (stateless, so one for the run), which is also DPM-Solver++'s first-order step
    // on the same timesteps.
    const sampler = createSampler('ddim', { steps: T });
    const fullSteps = Array.from({ length: T - 1 }, (_, k) => k).filter((k) => ltcComputesAll(k, T));
    if (!fullSteps.length) throw new HarmonicaError('BAD_INPUT', `LTC needs at least 2 steps, got ${T}`);
    return this.run('ltc', async (episode, loop) => {
      const rng = new Rng(seed).fork(`ltc-${episode}`);
      const k = fullSteps[rng.int(fullSteps.length)]!;
      const { x, conditions } = text ? await this.captionedBatch(rng, byLabel) : this.labelledBatch(rng, train);
      const abk = ab[sampler.timesteps[k]!]!;
      const noise = initialNoise(x.length, rng);
      for (let j = 0; j < x.length; j++) x[j] = Math.sqrt(abk) * x[j]! + Math.sqrt(1 - abk) * noise[j]!;
      const traj: Trajectory = { x, conditions, caches: {}, ages: this.freshAges() };
      await this.softStep(traj, sampler, k, this.allCompute());
      const { out } = await this.updateRow(traj, sampler.timesteps, k + 1, 1);
      loop.record((out[routerNames.dataLoss]!.data as Float32Array)[0]!);
    });
  }

  /** The settings a resumed run must share with its checkpoint. */
  private identity(method: string): Record<string, unknown> {
    const o = this.opts;
    return {
      method, model: this.engine.pkg.sha256, steps: o.steps, sampler: o.sampler, cfg: o.cfg, beta: o.beta, lr: o.lr, batch: o.batch, tauTrain: o.tauTrain,
      lambdaMode: o.lambdaMode, lambdaNorm: o.lambdaNorm, lambdaSchedule: o.lambdaSchedule ?? 'soft', straightThrough: !!o.straightThrough, maxCacheAge: o.maxCacheAge ?? null, refresh: o.refresh, seed: o.seed, window: this.rule.window,
    };
  }

  /**
   * The shared training loop: episodes (a trajectory, or one LTC update) until `updates` or
   * the plateau; a window record every `window` updates; a checkpoint after an episode that
   * crossed a multiple of `checkpointEvery` (episodes are the unit a resume restarts from).
   */
  private async run(method: 'harmonica' | 'ltc', episode: (index: number, loop: { update(): number; done(): boolean; record(dataLoss: number): void }) => Promise<void>): Promise<RouterArtifact> {
    this.method = method;
    const { updates } = this.opts;
    const identity = this.identity(method);
    const resumed = this.opts.resume && this.opts.checkpoint ? loadCheckpoint(this.opts.checkpoint, identity) : null;
    if (resumed) this.restore(resumed);
    let update = resumed?.update ?? 0;
    let index = resumed?.episode ?? 0;
    let plateauAt = resumed?.plateauAt ?? null;
    const log = new WindowLog(this.rule, resumed?.windows ?? [], resumed?.schedules ?? []);
    const secondsBefore = resumed?.seconds ?? 0;
    const started = performance.now();
    const seconds = () => secondsBefore + (performance.now() - started) / 1000;
    const progress = this.opts.progress ? new Progress(`train-router ${method}`, updates - update, 'updates') : null;
    const trainable = this.trainableRows();
    const every = this.opts.checkpointEvery ?? 1000;
    const loop = {
      update: () => update,
      done: () => update >= updates || plateauAt !== null,
      record: (dataLoss: number) => {
        update++;
        const window = log.add(update, dataLoss, () => ({ cur: this.cur(), undecided: this.undecided(), schedule: this.schedule(), trainable, seconds: Number(seconds().toFixed(1)) }));
        if (window && this.opts.untilPlateau && log.plateaued(trainable)) plateauAt = update;
        progress?.tick(1, { loss: dataLoss, cur: this.cur(), undecided: this.undecided() });
      },
    };
    while (!loop.done()) {
      const before = update;
      await episode(index++, loop);
      const due = Math.floor(update / every) > Math.floor(before / every) || loop.done();
      if (this.opts.checkpoint && due) await saveCheckpoint(this.opts.checkpoint, this.snapshot(identity, update, index, log, seconds(), plateauAt));
    }
    return this.artifact(seconds(), update, plateauAt, log);
  }

  private snapshot(identity: Record<string, unknown>, update: number, episode: number, log: WindowLog, seconds: number, plateauAt: number | null): RouterCheckpoint {
    return {
      format: 'harmonica-router-checkpoint/1', identity, update, episode, logits: this.logits.map((r) => [...r]),
      adam: this.adams.map((a) => a?.state() ?? null), lambda: [...this.lambda], windows: log.windows, schedules: log.schedules, seconds, plateauAt,
    };
  }

  private restore(c: RouterCheckpoint): void {
    c.logits.forEach((row, i) => {
      this.logits[i] = [...row];
      const adam = this.adams[i];
      if (adam) {
        adam.params.get('P')!.set(row);
        adam.loadState(c.adam[i]!);
      }
    });
    this.lambda = [...c.lambda];
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

  /** Real training digits, each of a random class drawn at a random size and place, with a caption saying so. */
  private async captionedBatch(rng: Rng, byLabel: readonly Digit[][]): Promise<{ x: Float32Array; conditions: Record<string, HostTensor> }> {
    const { batch } = this.opts;
    const x = new Float32Array(batch * this.latent);
    const parts: Record<string, HostTensor>[] = [];
    for (let i = 0; i < batch; i++) {
      const layout = randomLayout(rng.int(DIGIT_CLASSES), rng);
      const digits = byLabel[layout.label]!;
      renderDigit(digits[rng.int(digits.length)]!, layout.size, layout.place, x, i * this.latent);
      parts.push(await this.conditionRows({ prompt: captionFor(layout, rng) }));
    }
    return { x, conditions: stackConditions(parts, this.guided) };
  }

  private alwaysComputes(i: number): boolean {
    return i === 0 || (this.method === 'ltc' && ltcComputesAll(i, this.opts.steps));
  }

  private trainableRows(): boolean[] {
    return this.logits.map((_, i) => !this.alwaysComputes(i));
  }

  /** The hard schedule inference runs at tau (with the age cap, if any). */
  private schedule(): boolean[][] {
    const { steps, tau, maxCacheAge } = this.opts;
    return routerSchedule({ method: this.method, steps, sublayers: this.engine.model.slots.map((s) => s.name), logits: this.logits, maxCacheAge }, tau);
  }

  /** Cache usage ratio the current router gives at inference (tau). */
  cur(): number {
    const schedule = this.schedule();
    return schedule.flat().filter((c) => !c).length / schedule.flat().length;
  }

  /** Fraction of the trainable logits whose mix is neither near 0 nor near 1. */
  undecided(): number {
    const values = this.logits.filter((_, i) => !this.alwaysComputes(i)).flat().map(sigmoid);
    return values.length ? values.filter((r) => r > UNDECIDED[0] && r < UNDECIDED[1]).length / values.length : 0;
  }

  private artifact(seconds: number, updates: number, plateauAt: number | null, log: WindowLog): RouterArtifact {
    const pkg = this.engine.pkg;
    const o = this.opts;
    return {
      format: ROUTER_FORMAT, method: this.method, model: { id: pkg.manifest.id, sha256: pkg.sha256 }, sampler: o.sampler,
      steps: o.steps, cfgScale: o.cfg, sublayers: this.engine.model.slots.map((s) => s.name),
      logits: this.logits.map((row) => row.map((v) => Number(v.toFixed(6)))), tau: o.tau,
      ...(o.maxCacheAge === undefined ? {} : { maxCacheAge: o.maxCacheAge }),
      training: {
        beta: o.beta, lr: o.lr, updates, maxUpdates: o.updates, plateauAt, batch: o.batch, lambdaMode: o.lambdaMode, lambdaNorm: o.lambdaNorm,
        lambdaSchedule: o.lambdaSchedule ?? 'soft', straightThrough: !!o.straightThrough, refresh: o.refresh, tauTrain: o.tauTrain, seed: o.seed,
        seconds: Number(seconds.toFixed(1)), lambda: this.lambda.map((v) => Number(v.toPrecision(6))),
        history: log.windows.map((w) => ({ ...w, dataLoss: Number(w.dataLoss.toPrecision(5)), cur: Number(w.cur.toFixed(4)), undecided: Number(w.undecided.toFixed(4)), changed: Number(w.changed.toFixed(4)) })),
      },
      eval: { cur: this.cur(), undecided: this.undecided() },
    };
  }

  async release(): Promise<void> {
    await Promise.all([this.student.release(), this.forward.release()]);
  }
}
