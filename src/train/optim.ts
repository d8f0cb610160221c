/**
 * AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization") and an EMA of weights,
 * over named Float32Array parameters that are updated in place.
 *
 * The update follows torch.optim.AdamW (single-tensor, non-amsgrad path) step for step:
 *   t += 1
 *   p *= 1 - lr * wd                              (decoupled decay, before the Adam update)
 *   m  = b1 * m + (1 - b1) * g
 *   v  = b2 * v + (1 - b2) * g^2
 *   p -= lr * m_hat / (sqrt(v_hat) + eps)         m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t)
 * computed as torch does: p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps), which is the same value.
 */

// PyTorch's defaults for torch.optim.Adam/AdamW betas and eps.
export const DEFAULT_BETA1 = 0.9;
export const DEFAULT_BETA2 = 0.999;
export const DEFAULT_EPS = 1e-8;
// No decay unless asked for (torch.optim.AdamW itself defaults to 1e-2; Adam's default is 0).
export const DEFAULT_WEIGHT_DECAY = 0;
/** Added to the norm before dividing, as torch.nn.utils.clip_grad_norm_ does, so a zero norm cannot divide by 0. */
export const CLIP_EPS = 1e-6;

export interface AdamWConfig {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** Decoupled weight decay: p -= lr * weightDecay * p each step. */
  weightDecay?: number;
  /** Global L2 clipping over all gradients: if the norm exceeds this, all are scaled by max / (norm + 1e-6). */
  maxGradNorm?: number;
  /**
   * Per-parameter learning-rate multipliers (torch's parameter groups with their own lr):
   * a parameter named here steps with lr * multiplier, its weight decay too. Others use 1.
   */
  lrScales?: ReadonlyMap<string, number>;
}

/** AdamWConfig with every default filled in. */
export type ResolvedAdamWConfig = Required<Omit<AdamWConfig, 'maxGradNorm' | 'lrScales'>> & { maxGradNorm: number | undefined };

export type NamedArrays = Map<string, Float32Array> | Record<string, Float32Array>;

export interface StepResult {
  /** Global L2 norm of the gradients as passed in (before clipping). */
  gradNorm: number;
  /** Whether the gradients were scaled down by maxGradNorm. */
  clipped: boolean;
}

/** What a checkpoint needs to resume AdamW exactly: the moments and the step count. */
export interface AdamWState {
  t: number;
  m: Record<string, Float32Array>;
  v: Record<string, Float32Array>;
}

export interface EMAState {
  shadow: Record<string, Float32Array>;
}

function toMap(arrays: NamedArrays, what: string): Map<string, Float32Array> {
  const map = arrays instanceof Map ? new Map(arrays) : new Map(Object.entries(arrays));
  if (map.size === 0) throw new Error(`${what}: no parameters`);
  for (const [name, a] of map) {
    if (!(a instanceof Float32Array)) throw new Error(`${what}: parameter '${name}' must be a Float32Array`);
  }
  return map;
}

function lookup(arrays: NamedArrays, name: string): Float32Array | undefined {
  return arrays instanceof Map ? arrays.get(name) : Object.hasOwn(arrays, name) ? arrays[name] : undefined;
}

/**
 * Checks that `given` has exactly the names of `params`, each with the parameter's length.
 * Runs before anything is modified, so a bad call leaves the optimizer untouched.
 */
function checkMatches(params: ReadonlyMap<string, Float32Array>, given: NamedArrays, what: string, kind: string): void {
  const names = given instanceof Map ? given.keys() : Object.keys(given);
  for (const name of names) {
    if (!params.has(name)) throw new Error(`${what}: ${kind} for unknown parameter '${name}'`);
  }
  for (const [name, p] of params) {
    const a = lookup(given, name);
    if (a === undefined) throw new Error(`${what}: missing ${kind} for parameter '${name}'`);
    if (!(a instanceof Float32Array)) throw new Error(`${what}: ${kind} for '${name}' must be a Float32Array`);
    if (a.length !== p.length) throw new Error(`${what}: ${kind} for '${name}' has ${a.length} elements, parameter has ${p.length}`);
  }
}

