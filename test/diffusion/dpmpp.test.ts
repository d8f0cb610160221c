import { describe, it, expect } from 'vitest';
import { createSampler } from '../../src/diffusion/sampler.js';
import { alphasCumprod, linearBetas, spacedTimesteps } from '../../src/diffusion/schedule.js';
import { Rng } from '../../src/tensor/rng.js';
import { bytesEqual, maxAbs, maxAbsDiff, maxScaledDiff, noised, randn32, roundingBound } from './helpers.js';

const AB = alphasCumprod(linearBetas());

/**
 * Independent float64 transcription of diffusers' DPMSolverMultistepScheduler (algorithm_type='dpmsolver++',
 * solver_order=2, solver_type='midpoint', lower_order_final=True, final_sigmas_type='zero', prediction_type=
 * 'epsilon'), on the given timesteps. Deliberately written the diffusers way: VE sigmas sqrt((1-ab)/ab) with
 * _sigma_to_alpha_sigma_t, exp(-h) - 1, and the D0 / D1 split of the midpoint update.
 */
class DiffusersDpmSolverPP2M {
  private readonly sigmas: number[]; // VE sigmas per step, then the final 0
  private readonly modelOutputs: (Float64Array | undefined)[] = [undefined, undefined];
  private lowerOrderNums = 0;
  private stepIndex = 0;

  constructor(private readonly timesteps: number[], ab: Float64Array) {
    this.sigmas = [...timesteps.map((t) => Math.sqrt((1 - ab[t]!) / ab[t]!)), 0];
  }

  private alphaSigma(sigma: number): [number, number] {
    const alphaT = 1 / Math.sqrt(sigma ** 2 + 1);
    return [alphaT, sigma * alphaT];
  }

  step(modelOutput: ArrayLike<number>, sample: ArrayLike<number>): Float64Array {
    const n = sample.length;
    const i = this.stepIndex;
    const lowerOrderFinal = i === this.timesteps.length - 1; // final_sigmas_type == 'zero' forces it
    // convert_model_output: x0_pred = (sample - sigma_t * eps) / alpha_t
    const [a0, s0] = this.alphaSigma(this.sigmas[i]!);
    const x0 = new Float64Array(n);
    for (let k = 0; k < n; k++) x0[k] = (sample[k]! - s0 * modelOutput[k]!) / a0;
    this.modelOutputs[0] = this.modelOutputs[1];
    this.modelOutputs[1] = x0;

    const [alphaT, sigmaT] = this.alphaSigma(this.sigmas[i + 1]!);
    const lambdaT = Math.log(alphaT) - Math.log(sigmaT); // +Infinity at the final sigma = 0
    const lambdaS0 = Math.log(a0) - Math.log(s0);
    const h = lambdaT - lambdaS0;
    const out = new Float64Array(n);
    if (this.lowerOrderNums < 1 || lowerOrderFinal) {
      // dpm_solver_first_order_update
      for (let k = 0; k < n; k++) out[k] = (sigmaT / s0) * sample[k]! - alphaT * (Math.exp(-h) - 1) * x0[k]!;
    } else {
      // multistep_dpm_solver_second_order_update
      const [a1, s1] = this.alphaSigma(this.sigmas[i - 1]!);
      const lambdaS1 = Math.log(a1) - Math.log(s1);
      const h0 = lambdaS0 - lambdaS1;
      const r0 = h0 / h;
      const m0 = this.modelOutputs[1]!;
      const m1 = this.modelOutputs[0]!;
      for (let k = 0; k < n; k++) {
        const D0 = m0[k]!;
        const D1 = (1 / r0) * (m0[k]! - m1[k]!);
        out[k] = (sigmaT / s0) * sample[k]! - alphaT * (Math.exp(-h) - 1) * D0 - 0.5 * (alphaT * (Math.exp(-h) - 1)) * D1;
      }
    }
    if (this.lowerOrderNums < 2) this.lowerOrderNums++;
    this.stepIndex++;
    return out;
  }
}

describe('DPM++ 2M with the exact eps of a fixed x0', () => {
  for (const steps of [1, 2, 10, 20, 50]) {
    it(`T=${steps}: stays on alpha x0 + sigma eps and returns x0`, () => {
      const n = 257;
      const x0 = randn32(n, 11);
      const eps = randn32(n, 12);
      const s = createSampler('dpmpp', { steps });
      expect(s.timesteps).toEqual(spacedTimesteps(steps));
      const scale = maxAbs(x0) + maxAbs(eps);
      const stored = [AB[s.timesteps[0]!]!];
      let x = noised(x0, eps, stored[0]!);
      for (let i = 0; i < steps; i++) {
        expect(maxAbsDiff(s.predictX0(i, x, eps), x0)).toBeLessThan(roundingBound(stored, 1, scale));
        x = s.step(i, x, eps);
        const abNext = i + 1 < steps ? AB[s.timesteps[i + 1]!]! : 1;
        stored.push(abNext);
        // The 2M correction vanishes when successive x0 predictions agree, so the 2x margin covers it.
        expect(maxAbsDiff(x, noised(x0, eps, abNext))).toBeLessThan(2 * roundingBound(stored, abNext, scale));
      }
      expect(maxAbsDiff(x, x0)).toBeLessThan(2 * roundingBound(stored, 1, scale));
    });
  }
});

