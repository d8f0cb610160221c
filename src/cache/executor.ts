import type { Denoiser } from '../models/denoiser.js';
import type { SlotInfo } from '../models/sublayer.js';
import type { Weights } from '../models/weights.js';
import { openGraph, type CacheOutcome, type CompiledModel } from '../onnx/compiled-cache.js';
import type { Session, SessionConfig } from '../onnx/session.js';
import { tensor, type HostTensor } from '../tensor/tensor.js';
import { buildCachedStep, buildProbeStep, stepNames } from './step-graph.js';

export interface StepResult {
  out: HostTensor;
  /** Per slot: computed (true) or reused (false). */
  computed: boolean[];
  ms: number;
}

/** Weights, or a loader called only when a graph must be built (a compiled one needs none). */
export type WeightsSource = Weights | (() => Weights);

const TRUE = tensor('bool', [1], [1]);
const FALSE = tensor('bool', [1], [0]);

/**
 * Runs denoising steps with a per-slot compute/reuse mask in one ORT run per step and owns
 * the cache of raw sublayer outputs. The first step of a trajectory computes everything.
 */
export class CachedExecutor {
  private readonly cache = new Map<string, HostTensor>();
  private readonly empty = new Map<string, HostTensor>();
  private readonly probeSessions = new Map<string, Promise<Session>>();
  private stepsRun = 0;

  private constructor(
    private readonly session: Session,
    readonly model: Denoiser,
    readonly batch: number,
    private readonly weights: () => Weights,
    private readonly config: SessionConfig,
    private readonly compiled: CompiledModel,
    /** Whether the step graph came from the compiled-model cache. */
    readonly cacheOutcome: CacheOutcome,
  ) {}

  static async create(model: Denoiser, weights: WeightsSource, batch: number, config: SessionConfig = {}, compiled: CompiledModel = { cache: null, key: {} }): Promise<CachedExecutor> {
    const load = typeof weights === 'function' ? weights : () => weights;
    const { session, cache } = await openGraph(compiled.cache, { ...compiled.key, graph: 'cached_step', batch }, () => buildCachedStep(model, load(), batch).graph, config);
    const executor = new CachedExecutor(session, model, batch, load, config, compiled, cache);
    for (const input of session.inputs) {
      if (input.name.startsWith('cache/')) executor.empty.set(input.name, tensor(input.dtype, input.shape));
    }
    return executor;
  }

  /** Where the step runs: `cpu` also when CUDA was asked for and fell back. */
  get device(): Session['device'] {
    return this.session.device;
  }

  get slots(): readonly SlotInfo[] {
    return this.model.slots;
  }

  /** Starts a new trajectory: forgets the cache. */
  reset(): void {
    this.cache.clear();
    this.stepsRun = 0;
  }

  /**
   * Runs one step; `mask[s]` says whether slot s computes (forced true on a first step and
   * while nothing is cached). `store` (for all slots or per slot) says which computed outputs
   * to keep: copying a fresh output out of ORT costs time, so outputs no later step reuses
   * are not fetched.
   */
  async step(inputs: Record<string, HostTensor>, mask: readonly boolean[], store: boolean | readonly boolean[] = true): Promise<StepResult> {
    const slots = this.model.slots;
    if (mask.length !== slots.length) throw new Error(`mask has ${mask.length} entries, the model has ${slots.length} slots`);
    const computed = slots.map((s, i) => this.stepsRun === 0 || !this.cache.has(s.name) || mask[i]!);
    const keep = slots.map((_, i) => computed[i]! && (typeof store === 'boolean' ? store : store[i]!));
    const feeds: Record<string, HostTensor> = { ...inputs };
    const fetches = [stepNames.out];
    slots.forEach((s, i) => {
      feeds[stepNames.compute(s.name)] = computed[i] ? TRUE : FALSE;
      const cacheName = stepNames.cache(s.name);
      feeds[cacheName] = this.cache.get(s.name) ?? this.empty.get(cacheName)!;
      if (keep[i]) fetches.push(stepNames.fresh(s.name));
    });
    const t0 = performance.now();
    const results = await this.session.run(feeds, fetches);
    const ms = performance.now() - t0;
    slots.forEach((s, i) => {
      if (keep[i]) this.cache.set(s.name, results[stepNames.fresh(s.name)]!);
      else if (computed[i]) this.cache.delete(s.name); // stale now: never reuse it
    });
    this.stepsRun++;
    return { out: results[stepNames.out]!, computed, ms };
  }

  /**
   * The named probe values for these inputs, from a separate small graph run before the
   * step (input-adaptive policies decide from them).
   */
  async probe(inputs: Record<string, HostTensor>, names: readonly string[]): Promise<Record<string, HostTensor>> {
    const key = names.join(',');
    let s = this.probeSessions.get(key);
    if (!s) {
      const build = () => buildProbeStep(this.model, this.weights(), this.batch, names).graph;
      this.probeSessions.set(key, (s = openGraph(this.compiled.cache, { ...this.compiled.key, graph: 'probe', batch: this.batch, probes: names }, build, this.config).then((o) => o.session)));
    }
    const session = await s;
    const feeds = Object.fromEntries(session.inputNames.map((n) => [n, inputs[n]!]));
    const out = await session.run(feeds);
    return Object.fromEntries(names.map((n) => [n, out[stepNames.probe(n)]!]));
  }

  async release(): Promise<void> {
    await this.session.release();
    for (const s of this.probeSessions.values()) await (await s).release();
  }
}