/** Global L2 norm over all arrays, accumulated in float64. */
export function globalNorm(arrays: Iterable<Float32Array>): number {
  let sum = 0;
  for (const a of arrays) {
    for (let i = 0; i < a.length; i++) {
      const x = a[i]!;
      sum += x * x;
    }
  }
  return Math.sqrt(sum);
}

/** The factor clipping applies to every gradient (1 when not clipping). */
export function clipScale(gradNorm: number, maxGradNorm: number | undefined): number {
  return maxGradNorm !== undefined && gradNorm > maxGradNorm ? maxGradNorm / (gradNorm + CLIP_EPS) : 1;
}

export function resolveAdamWConfig(config: AdamWConfig): ResolvedAdamWConfig {
  const c: ResolvedAdamWConfig = {
    lr: config.lr,
    beta1: config.beta1 ?? DEFAULT_BETA1,
    beta2: config.beta2 ?? DEFAULT_BETA2,
    eps: config.eps ?? DEFAULT_EPS,
    weightDecay: config.weightDecay ?? DEFAULT_WEIGHT_DECAY,
    maxGradNorm: config.maxGradNorm,
  };
  checkLr(c.lr);
  for (const k of ['beta1', 'beta2'] as const) {
    if (!(c[k] >= 0 && c[k] < 1)) throw new Error(`AdamW: ${k} must be in [0, 1), got ${c[k]}`);
  }
  if (!(c.eps >= 0 && Number.isFinite(c.eps))) throw new Error(`AdamW: eps must be a finite number >= 0, got ${c.eps}`);
  if (!(c.weightDecay >= 0 && Number.isFinite(c.weightDecay))) throw new Error(`AdamW: weightDecay must be a finite number >= 0, got ${c.weightDecay}`);
  if (c.maxGradNorm !== undefined && !(c.maxGradNorm > 0)) throw new Error(`AdamW: maxGradNorm must be > 0, got ${c.maxGradNorm}`);
  return c;
}

function checkLr(lr: number): void {
  if (!(lr >= 0 && Number.isFinite(lr))) throw new Error(`AdamW: lr must be a finite number >= 0, got ${lr}`);
}

/** The per-step scalars of the update; shared with the ONNX variant so both compute the same thing. */
export function adamWFactors(c: ResolvedAdamWConfig, lr: number, t: number): { decay: number; stepSize: number; invBc2Sqrt: number } {
  return {
    decay: 1 - lr * c.weightDecay,
    stepSize: lr / (1 - c.beta1 ** t),
    invBc2Sqrt: 1 / Math.sqrt(1 - c.beta2 ** t),
  };
}

export class AdamW {
  /** The parameters, updated in place by step(); the same arrays the caller passed. */
  readonly params: ReadonlyMap<string, Float32Array>;
  readonly config: Readonly<ResolvedAdamWConfig>;
  private readonly m = new Map<string, Float32Array>();
  private readonly v = new Map<string, Float32Array>();
  private readonly lrScales: ReadonlyMap<string, number>;
  private _lr: number;
  private t = 0;

  constructor(params: NamedArrays, config: AdamWConfig) {
    this.params = toMap(params, 'AdamW');
    this.config = resolveAdamWConfig(config);
    this.lrScales = config.lrScales ?? new Map();
    for (const [name, s] of this.lrScales) {
      if (!this.params.has(name)) throw new Error(`AdamW: lr multiplier for unknown parameter '${name}'`);
      if (!(s >= 0 && Number.isFinite(s))) throw new Error(`AdamW: lr multiplier of '${name}' must be a finite number >= 0, got ${s}`);
    }
    this._lr = this.config.lr;
    for (const [name, p] of this.params) {
      this.m.set(name, new Float32Array(p.length));
      this.v.set(name, new Float32Array(p.length));
    }
  }

  /** Learning rate of the next step; set it from a schedule before each step. */
  get lr(): number {
    return this._lr;
  }

