import { describe, expect, it } from 'vitest';
import { Rng } from '../../src/tensor/rng.js';
import { createAdamWGraphStep } from '../../src/train/adamw-graph.js';
import { AdamW, EMA, globalNorm, type AdamWConfig } from '../../src/train/optim.js';

type Arrays = Record<string, Float32Array>;

const SHAPES: Record<string, number[]> = { 'w.weight': [3, 4], 'w.bias': [4], scale: [] };

function randomArrays(rng: Rng, std = 1, shapes = SHAPES): Arrays {
  return Object.fromEntries(Object.entries(shapes).map(([k, s]) => [k, rng.fillNormal(new Float32Array(s.reduce((a, b) => a * b, 1)), 0, std)]));
}

function clone(a: Arrays): Arrays {
  return Object.fromEntries(Object.entries(a).map(([k, x]) => [k, x.slice()]));
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
}

/**
 * torch.optim.AdamW as written in its documentation, in float64, one coordinate at a time,
 * deliberately in the m_hat / v_hat form rather than the folded form the implementation uses.
 */
class ReferenceAdamW {
  p: Float64Array;
  m: Float64Array;
  v: Float64Array;
  t = 0;
  constructor(p: ArrayLike<number>, private readonly c: Required<Omit<AdamWConfig, 'maxGradNorm' | 'lrScales'>>) {
    this.p = Float64Array.from(p);
    this.m = new Float64Array(p.length);
    this.v = new Float64Array(p.length);
  }
  step(g: ArrayLike<number>): void {
    const { lr, beta1, beta2, eps, weightDecay } = this.c;
    this.t++;
    for (let i = 0; i < this.p.length; i++) {
      this.p[i] = this.p[i]! - lr * weightDecay * this.p[i]!;
      this.m[i] = beta1 * this.m[i]! + (1 - beta1) * g[i]!;
      this.v[i] = beta2 * this.v[i]! + (1 - beta2) * g[i]! * g[i]!;
      const mHat = this.m[i]! / (1 - beta1 ** this.t);
      const vHat = this.v[i]! / (1 - beta2 ** this.t);
      this.p[i] = this.p[i]! - (lr * mHat) / (Math.sqrt(vHat) + eps);
    }
  }
}

