import { describe, it, expect } from 'vitest';
import { Rng, randn } from '../../src/tensor/rng.js';
import { fromBf16Bits, fromF16Bits } from '../../src/tensor/half.js';

function meanStd(a: ArrayLike<number>): { mean: number; std: number } {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]!;
  const mean = s / a.length;
  let v = 0;
  for (let i = 0; i < a.length; i++) v += (a[i]! - mean) ** 2;
  return { mean, std: Math.sqrt(v / a.length) };
}

describe('Rng pinned values', () => {
  // Pinned from this implementation (xoshiro128** seeded by splitmix32); the integer stream was also
  // cross-checked against an independent Python port. Any change here changes every seeded result downstream.
  it('integer stream', () => {
    const r = new Rng(42);
    expect([r.nextUint32(), r.nextUint32(), r.nextUint32(), r.nextUint32()]).toEqual([2753723502, 4119727487, 3683126503, 3420859988]);
    expect([new Rng(0).nextUint32(), new Rng(-1).nextUint32(), new Rng(2 ** 40).nextUint32()]).toEqual([3829990210, 3814972255, 2851656883]);
    expect(new Rng().nextUint32()).toBe(3829990210); // default seed 0
  });

  it('uniform, normal, int, shuffle, randn', () => {
    const u = new Rng(42);
    expect([u.uniform(), u.uniform()]).toEqual([0.6411512193024068, 0.8575447186565476]);
    const n = new Rng(7);
    expect([n.normal(), n.normal(), n.normal()]).toEqual([0.07561170783743872, 0.30088511522655614, -0.16741905441993543]);
    const i = new Rng(3);
    expect([i.int(10), i.int(10), i.int(10), i.int(1000)]).toEqual([0, 2, 1, 297]);
    expect(new Rng(5).shuffle([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])).toEqual([8, 6, 0, 1, 7, 3, 4, 5, 9, 2]);
    expect(Array.from(randn([4], 1).data as Float32Array)).toEqual([-1.3675299882888794, -0.4495832026004791, 2.726724863052368, -0.10106413811445236]);
  });

  it('fork', () => {
    const r = new Rng(42);
    expect([r.fork('a').nextUint32(), r.fork(1).nextUint32(), r.fork('1').nextUint32()]).toEqual([775378928, 115817464, 1224041918]);
  });
});