  set lr(value: number) {
    checkLr(value);
    this._lr = value;
  }

  /** Steps taken so far. */
  get steps(): number {
    return this.t;
  }

  step(grads: NamedArrays): StepResult {
    checkMatches(this.params, grads, 'AdamW.step', 'gradient');
    const gradArrays = [...this.params.keys()].map((name) => lookup(grads, name)!);
    const gradNorm = globalNorm(gradArrays);
    const scale = clipScale(gradNorm, this.config.maxGradNorm);

    this.t += 1;
    const { beta1: b1, beta2: b2, eps } = this.config;
    const { invBc2Sqrt } = adamWFactors(this.config, this._lr, this.t);
    let k = 0;
    for (const [name, p] of this.params) {
      const g = gradArrays[k++]!;
      const { decay, stepSize } = adamWFactors(this.config, this._lr * (this.lrScales.get(name) ?? 1), this.t);
      const m = this.m.get(name)!;
      const v = this.v.get(name)!;
      // One fused pass per tensor; clipping is folded in as `scale` so the caller's grads stay untouched.
      // Intermediates are float64; m, v and p are rounded to float32 when stored, as torch stores them.
      for (let i = 0; i < p.length; i++) {
        const gi = g[i]! * scale;
        const mi = b1 * m[i]! + (1 - b1) * gi;
        const vi = b2 * v[i]! + (1 - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i]! * decay - (stepSize * mi) / (Math.sqrt(vi) * invBc2Sqrt + eps);
      }
    }
    return { gradNorm, clipped: scale !== 1 };
  }

  /** Copies of the moments and the step count, safe to keep while training goes on. */
  state(): AdamWState {
    const copy = (src: Map<string, Float32Array>) => Object.fromEntries([...src].map(([k, a]) => [k, a.slice()]));
    return { t: this.t, m: copy(this.m), v: copy(this.v) };
  }

  /** Restores state() output (e.g. from a checkpoint); the parameters themselves are restored separately. */
  loadState(state: AdamWState): void {
    if (!Number.isInteger(state.t) || state.t < 0) throw new Error(`AdamW.loadState: t must be an integer >= 0, got ${state.t}`);
    checkMatches(this.params, state.m, 'AdamW.loadState', 'first moment (m)');
    checkMatches(this.params, state.v, 'AdamW.loadState', 'second moment (v)');
    for (const name of this.params.keys()) {
      this.m.get(name)!.set(state.m[name]!);
      this.v.get(name)!.set(state.v[name]!);
    }
    this.t = state.t;
  }
}

/** Exponential moving average of weights: shadow = decay * shadow + (1 - decay) * param. */
export class EMA {
  /** The averaged weights; starts as a copy of the parameters given to the constructor. */
  readonly shadow: ReadonlyMap<string, Float32Array>;
  readonly decay: number;

  constructor(params: NamedArrays, decay = 0.9999) {
    if (!(decay >= 0 && decay <= 1)) throw new Error(`EMA: decay must be in [0, 1], got ${decay}`);
    this.decay = decay;
    // Copies: the shadow must not move when the live parameters are updated in place.
    this.shadow = new Map([...toMap(params, 'EMA')].map(([name, p]) => [name, p.slice()]));
  }

  update(params: NamedArrays): void {
    checkMatches(this.shadow, params, 'EMA.update', 'parameter');
    const d = this.decay;
    for (const [name, s] of this.shadow) {
      const p = lookup(params, name)!;
      for (let i = 0; i < s.length; i++) s[i] = d * s[i]! + (1 - d) * p[i]!;
    }
  }

  state(): EMAState {
    return { shadow: Object.fromEntries([...this.shadow].map(([k, a]) => [k, a.slice()])) };
  }

  loadState(state: EMAState): void {
    checkMatches(this.shadow, state.shadow, 'EMA.loadState', 'shadow');
    for (const [name, s] of this.shadow) s.set(state.shadow[name]!);
  }
}