describe('DPM++ 2M matches a float64 transcription of diffusers', () => {
  const n = 96;
  const modelEps = (x: Float32Array, k: number): Float32Array => {
    // A stand-in "model": part signal, part fresh random eps, so successive x0 predictions differ.
    const r = new Rng(1000 + k);
    return Float32Array.from(x, (v) => 0.6 * v + 0.8 * r.normal());
  };

  for (const steps of [2, 3, 10, 20]) {
    it(`T=${steps}: step by step from the same inputs`, () => {
      const s = createSampler('dpmpp', { steps });
      const ref = new DiffusersDpmSolverPP2M(spacedTimesteps(steps), AB);
      let x = randn32(n, 21);
      for (let i = 0; i < steps; i++) {
        const eps = modelEps(x, i);
        const want = ref.step(eps, x);
        x = s.step(i, x, eps);
        // Same inputs each step; only float32 storage of the output and ulp-level formula differences remain.
        expect(maxScaledDiff(x, want)).toBeLessThan(1e-6);
      }
    });
  }

  it('T=20: whole trajectory against the float64 reference on its own trajectory', () => {
    const steps = 20;
    const s = createSampler('dpmpp', { steps });
    const ref = new DiffusersDpmSolverPP2M(spacedTimesteps(steps), AB);
    let x = randn32(n, 31);
    let xr: Float64Array = Float64Array.from(x);
    for (let i = 0; i < steps; i++) {
      const r = new Rng(2000 + i);
      const noise = Array.from({ length: n }, () => r.normal());
      x = s.step(i, x, Float32Array.from(x, (v, k) => 0.6 * v + 0.8 * noise[k]!));
      xr = ref.step(Float32Array.from(xr, (v, k) => 0.6 * v + 0.8 * noise[k]!), xr);
    }
    expect(maxScaledDiff(x, xr)).toBeLessThan(1e-4);
  });

  it('differs from first-order (DDIM) after the first step: the 2M correction is applied', () => {
    const steps = 10;
    const dpm = createSampler('dpmpp', { steps });
    const ddim = createSampler('ddim', { steps });
    let x = randn32(n, 41);
    const e0 = modelEps(x, 0);
    const a = dpm.step(0, x, e0);
    const b = ddim.step(0, x, e0);
    // First step is first order: DPM-Solver++(1) is DDIM (eta 0) in data-prediction form.
    expect(maxScaledDiff(a, b)).toBeLessThan(1e-6);
    x = a;
    const e1 = modelEps(x, 1);
    expect(maxScaledDiff(dpm.step(1, x, e1), ddim.step(1, x, e1))).toBeGreaterThan(1e-3);
  });
});

describe('DPM++ state handling', () => {
  const n = 16;
  const run = (s: ReturnType<typeof createSampler>, seed: number): Float32Array => {
    let x = randn32(n, seed);
    for (let i = 0; i < s.timesteps.length; i++) x = s.step(i, x, Float32Array.from(x, (v, k) => 0.9 * v + 0.01 * k));
    return x;
  };

  it('is deterministic, restarts at index 0 and after reset()', () => {
    const s = createSampler('dpmpp', { steps: 10 });
    const a = run(s, 1);
    expect(bytesEqual(a, run(s, 1))).toBe(true); // second trajectory starts at 0: implicit restart
    s.step(0, a, a);
    s.step(1, a, a);
    s.reset();
    expect(bytesEqual(a, run(s, 1))).toBe(true);
    expect(bytesEqual(a, run(createSampler('dpmpp', { steps: 10 }), 1))).toBe(true);
  });

  it('rejects out-of-order steps and a length change mid-trajectory', () => {
    const s = createSampler('dpmpp', { steps: 10 });
    const x = randn32(n, 2);
    expect(() => s.step(1, x, x)).toThrow(/in order \(expected index 0, got 1\)/);
    s.step(0, x, x);
    expect(() => s.step(2, x, x)).toThrow(/expected index 1, got 2/);
    const y = randn32(n + 1, 3);
    expect(() => s.step(1, y, y)).toThrow(/length changed/);
    s.reset();
    expect(() => s.step(1, x, x)).toThrow(/expected index 0/);
  });

  it('takes no eta; clipX0 clamps the x0 prediction', () => {
    expect(() => createSampler('dpmpp', { steps: 10, eta: 0.5 })).toThrow(/takes no eta/);
    expect(() => createSampler('dpmpp', { steps: 10, eta: 0 })).not.toThrow();
    const s = createSampler('dpmpp', { steps: 10, clipX0: 1 });
    const x0 = Float32Array.from([3, -0.5, -2]);
    const eps = Float32Array.from([0.2, 1, -1]);
    const x = noised(x0, eps, AB[s.timesteps[5]!]!);
    expect(maxAbsDiff(s.predictX0(5, x, eps), [1, -0.5, -1])).toBeLessThan(1e-5);
  });
});