describe('Rng behaviour', () => {
  it('same seed, same stream; different seeds differ', () => {
    const a = new Rng(123);
    const b = new Rng(123);
    const c = new Rng(124);
    const xa = Array.from({ length: 100 }, () => a.nextUint32());
    expect(Array.from({ length: 100 }, () => b.nextUint32())).toEqual(xa);
    expect(Array.from({ length: 100 }, () => c.nextUint32())).not.toEqual(xa);
  });

  it('rejects non-integer seeds', () => {
    expect(() => new Rng(1.5)).toThrow(/safe integer/);
    expect(() => new Rng(NaN)).toThrow(/safe integer/);
  });

  it('fork is deterministic, independent of draws, and label-sensitive', () => {
    const r = new Rng(9);
    const first = r.fork('layer').nextUint32();
    r.nextUint32();
    r.normal();
    expect(r.fork('layer').nextUint32()).toBe(first);
    expect(new Rng(9).fork('layer').nextUint32()).toBe(first);
    const labels = ['layer', 'layer2', 'Layer', '', 0, 1, 2, 'a', 'b'];
    const firsts = labels.map((l) => r.fork(l).nextUint32());
    expect(new Set(firsts).size).toBe(labels.length);
    expect(new Rng(10).fork('layer').nextUint32()).not.toBe(first);
    expect(r.fork('x').fork('y').nextUint32()).not.toBe(r.fork('y').fork('x').nextUint32());
    // A fork's stream is not the parent's stream.
    const p = new Rng(9);
    const f = p.fork('layer');
    expect(Array.from({ length: 8 }, () => f.nextUint32())).not.toEqual(Array.from({ length: 8 }, () => p.nextUint32()));
  });

  it('uniform is in [0,1) with mean ~0.5 and variance ~1/12', () => {
    const r = new Rng(1);
    const a = r.fillUniform(new Float64Array(100_000));
    expect(Math.min(...a)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...a)).toBeLessThan(1);
    const { mean, std } = meanStd(a);
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.005);
    expect(Math.abs(std - Math.sqrt(1 / 12))).toBeLessThan(0.005);
    const b = new Rng(2).fillUniform(new Float32Array(10_000), -3, 5);
    expect(Math.min(...b)).toBeGreaterThanOrEqual(-3);
    expect(Math.max(...b)).toBeLessThanOrEqual(5);
    expect(Math.abs(meanStd(b).mean - 1)).toBeLessThan(0.1);
  });

  it('normals have mean ~0 and std ~1; fillNormal applies mean and std', () => {
    const { mean, std } = meanStd(new Rng(2024).fillNormal(new Float64Array(100_000)));
    expect(Math.abs(mean)).toBeLessThan(0.01);
    expect(Math.abs(std - 1)).toBeLessThan(0.01);
    const shifted = meanStd(new Rng(5).fillNormal(new Float32Array(100_000), 3, 0.5));
    expect(Math.abs(shifted.mean - 3)).toBeLessThan(0.01);
    expect(Math.abs(shifted.std - 0.5)).toBeLessThan(0.01);
    // Tail sanity: about 4.55% of standard normals lie beyond 2 sigma.
    const x = new Rng(6).fillNormal(new Float64Array(100_000));
    const tail = x.filter((v) => Math.abs(v) > 2).length / x.length;
    expect(Math.abs(tail - 0.0455)).toBeLessThan(0.004);
  });

  it('int is uniform over [0,n) and handles large n', () => {
    const r = new Rng(77);
    const counts = new Array<number>(7).fill(0);
    for (let i = 0; i < 70_000; i++) counts[r.int(7)]!++;
    for (const c of counts) expect(Math.abs(c - 10_000)).toBeLessThan(400);
    for (let i = 0; i < 1000; i++) {
      const big = r.int(2 ** 40 + 3);
      expect(Number.isInteger(big) && big >= 0 && big < 2 ** 40 + 3).toBe(true);
    }
    // n = 3 * 2^k: plain modulo would put ~1/2 instead of 1/3 of the draws in the lowest third.
    for (const n of [3 * 2 ** 30, 3 * 2 ** 51]) {
      let low = 0;
      for (let i = 0; i < 30_000; i++) if (r.int(n) < n / 3) low++;
      expect(Math.abs(low / 30_000 - 1 / 3)).toBeLessThan(0.02);
    }
    expect(r.int(1)).toBe(0);
    expect(() => r.int(0)).toThrow();
    expect(() => r.int(2.5)).toThrow();
  });

  it('shuffle is a permutation and every position is reachable', () => {
    const r = new Rng(8);
    const seenFirst = new Set<number>();
    for (let k = 0; k < 200; k++) {
      const a = r.shuffle([0, 1, 2, 3, 4]);
      expect([...a].sort()).toEqual([0, 1, 2, 3, 4]);
      seenFirst.add(a[0]!);
    }
    expect(seenFirst.size).toBe(5);
  });

  it('randn gives the requested dtype and shape; an Rng argument continues its stream', () => {
    const t = randn([2, 3], 11, 'float64');
    expect(t.dtype).toBe('float64');
    expect(t.shape).toEqual([2, 3]);
    expect(t.data).toEqual(new Rng(11).fillNormal(new Float64Array(6)));
    const h = randn([3], 11, 'float16');
    const f = randn([3], 11, 'float32').data as Float32Array;
    expect(h.data).toBeInstanceOf(Uint16Array);
    for (let i = 0; i < 3; i++) expect(fromF16Bits((h.data as Uint16Array)[i]!)).toBeCloseTo(f[i]!, 2);
    const bf = randn([3], 11, 'bfloat16');
    for (let i = 0; i < 3; i++) expect(fromBf16Bits((bf.data as Uint16Array)[i]!)).toBeCloseTo(f[i]!, 1);
    const r = new Rng(11);
    const a = randn([3], r).data;
    const b = randn([3], r).data;
    expect(b).not.toEqual(a);
    expect(() => randn([2], 1, 'int32')).toThrow(/randn/);
  });
});
