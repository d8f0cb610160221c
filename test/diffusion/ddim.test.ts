import { describe, it, expect } from 'vitest';
import { DdimSampler } from '../../src/diffusion/ddim.js';
import { createSampler } from '../../src/diffusion/sampler.js';
import { alphasCumprod, linearBetas, spacedTimesteps } from '../../src/diffusion/schedule.js';
import { Rng } from '../../src/tensor/rng.js';
import { bytesEqual, maxAbs, maxAbsDiff, maxScaledDiff, noised, randn32, roundingBound } from './helpers.js';

const AB = alphasCumprod(linearBetas());

describe('DDIM (eta = 0) follows the exact trajectory of a known x0', () => {
  for (const steps of [1, 2, 10, 20, 50, 250]) {
    it(`T=${steps}: every step lands on sqrt(ab_prev) x0 + sqrt(1 - ab_prev) eps, and the output is x0`, () => {
      const n = 257;
      const x0 = randn32(n, 1);
      const eps = randn32(n, 2);
      const s = createSampler('ddim', { steps });
      expect(s.timesteps).toEqual(spacedTimesteps(steps));
      const scale = maxAbs(x0) + maxAbs(eps);
      const stored = [AB[s.timesteps[0]!]!]; // alpha_bars at which x was rounded to float32
      let x = noised(x0, eps, stored[0]!);
      for (let i = 0; i < steps; i++) {
        // With the true eps the x0 prediction is x0, up to the amplified float32 rounding of x.
        expect(maxAbsDiff(s.predictX0(i, x, eps), x0)).toBeLessThan(roundingBound(stored, 1, scale));
        x = s.step(i, x, eps);
        const abPrev = i + 1 < steps ? AB[s.timesteps[i + 1]!]! : 1;
        stored.push(abPrev);
        expect(maxAbsDiff(x, noised(x0, eps, abPrev))).toBeLessThan(roundingBound(stored, abPrev, scale));
      }
      // The final sample is x0 to ~2e-5..6e-5 here, mostly the float32 rounding of x_T amplified by 1/sqrt(ab_999);
      // the bound stays far below what any formula error would produce.
      expect(maxAbsDiff(x, x0)).toBeLessThan(roundingBound(stored, 1, scale));
      expect(roundingBound(stored, 1, scale)).toBeLessThan(1e-2);
    });
  }
});

describe('DDIM matches the ADM/DiT reference', () => {
  it('10 steps, eta=0, against numpy ddim_sample of a SpacedDiffusion (golden values)', () => {
    // Generated with numpy from guided-diffusion's formulas: SpacedDiffusion rebuilds betas from
    // alphas_cumprod at space_timesteps(1000, "10"); per step x0 = sqrt(1/ab) x - sqrt(1/ab - 1) eps,
    // eps' = (sqrt(1/ab) x - x0) / sqrt(1/ab - 1), x = sqrt(ab_prev) x0 + sqrt(1 - ab_prev) eps', and x is
    // rounded to float32 after each step (as stored here). The "model" is eps = f32(0.9 x + 0.1 base (1 + 0.1 k)).
    const golden = [
      [-1.8766989707946777, -0.10864881426095963, 0.10143232345581055, 0.757134199142456, 2.517967939376831],
      [-2.250654697418213, 0.04469742998480797, 0.07452969998121262, 0.6185863614082336, 3.033165454864502],
      [-2.600147247314453, 0.20017047226428986, 0.046113599091768265, 0.4689940810203552, 3.5155956745147705],
      [-2.8951804637908936, 0.3472846448421478, 0.017853369936347008, 0.31646928191185, 3.924072027206421],
      [-3.088514566421509, 0.47354647517204285, -0.008704273961484432, 0.16713905334472656, 4.194042205810547],
      [-3.1151607036590576, 0.5630298852920532, -0.031771112233400345, 0.027346035465598106, 4.236794948577881],
      [-2.9159064292907715, 0.5990228652954102, -0.049125153571367264, -0.09348980337381363, 3.971336841583252],
      [-2.4798598289489746, 0.5723996162414551, -0.058728381991386414, -0.18362724781036377, 3.38230299949646],
      [-1.859817624092102, 0.48825162649154663, -0.05992092937231064, -0.2352416217327118, 2.5411579608917236],
      [-1.8441214561462402, 0.48578163981437683, -0.059859633445739746, -0.23598624765872955, 2.519838571548462],
    ];
    const base = [0.5, -1.0, 0.25, 1.5, -0.75];
    const s = createSampler('ddim', { steps: 10, eta: 0 });
    let x: Float32Array = Float32Array.from([-1.5, -0.25, 0.125, 0.875, 2.0]);
    for (let k = 0; k < 10; k++) {
      const eps = Float32Array.from(x, (v, j) => 0.9 * v + 0.1 * base[j]! * (1 + 0.1 * k));
      x = s.step(k, x, eps);
      expect(maxScaledDiff(x, golden[k]!)).toBeLessThan(1e-6);
    }
  });
});