describe('AdamW', () => {
  it('matches a float64 reference of torch AdamW over several steps (weight decay, bias correction)', () => {
    const rng = new Rng(1);
    // Large lr and wd so that decay-before vs decay-after or a missing bias correction differ by >> 1e-6.
    const config = { lr: 0.05, beta1: 0.8, beta2: 0.95, eps: 1e-3, weightDecay: 0.3 };
    const params = randomArrays(rng);
    const opt = new AdamW(params, config);
    const refs = Object.fromEntries(Object.entries(params).map(([k, p]) => [k, new ReferenceAdamW(p, config)]));
    for (let step = 0; step < 8; step++) {
      const grads = randomArrays(rng, 0.1 * (step + 1));
      opt.step(grads);
      for (const [k, ref] of Object.entries(refs)) {
        ref.step(grads[k]!);
        expect(maxAbsDiff(params[k]!, ref.p)).toBeLessThan(1e-6);
      }
    }
    expect(opt.steps).toBe(8);
  });

  it('uses the defaults betas 0.9/0.999 and eps 1e-8', () => {
    const rng = new Rng(2);
    const params = randomArrays(rng);
    const opt = new AdamW(params, { lr: 0.01 });
    expect(opt.config).toMatchObject({ beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 });
    const refs = Object.fromEntries(Object.entries(params).map(([k, p]) => [k, new ReferenceAdamW(p, { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 })]));
    for (let step = 0; step < 5; step++) {
      const grads = randomArrays(rng);
      opt.step(grads);
      for (const [k, ref] of Object.entries(refs)) ref.step(grads[k]!);
    }
    for (const [k, ref] of Object.entries(refs)) expect(maxAbsDiff(params[k]!, ref.p)).toBeLessThan(1e-6);
  });

  it('first step moves every coordinate by -lr * sign(g) (bias correction, wd = 0)', () => {
    const p = new Float32Array([1, -2, 0.5, 3, 0]);
    const start = p.slice();
    const g = new Float32Array([0.3, -5, 1e-3, 40, -0.07]);
    const lr = 0.01;
    new AdamW({ p }, { lr }).step({ p: g });
    for (let i = 0; i < p.length; i++) expect(p[i]! - start[i]!).toBeCloseTo(-lr * Math.sign(g[i]!), 6);
  });

  it('clips the global gradient norm to maxGradNorm without touching the caller\'s grads', () => {
    // With eps much larger than |g| the first update is linear in the gradient Adam sees:
    // dp = -lr * g / (|g| + eps) ~ -lr * g / eps, so the clipped gradient can be read back from dp.
    const eps = 1e6;
    const lr = 1;
    const g = { a: new Float32Array([3, -4]), b: new Float32Array([12]) }; // norm 13
    const gCopy = clone(g);
    const params = { a: new Float32Array(2), b: new Float32Array(1) };
    const res = new AdamW(params, { lr, eps, maxGradNorm: 2 }).step(g);
    expect(res.gradNorm).toBeCloseTo(13, 5);
    expect(res.clipped).toBe(true);
    expect(g).toEqual(gCopy);
    const seen = [...params.a, ...params.b].map((dp) => (-dp * eps) / lr);
    expect(globalNorm([Float32Array.from(seen)])).toBeCloseTo(2, 4);
    // Direction is kept: every component scaled by 2 / 13.
    expect(seen[0]!).toBeCloseTo((3 * 2) / 13, 4);
    expect(seen[2]!).toBeCloseTo((12 * 2) / 13, 4);

    // Below the limit nothing is scaled.
    const small = { a: new Float32Array(2), b: new Float32Array(1) };
    const res2 = new AdamW(small, { lr, eps, maxGradNorm: 20 }).step(g);
    expect(res2).toEqual({ gradNorm: expect.closeTo(13, 5), clipped: false });
    expect(-small.b[0]! * eps).toBeCloseTo(12, 3);
  });

  it('clipping equals feeding pre-scaled gradients over several steps of varying norm', () => {
    const rng = new Rng(3);
    const config = { lr: 0.01, weightDecay: 0.1, eps: 1e-3 };
    const a = randomArrays(rng);
    const b = clone(a);
    const clipped = new AdamW(a, { ...config, maxGradNorm: 1 });
    const manual = new AdamW(b, config);
    for (const std of [5, 0.1, 3, 0.2]) {
      const grads = randomArrays(rng, std);
      const norm = globalNorm(Object.values(grads));
      const r = clipped.step(grads);
      expect(r.clipped).toBe(norm > 1);
      const s = norm > 1 ? 1 / (norm + 1e-6) : 1;
      const scaled = Object.fromEntries(Object.entries(grads).map(([k, x]) => [k, x.map((e) => e * s)]));
      if (norm > 1) expect(globalNorm(Object.values(scaled))).toBeCloseTo(1, 5);
      manual.step(scaled);
      for (const k of Object.keys(a)) expect(maxAbsDiff(a[k]!, b[k]!)).toBeLessThan(1e-6);
    }
  });

  it('minimizes ||W - T||^2 with a decaying lr schedule', () => {
    const rng = new Rng(4);
    const target = rng.fillNormal(new Float32Array(64));
    const w = new Float32Array(64);
    const opt = new AdamW({ w }, { lr: 0.1 });
    const loss = () => target.reduce((s, t, i) => s + (w[i]! - t) ** 2, 0);
    const initial = loss();
    const steps = 400;
    const grad = new Float32Array(64);
    for (let k = 0; k < steps; k++) {
      opt.lr = 0.1 * 0.5 * (1 + Math.cos((Math.PI * k) / steps)); // cosine decay
      for (let i = 0; i < 64; i++) grad[i] = 2 * (w[i]! - target[i]!);
      opt.step({ w: grad });
    }
    expect(loss()).toBeLessThan(1e-6 * initial);
  });

  it('rejects missing, unknown, wrong-length and non-Float32Array gradients, leaving params untouched', () => {
    const params = { a: new Float32Array([1, 2]), b: new Float32Array([3]) };
    const opt = new AdamW(params, { lr: 0.1 });
    const good = { a: new Float32Array(2), b: new Float32Array(1) };
    expect(() => opt.step({ a: good.a })).toThrow("AdamW.step: missing gradient for parameter 'b'");
    expect(() => opt.step({ ...good, c: new Float32Array(1) })).toThrow("AdamW.step: gradient for unknown parameter 'c'");
    expect(() => opt.step({ ...good, b: new Float32Array(3) })).toThrow("AdamW.step: gradient for 'b' has 3 elements, parameter has 1");
    expect(() => opt.step({ ...good, a: new Float64Array(2) as unknown as Float32Array })).toThrow('must be a Float32Array');
    expect(() => opt.step(new Map([['a', good.a]]))).toThrow("missing gradient for parameter 'b'");
    expect(params).toEqual({ a: new Float32Array([1, 2]), b: new Float32Array([3]) });
    expect(opt.steps).toBe(0);
    expect(() => (opt.lr = -1)).toThrow('lr must be');
    expect(() => new AdamW({ a: new Float32Array(1) }, { lr: 0.1, beta2: 1 })).toThrow('beta2 must be in [0, 1)');
    expect(() => new AdamW({}, { lr: 0.1 })).toThrow('no parameters');
  });

  it('lr multipliers: a scaled parameter steps exactly as in an optimizer with lr * multiplier (decay too), others as without', () => {
    const rng = new Rng(21);
    const start = randomArrays(rng);
    const grads = [randomArrays(rng), randomArrays(rng), randomArrays(rng)];
    const config = { lr: 0.01, weightDecay: 0.1 };
    const mixed = clone(start);
    const plain = clone(start);
    const fast = clone(start);
    const frozen = clone(start);
    const optMixed = new AdamW(mixed, { ...config, lrScales: new Map([['w.weight', 3], ['scale', 0]]) });
    const optPlain = new AdamW(plain, config);
    const optFast = new AdamW(fast, { ...config, lr: 0.03 });
    const optFrozen = new AdamW(frozen, { ...config, lr: 0 });
    for (const g of grads) {
      for (const opt of [optMixed, optPlain, optFast, optFrozen]) opt.step(clone(g));
    }
    expect(maxAbsDiff(mixed['w.weight']!, fast['w.weight']!)).toBe(0);
    expect(maxAbsDiff(mixed['w.bias']!, plain['w.bias']!)).toBe(0);
    expect(mixed.scale).toEqual(start.scale);
    expect(maxAbsDiff(mixed['w.weight']!, plain['w.weight']!)).toBeGreaterThan(1e-3);
    expect(() => new AdamW(clone(start), { lr: 0.1, lrScales: new Map([['nope', 2]]) })).toThrow("lr multiplier for unknown parameter 'nope'");
    expect(() => new AdamW(clone(start), { lr: 0.1, lrScales: new Map([['scale', -1]]) })).toThrow("lr multiplier of 'scale' must be a finite number >= 0");
  });

  it('state round trip resumes identically (1..6 straight == 1..3, save, load into a new optimizer, 4..6)', () => {
    const rng = new Rng(5);
    const config = { lr: 0.02, weightDecay: 0.05, maxGradNorm: 2 };
    const start = randomArrays(rng);
    const grads = Array.from({ length: 6 }, () => randomArrays(rng, 1));

    const straight = clone(start);
    const opt = new AdamW(new Map(Object.entries(straight)), config);
    for (const g of grads) opt.step(g);

    const first = new AdamW(clone(start), config);
    for (const g of grads.slice(0, 3)) first.step(g);
    const checkpoint = { params: Object.fromEntries([...first.params].map(([k, p]) => [k, p.slice()])), opt: first.state() };
    const saved = checkpoint.opt;
    first.step(grads[3]!); // later steps must not leak into the saved copy

    const paramsAt3 = clone(checkpoint.params);
    const second = new AdamW(checkpoint.params, config);
    second.loadState(checkpoint.opt);
    expect(second.steps).toBe(3);
    for (const g of grads.slice(3)) second.step(g);
    for (const k of Object.keys(start)) expect(second.params.get(k)).toEqual(straight[k]);

    expect(() => second.loadState({ ...saved, m: { ...saved.m, extra: new Float32Array(1) } })).toThrow("unknown parameter 'extra'");
    // Resuming without the moments (fresh optimizer) gives a different trajectory: the test can tell.
    const naive = new AdamW(paramsAt3, config);
    for (const g of grads.slice(3)) naive.step(g);
    expect(maxAbsDiff(naive.params.get('w.weight')!, straight['w.weight']!)).toBeGreaterThan(1e-4);
  });
});

