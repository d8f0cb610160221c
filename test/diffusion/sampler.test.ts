import { describe, it, expect } from 'vitest';
import { createSampler, initialNoise, SAMPLER_NAMES } from '../../src/diffusion/sampler.js';
import { splitGuided, duplicateForCfg } from '../../src/diffusion/cfg.js';
import { Rng } from '../../src/tensor/rng.js';
import { bytesEqual } from './helpers.js';

describe('createSampler', () => {
  it('builds both samplers with the DiT timesteps', () => {
    expect(SAMPLER_NAMES).toEqual(['ddim', 'dpmpp']);
    for (const name of SAMPLER_NAMES) {
      const s = createSampler(name, { steps: 10 });
      expect(s.name).toBe(name);
      expect(s.timesteps).toEqual([999, 888, 777, 666, 555, 444, 333, 222, 111, 0]);
    }
  });

  it('rejects an unknown name, listing the valid ones', () => {
    expect(() => createSampler('euler', { steps: 10 })).toThrow('Unknown sampler "euler"; valid names: ddim, dpmpp');
    expect(() => createSampler('DDIM', { steps: 10 })).toThrow(/valid names: ddim, dpmpp/);
  });

  it('propagates step validation', () => {
    expect(() => createSampler('ddim', { steps: 0 })).toThrow(/steps must be an integer/);
    expect(() => createSampler('dpmpp', { steps: 1001 })).toThrow(/steps must be an integer/);
  });
});

describe('initialNoise', () => {
  it('is standard normal from the seeded Rng, byte-reproducible', () => {
    const a = initialNoise(1000, new Rng(42));
    expect(bytesEqual(a, initialNoise(1000, new Rng(42)))).toBe(true);
    expect(bytesEqual(a, new Rng(42).fillNormal(new Float32Array(1000)))).toBe(true);
    expect(bytesEqual(a, initialNoise(1000, new Rng(43)))).toBe(false);
    let m = 0;
    let v = 0;
    for (const x of a) m += x / a.length;
    for (const x of a) v += (x - m) ** 2 / a.length;
    expect(Math.abs(m)).toBeLessThan(0.1);
    expect(Math.abs(v - 1)).toBeLessThan(0.1);
    expect(initialNoise(0, new Rng(1)).length).toBe(0);
    expect(() => initialNoise(-1, new Rng(1))).toThrow(/non-negative integer/);
  });
});

describe('end-to-end loop with a fake model', () => {
  // batch 2, 4 latent channels, 8 output channels (learned sigma), 2x2 spatial; CFG scale 1.5.
  const batch = 2;
  const C = 4;
  const S = 4;
  const fakeModel = (xIn: Float32Array, t: number): Float32Array => {
    // Rows: [eps(C), var(C)] per sample; cond rows differ from uncond rows by a class-dependent offset.
    const rows = xIn.length / (C * S);
    const out = new Float32Array(rows * 2 * C * S);
    for (let r = 0; r < rows; r++)
      for (let k = 0; k < C * S; k++) {
        const offset = r < rows / 2 ? 0.05 * (r + 1) : 0;
        out[r * 2 * C * S + k] = 0.95 * xIn[r * C * S + k]! + offset + 1e-4 * t;
        out[r * 2 * C * S + C * S + k] = -3; // variance channels, must be ignored
      }
    return out;
  };

  for (const name of SAMPLER_NAMES) {
    it(`${name}: same seed -> identical bytes, finite output`, () => {
      const sample = (seed: number): Float32Array => {
        const s = createSampler(name, { steps: 10, eta: name === 'ddim' ? 1 : undefined });
        const rng = new Rng(seed);
        let x = initialNoise(batch * C * S, rng);
        s.timesteps.forEach((t, i) => {
          const eps = splitGuided(fakeModel(duplicateForCfg(x), t), batch, 2 * C, C, S, 1.5);
          x = s.step(i, x, eps, rng);
        });
        return x;
      };
      const a = sample(7);
      expect(a.every(Number.isFinite)).toBe(true);
      expect(bytesEqual(a, sample(7))).toBe(true);
      expect(bytesEqual(a, sample(8))).toBe(false);
    });
  }
});