describe('DDIM with eta > 0', () => {
  const n = 64;
  const x0 = randn32(n, 3);
  const eps = randn32(n, 4);

  it('adds sigma * noise with sigma = eta sqrt((1-ab_prev)/(1-ab)) sqrt(1-ab/ab_prev)', () => {
    const eta = 0.7;
    const s = createSampler('ddim', { steps: 10, eta });
    const i = 3;
    const ab = AB[s.timesteps[i]!]!;
    const abPrev = AB[s.timesteps[i + 1]!]!;
    const x = noised(x0, eps, ab);
    const got = s.step(i, x, eps, new Rng(99));
    // Independent float64 evaluation of the DDIM update with the same noise stream.
    const noise = new Rng(99);
    const sigma = eta * Math.sqrt((1 - abPrev) / (1 - ab)) * Math.sqrt(1 - ab / abPrev);
    expect(sigma).toBeGreaterThan(0.01);
    const want = Array.from(x, (v, k) => {
      const px0 = (v - Math.sqrt(1 - ab) * eps[k]!) / Math.sqrt(ab);
      return Math.sqrt(abPrev) * px0 + Math.sqrt(1 - abPrev - sigma ** 2) * eps[k]! + sigma * noise.normal();
    });
    expect(maxAbsDiff(got, want)).toBeLessThan(1e-6);
    // It really is noisier than eta = 0.
    const det = createSampler('ddim', { steps: 10 }).step(i, x, eps);
    expect(maxAbsDiff(got, det)).toBeGreaterThan(0.01);
  });

  it('is deterministic for a seed (identical bytes) and differs across seeds', () => {
    const run = (seed: number): Float32Array => {
      const s = createSampler('ddim', { steps: 10, eta: 1 });
      const rng = new Rng(seed);
      let x: Float32Array = new Rng(seed + 1000).fillNormal(new Float32Array(n));
      for (let i = 0; i < 10; i++) x = s.step(i, x, Float32Array.from(x, (v, k) => 0.5 * v + 0.5 * eps[k]!), rng);
      return x;
    };
    const a = run(5);
    expect(bytesEqual(a, run(5))).toBe(true);
    expect(bytesEqual(a, run(6))).toBe(false);
    expect(a.every(Number.isFinite)).toBe(true);
  });

  it('adds no noise at the last step: the output is exactly the x0 prediction', () => {
    const s = createSampler('ddim', { steps: 10, eta: 1 });
    const x = noised(x0, eps, AB[0]!);
    expect(bytesEqual(s.step(9, x, eps, new Rng(1)), s.predictX0(9, x, eps))).toBe(true);
  });

  it('throws without an rng, and rejects eta outside [0, 1]', () => {
    const s = createSampler('ddim', { steps: 10, eta: 0.5 });
    const x = noised(x0, eps, 0.5);
    expect(() => s.step(0, x, eps)).toThrow(/eta=0.5 > 0.*pass an Rng/);
    expect(() => createSampler('ddim', { steps: 10, eta: 1.5 })).toThrow(/eta must lie in \[0, 1\]/);
    expect(() => createSampler('ddim', { steps: 10, eta: -0.1 })).toThrow(/eta/);
    expect(() => createSampler('ddim', { steps: 10, eta: NaN })).toThrow(/eta/);
  });
});

describe('DDIM options and argument checks', () => {
  it('clipX0 clamps the x0 prediction and re-derives eps from it (as the reference does)', () => {
    const s = new DdimSampler({ steps: 10, clipX0: 1 });
    const i = 2;
    const ab = AB[s.timesteps[i]!]!;
    const abPrev = AB[s.timesteps[i + 1]!]!;
    const x0 = Float32Array.from([3, -0.5, -2]);
    const eps = Float32Array.from([0.2, 1, -1]);
    const x = noised(x0, eps, ab);
    const px0 = s.predictX0(i, x, eps);
    expect(maxAbsDiff(px0, [1, -0.5, -1])).toBeLessThan(1e-5);
    const want = Array.from(x, (v, k) => {
      const c = Math.min(1, Math.max(-1, (v - Math.sqrt(1 - ab) * eps[k]!) / Math.sqrt(ab)));
      const e = (v - Math.sqrt(ab) * c) / Math.sqrt(1 - ab);
      return Math.sqrt(abPrev) * c + Math.sqrt(1 - abPrev) * e;
    });
    expect(maxAbsDiff(s.step(i, x, eps), want)).toBeLessThan(1e-6);
    expect(() => new DdimSampler({ steps: 10, clipX0: 0 })).toThrow(/clipX0/);
  });

  it('honours a custom schedule', () => {
    const s = createSampler('ddim', { steps: 4, numTrainSteps: 10, betaStart: 0.01, betaEnd: 0.2 });
    expect(s.timesteps).toEqual([9, 6, 3, 0]);
    const ab = alphasCumprod(linearBetas(10, 0.01, 0.2));
    const x0 = randn32(8, 7);
    const eps = randn32(8, 8);
    const out = s.step(0, noised(x0, eps, ab[9]!), eps);
    expect(maxAbsDiff(out, noised(x0, eps, ab[6]!))).toBeLessThan(1e-6);
  });

  it('rejects bad indices and mismatched lengths', () => {
    const s = createSampler('ddim', { steps: 10 });
    const a = new Float32Array(4);
    expect(() => s.step(10, a, a)).toThrow(/index must be an integer in \[0, 10\)/);
    expect(() => s.step(-1, a, a)).toThrow(/index/);
    expect(() => s.step(0.5, a, a)).toThrow(/index/);
    expect(() => s.step(0, a, new Float32Array(3))).toThrow(/same length/);
    expect(() => s.predictX0(0, a, new Float32Array(3))).toThrow(/same length/);
  });
});