describe('EMA', () => {
  it('shadow = decay * shadow + (1 - decay) * param, starting from a copy', () => {
    const p = { x: new Float32Array([1, -2]), y: new Float32Array([10]) };
    const ema = new EMA(p, 0.9);
    p.x[0] = 3; // live params change in place; the shadow keeps its own copy
    p.x[1] = 0;
    p.y[0] = 0;
    ema.update(p);
    expect([...ema.shadow.get('x')!]).toEqual([expect.closeTo(0.9 * 1 + 0.1 * 3, 6), expect.closeTo(-1.8, 6)]);
    expect(ema.shadow.get('y')![0]).toBeCloseTo(9, 5);
    p.x[0] = 5;
    ema.update(new Map(Object.entries(p)));
    expect(ema.shadow.get('x')![0]).toBeCloseTo(0.9 * (0.9 * 1 + 0.1 * 3) + 0.1 * 5, 6);
    expect(ema.shadow.get('y')![0]).toBeCloseTo(0.81 * 10, 5);

    const saved = ema.state();
    const other = new EMA({ x: new Float32Array(2), y: new Float32Array(1) }, 0.9);
    other.loadState(saved);
    expect(other.shadow).toEqual(ema.shadow);
    ema.update(p);
    expect(saved.shadow.x![0]).toBeCloseTo(1.58, 6); // state() is a copy...
    expect(ema.shadow.get('x')![0]).toBeCloseTo(0.9 * 1.58 + 0.1 * 5, 6); // ...while the shadow moved on

    expect(() => ema.update({ x: p.x })).toThrow("EMA.update: missing parameter for parameter 'y'");
    expect(() => new EMA(p, 1.5)).toThrow('decay must be in [0, 1]');
  });
});

