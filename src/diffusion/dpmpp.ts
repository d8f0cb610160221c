/**
 * DPM-Solver++(2M): data prediction, multistep, second order, as diffusers' DPMSolverMultistepScheduler with
 * algorithm_type='dpmsolver++', solver_order=2, solver_type='midpoint', lower_order_final=True and
 * final_sigmas_type='zero', but over the DiT spaced timesteps (the same grid as DDIM here).
 *
 *   alpha_t = sqrt(ab_t), sigma_t = sqrt(1 - ab_t), lambda_t = log(alpha_t) - log(sigma_t)
 *   x0_i = (x - sigma_i * eps) / alpha_i                                (convert_model_output)
 *   h = lambda_{i+1} - lambda_i
 *   step 0, first order:  x_{i+1} = (sigma_{i+1}/sigma_i) x - alpha_{i+1} expm1(-h) x0_i
 *   later steps, 2M:      r = h_prev / h, D = (1 + 1/(2r)) x0_i - (1/(2r)) x0_{i-1}
 *                         x_{i+1} = (sigma_{i+1}/sigma_i) x - alpha_{i+1} expm1(-h) D
 *   last step: first order to sigma = 0 (alpha = 1, lambda = +inf, expm1(-h) = -1), which is exactly x0_i.
 *
 * Choices: expm1(-h) instead of diffusers' exp(-h) - 1 (same value, better conditioned for small h);
 * the previous x0 prediction is kept in float64 (diffusers keeps it in the model dtype).
 */
import type { Sampler, SamplerOptions } from './sampler.js';
import { checkStepArgs, clip, stepSchedule } from './common.js';

export class DpmppSampler implements Sampler {
  readonly name = 'dpmpp' as const;
  readonly timesteps: readonly number[];
  private readonly clipX0: number | undefined;
  private readonly alpha: Float64Array;
  private readonly sigma: Float64Array;
  private readonly lambda: Float64Array;
  // Trajectory state: the data prediction of the previous step, and the index step() expects next.
  private prevX0: Float64Array | undefined;
  private nextIndex = 0;

  constructor(opts: SamplerOptions) {
    if (opts.eta !== undefined && opts.eta !== 0) {
      throw new Error(`dpmpp is deterministic and takes no eta (got ${opts.eta}); eta is a DDIM option`);
    }
    const { timesteps, alphaBar, clipX0 } = stepSchedule(opts);
    this.timesteps = timesteps;
    this.clipX0 = clipX0;
    const n = timesteps.length;
    this.alpha = Float64Array.from(alphaBar, (ab) => Math.sqrt(ab));
    this.sigma = Float64Array.from(alphaBar, (ab) => Math.sqrt(1 - ab));
    this.lambda = new Float64Array(n);
    for (let i = 0; i < n; i++) this.lambda[i] = Math.log(this.alpha[i]!) - Math.log(this.sigma[i]!);
  }

  private x0At(index: number, x: Float32Array, eps: Float32Array): Float64Array {
    const a = this.alpha[index]!;
    const s = this.sigma[index]!;
    const x0 = new Float64Array(x.length);
    for (let k = 0; k < x.length; k++) x0[k] = clip((x[k]! - s * eps[k]!) / a, this.clipX0);
    return x0;
  }

  predictX0(index: number, x: Float32Array, eps: Float32Array): Float32Array {
    checkStepArgs('dpmpp', index, this.timesteps.length, x, eps);
    return Float32Array.from(this.x0At(index, x, eps));
  }

  step(index: number, x: Float32Array, eps: Float32Array): Float32Array {
    checkStepArgs('dpmpp', index, this.timesteps.length, x, eps);
    // Step 0 always starts a new trajectory; any other index must follow the previous call.
    if (index === 0) this.reset();
    else if (index !== this.nextIndex || this.prevX0 === undefined) {
      throw new Error(`dpmpp: steps must be called in order (expected index ${this.nextIndex}, got ${index}); reset() or restart at 0`);
    } else if (this.prevX0.length !== x.length) {
      throw new Error(`dpmpp: latent length changed mid-trajectory (${this.prevX0.length} -> ${x.length})`);
    }
    const n = this.timesteps.length;
    const x0 = this.x0At(index, x, eps);
    const prev = this.prevX0;
    this.prevX0 = x0;
    this.nextIndex = index + 1;

    // Final step to sigma = 0: the first-order update reduces exactly to the data prediction.
    if (index === n - 1) return Float32Array.from(x0);

    const ratio = this.sigma[index + 1]! / this.sigma[index]!;
    const h = this.lambda[index + 1]! - this.lambda[index]!;
    const coef = -this.alpha[index + 1]! * Math.expm1(-h);
    const out = new Float32Array(x.length);
    if (prev === undefined) {
      // First step: no history yet, first order (DDIM in data-prediction form).
      for (let k = 0; k < x.length; k++) out[k] = ratio * x[k]! + coef * x0[k]!;
    } else {
      const hPrev = this.lambda[index]! - this.lambda[index - 1]!;
      const half = 0.5 / (hPrev / h); // 1 / (2r)
      for (let k = 0; k < x.length; k++) {
        const d = (1 + half) * x0[k]! - half * prev[k]!;
        out[k] = ratio * x[k]! + coef * d;
      }
    }
    return out;
  }

  reset(): void {
    this.prevX0 = undefined;
    this.nextIndex = 0;
  }

  fork(): DpmppSampler {
    // step() replaces prevX0 rather than writing into it, so the copy may share it.
    return Object.assign(Object.create(DpmppSampler.prototype) as DpmppSampler, this);
  }
}
