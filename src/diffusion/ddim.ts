/**
 * DDIM over the DiT spaced timesteps, as the respaced `GaussianDiffusion.ddim_sample` of the DiT / ADM
 * reference does it:
 *   ab = alpha_bar(t_i), ab_prev = alpha_bar(t_{i+1}) (1.0 after the last step)
 *   x0 = (x - sqrt(1 - ab) * eps) / sqrt(ab)
 *   sigma = eta * sqrt((1 - ab_prev) / (1 - ab)) * sqrt(1 - ab / ab_prev)
 *   x_prev = sqrt(ab_prev) * x0 + sqrt(1 - ab_prev - sigma^2) * eps + sigma * noise
 * No noise at the last step (the reference masks it where the spaced t == 0; sigma is 0 there anyway).
 */
import type { Rng } from '../tensor/rng.js';
import type { Sampler, SamplerOptions } from './sampler.js';
import { checkStepArgs, clip, stepSchedule } from './common.js';

export class DdimSampler implements Sampler {
  readonly name = 'ddim' as const;
  readonly timesteps: readonly number[];
  readonly eta: number;
  private readonly clipX0: number | undefined;
  // Per-step coefficients, precomputed in float64.
  private readonly sqrtAb: Float64Array;
  private readonly sqrt1mAb: Float64Array;
  private readonly sqrtAbPrev: Float64Array;
  private readonly dirCoef: Float64Array; // sqrt(1 - ab_prev - sigma^2)
  private readonly sigma: Float64Array;

  constructor(opts: SamplerOptions) {
    const eta = opts.eta ?? 0;
    // eta > 1 makes 1 - ab_prev - sigma^2 negative (NaN samples), so it is refused rather than clamped.
    if (!(eta >= 0 && eta <= 1)) throw new Error(`DDIM eta must lie in [0, 1], got ${eta}`);
    this.eta = eta;
    const { timesteps, alphaBar, clipX0 } = stepSchedule(opts);
    this.timesteps = timesteps;
    this.clipX0 = clipX0;
    const n = timesteps.length;
    this.sqrtAb = new Float64Array(n);
    this.sqrt1mAb = new Float64Array(n);
    this.sqrtAbPrev = new Float64Array(n);
    this.dirCoef = new Float64Array(n);
    this.sigma = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const ab = alphaBar[i]!;
      const abPrev = i + 1 < n ? alphaBar[i + 1]! : 1;
      const sigma = i + 1 < n ? eta * Math.sqrt((1 - abPrev) / (1 - ab)) * Math.sqrt(1 - ab / abPrev) : 0;
      this.sqrtAb[i] = Math.sqrt(ab);
      this.sqrt1mAb[i] = Math.sqrt(1 - ab);
      this.sqrtAbPrev[i] = Math.sqrt(abPrev);
      // Non-negative in exact arithmetic for eta <= 1; max() only guards against a tiny negative from rounding.
      this.dirCoef[i] = Math.sqrt(Math.max(0, 1 - abPrev - sigma * sigma));
      this.sigma[i] = sigma;
    }
  }

  predictX0(index: number, x: Float32Array, eps: Float32Array): Float32Array {
    checkStepArgs('ddim', index, this.timesteps.length, x, eps);
    const a = this.sqrtAb[index]!;
    const s = this.sqrt1mAb[index]!;
    const out = new Float32Array(x.length);
    for (let k = 0; k < x.length; k++) out[k] = clip((x[k]! - s * eps[k]!) / a, this.clipX0);
    return out;
  }

  step(index: number, x: Float32Array, eps: Float32Array, rng?: Rng): Float32Array {
    checkStepArgs('ddim', index, this.timesteps.length, x, eps);
    // Required at every step (not only where noise is drawn) so a missing rng shows up on the first call.
    if (this.eta > 0 && rng === undefined) {
      throw new Error(`ddim: eta=${this.eta} > 0 draws noise at each step; pass an Rng to step()`);
    }
    const a = this.sqrtAb[index]!;
    const s = this.sqrt1mAb[index]!;
    const aPrev = this.sqrtAbPrev[index]!;
    const dir = this.dirCoef[index]!;
    const sigma = this.sigma[index]!;
    const c = this.clipX0;
    const out = new Float32Array(x.length);
    for (let k = 0; k < x.length; k++) {
      const xk = x[k]!;
      let e = eps[k]!;
      const x0 = clip((xk - s * e) / a, c);
      // Like the reference (_predict_eps_from_xstart), eps is re-derived from a clamped x0 so the
      // direction term stays consistent with it; without clamping it is the model's eps unchanged.
      if (c !== undefined) e = (xk - a * x0) / s;
      let v = aPrev * x0 + dir * e;
      if (sigma > 0) v += sigma * rng!.normal(); // one normal per element, in element order
      out[k] = v;
    }
    return out;
  }

  reset(): void {
    // Stateless: each DDIM step depends only on (index, x, eps, noise).
  }

  fork(): DdimSampler {
    return this;
  }
}