describe('AdamW as an ONNX graph', () => {
  it('gives the same result as the JS AdamW (weight decay, clipping, lr changes)', async () => {
    const rng = new Rng(6);
    const config = { lr: 0.03, weightDecay: 0.1, maxGradNorm: 1.5, eps: 1e-6 };
    const params = randomArrays(rng);
    const js = new AdamW(clone(params), config);
    const graph = await createAdamWGraphStep(SHAPES, config, { threads: 1 });
    let gp: Arrays = params;
    let gm: Arrays = Object.fromEntries(Object.entries(params).map(([k, x]) => [k, new Float32Array(x.length)]));
    let gv: Arrays = clone(gm);
    try {
      for (let t = 1; t <= 5; t++) {
        const grads = randomArrays(rng, t % 2 ? 2 : 0.1); // alternately clipped and not
        if (t === 4) js.lr = graph.lr = 0.01;
        const a = js.step(grads);
        const r = await graph.step(gp, grads, gm, gv, t);
        expect(r.clipped).toBe(a.clipped);
        expect(r.gradNorm).toBeCloseTo(a.gradNorm, 5);
        ({ params: gp, m: gm, v: gv } = r);
        const st = js.state();
        for (const k of Object.keys(SHAPES)) {
          expect(maxAbsDiff(gp[k]!, js.params.get(k)!)).toBeLessThan(1e-5);
          expect(maxAbsDiff(gm[k]!, st.m[k]!)).toBeLessThan(1e-5);
          expect(maxAbsDiff(gv[k]!, st.v[k]!)).toBeLessThan(1e-5);
        }
      }
      expect(gp.scale).toHaveLength(1);
      await expect(graph.step(gp, {}, gm, gv, 6)).rejects.toThrow("missing gradient for parameter 'w.weight'");
    } finally {
      await graph.release();
    }
  });
});
