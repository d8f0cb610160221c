import { describe, it, expect } from 'vitest';
import {
  bf16ToF32, castTensor, f16ToF32, f32ToBf16, f32ToF16, f64ToF16, fromBf16Bits, fromF16Bits, toBf16Bits, toF16Bits,
} from '../../src/tensor/half.js';
import { tensor } from '../../src/tensor/tensor.js';

const f32FromBits = (bits: number): number => new Float32Array(new Uint32Array([bits]).buffer)[0]!;
const h = (v: number): number => f32ToF16(new Float32Array([v]))[0]!;
const b = (v: number): number => f32ToBf16(new Float32Array([v]))[0]!;
const isF16NaN = (x: number): boolean => (x & 0x7c00) === 0x7c00 && (x & 0x3ff) !== 0;

describe('fp16', () => {
  it('encodes known values', () => {
    expect(h(0)).toBe(0x0000);
    expect(h(-0)).toBe(0x8000);
    expect(h(1)).toBe(0x3c00);
    expect(h(-2)).toBe(0xc000);
    expect(h(0.5)).toBe(0x3800);
    expect(h(65504)).toBe(0x7bff); // max finite
    expect(h(2 ** -14)).toBe(0x0400); // min normal
    expect(h(2 ** -24)).toBe(0x0001); // min subnormal
    expect(h(1023 * 2 ** -24)).toBe(0x03ff); // max subnormal
    expect(h(1 / 3)).toBe(0x3555);
  });

  it('every finite and infinite fp16 round-trips exactly through fp32', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const wide = f16ToF32(all);
    const back = f32ToF16(wide);
    const bad: number[] = [];
    for (let i = 0; i < 65536; i++) {
      const ok = isF16NaN(i) ? Number.isNaN(wide[i]) && isF16NaN(back[i]!) : back[i] === i;
      if (!ok) bad.push(i);
    }
    expect(bad).toEqual([]);
    // Spot-check decoded values, including subnormals.
    expect(wide[0x0001]).toBe(2 ** -24);
    expect(wide[0x03ff]).toBe(1023 * 2 ** -24);
    expect(wide[0x8001]).toBe(-(2 ** -24));
    expect(wide[0x3c01]).toBe(1 + 2 ** -10);
    expect(wide[0x7bff]).toBe(65504);
    expect(Object.is(wide[0x8000], -0)).toBe(true);
  });

  it('rounds ties to even and non-ties to nearest', () => {
    expect(h(1 + 2 ** -11)).toBe(0x3c00); // tie between 0x3c00 and 0x3c01 -> even
    expect(h(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie between 0x3c01 and 0x3c02 -> even
    expect(h(1 + 2 ** -11 + 2 ** -20)).toBe(0x3c01); // just above the tie
    expect(h(1 + 2 ** -11 - 2 ** -20)).toBe(0x3c00); // just below
    expect(h(-(1 + 3 * 2 ** -11))).toBe(0xbc02);
    expect(h(1 + 2 ** -10 - 2 ** -23)).toBe(0x3c01);
  });

  it('rounds into and within subnormals', () => {
    expect(h(2 ** -25)).toBe(0x0000); // tie between 0 and min subnormal -> 0
    expect(h(2 ** -25 * (1 + 2 ** -10))).toBe(0x0001);
    expect(h(3 * 2 ** -25)).toBe(0x0002); // tie between 1 and 2 units -> 2
    expect(h(5 * 2 ** -25)).toBe(0x0002); // tie between 2 and 3 units -> 2
    expect(h(2 ** -26)).toBe(0x0000);
    expect(h(-(2 ** -26))).toBe(0x8000);
    expect(h(2 ** -14 - 2 ** -26)).toBe(0x0400); // rounds up across into the smallest normal
    expect(h(f32FromBits(0x00000001))).toBe(0x0000); // fp32 subnormal
  });

  it('handles inf, NaN and overflow', () => {
    expect(h(Infinity)).toBe(0x7c00);
    expect(h(-Infinity)).toBe(0xfc00);
    expect(isF16NaN(h(NaN))).toBe(true);
    expect(isF16NaN(h(f32FromBits(0x7f800001)))).toBe(true); // signalling NaN with payload only in low bits stays NaN
    expect(h(65519)).toBe(0x7bff); // below the midpoint to 65536
    expect(h(65520)).toBe(0x7c00); // tie between 65504 (odd) and 2^16 -> inf
    expect(h(1e6)).toBe(0x7c00);
    expect(h(-1e6)).toBe(0xfc00);
    expect(h(f32FromBits(0x7f7fffff))).toBe(0x7c00);
  });

  it('matches a brute-force nearest-even search on random fp32 inputs', () => {
    // Reference: the positive fp16 values in order, then pick the nearest (ties to the even code).
    const vals = f16ToF32(new Uint16Array(0x7c00).map((_, i) => i));
    const reference = (v: number): number => {
      const sign = v < 0 || Object.is(v, -0) ? 0x8000 : 0;
      const a = Math.abs(v);
      if (a >= 65520) return sign | 0x7c00;
      let lo = 0;
      let hi = vals.length - 1;
      while (lo < hi) { const mid = (lo + hi + 1) >> 1; if (vals[mid]! <= a) lo = mid; else hi = mid - 1; }
      if (lo === vals.length - 1) return sign | lo;
      const dl = a - vals[lo]!;
      const du = vals[lo + 1]! - a;
      return sign | (dl < du || (dl === du && (lo & 1) === 0) ? lo : lo + 1);
    };
    const bits = new Uint32Array(200_000);
    let s = 12345;
    for (let i = 0; i < bits.length; i++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      // Bias exponents into the fp16 range (and a bit beyond) so most samples exercise rounding.
      bits[i] = (s & 0x807fffff) | (((s >>> 23) % 48 + 96) << 23);
    }
    const f = new Float32Array(bits.buffer);
    const got = f32ToF16(f);
    const bad: string[] = [];
    for (let i = 0; i < f.length; i++) if (got[i] !== reference(f[i]!)) bad.push(`${f[i]}: ${got[i]} vs ${reference(f[i]!)}`);
    expect(bad.slice(0, 5)).toEqual([]);
  });

  it('rounds float64 once (no double rounding through fp32)', () => {
    const x = 1 + 2 ** -11 + 2 ** -30; // fp32 would round to the tie 1 + 2^-11, then to 1.0
    expect(toF16Bits(x)).toBe(0x3c01);
    expect(f64ToF16(new Float64Array([x, -x, 1e300, 2 ** -25 + 2 ** -60]))).toEqual(new Uint16Array([0x3c01, 0xbc01, 0x7c00, 0x0001]));
    expect(fromF16Bits(0x3555)).toBeCloseTo(1 / 3, 3);
  });
});

describe('bf16', () => {
  it('encodes, rounds ties to even, overflows to inf', () => {
    expect(b(1)).toBe(0x3f80);
    expect(b(-2)).toBe(0xc000);
    expect(b(1 + 2 ** -8)).toBe(0x3f80); // tie -> even
    expect(b(1 + 3 * 2 ** -8)).toBe(0x3f82); // tie -> even
    expect(b(1 + 2 ** -8 + 2 ** -20)).toBe(0x3f81);
    expect(b(f32FromBits(0x7f7fffff))).toBe(0x7f80); // max fp32 rounds to inf
    expect(b(f32FromBits(0x7f7f7fff))).toBe(0x7f7f); // just below the tie stays finite
    expect(b(Infinity)).toBe(0x7f80);
    expect(b(-Infinity)).toBe(0xff80);
    expect(b(f32FromBits(0x00010000))).toBe(0x0001); // subnormal kept
    const nan = b(f32FromBits(0x7f800001)); // payload only in the dropped bits: must not become inf
    expect(nan & 0x7f80).toBe(0x7f80);
    expect(nan & 0x7f).not.toBe(0);
  });

  it('every non-NaN bf16 round-trips exactly', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const back = f32ToBf16(bf16ToF32(all));
    const bad: number[] = [];
    for (let i = 0; i < 65536; i++) {
      const nan = (i & 0x7f80) === 0x7f80 && (i & 0x7f) !== 0;
      if (!nan && back[i] !== i) bad.push(i);
    }
    expect(bad).toEqual([]);
    expect(fromBf16Bits(0x3fc0)).toBe(1.5);
    expect(toBf16Bits(1 + 2 ** -8 + 2 ** -40)).toBe(0x3f81); // float64 input, single rounding
  });
});

describe('castTensor', () => {
  it('returns the same tensor for the same dtype', () => {
    const t = tensor('float32', [2], [1, 2]);
    expect(castTensor(t, 'float32')).toBe(t);
  });

  it('converts between all float dtypes', () => {
    const t64 = tensor('float64', [2, 2], [1, -2.5, 1 / 3, 70000]);
    const t16 = castTensor(t64, 'float16');
    expect(t16.dtype).toBe('float16');
    expect(t16.shape).toEqual([2, 2]);
    expect(t16.data).toEqual(new Uint16Array([0x3c00, 0xc100, 0x3555, 0x7c00]));
    const tb = castTensor(t16, 'bfloat16');
    expect(tb.data).toEqual(new Uint16Array([0x3f80, 0xc020, 0x3eab, 0x7f80]));
    const t32 = castTensor(tb, 'float32');
    expect(Array.from(t32.data as Float32Array)).toEqual([1, -2.5, fromBf16Bits(0x3eab), Infinity]);
    const back64 = castTensor(t32, 'float64');
    expect(back64.data).toBeInstanceOf(Float64Array);
    expect(castTensor(tensor('float64', [1], [1 / 3]), 'float32').data).toEqual(new Float32Array([1 / 3]));
    expect(castTensor(tensor('float16', [1], [0x3555]), 'float64').data).toEqual(new Float64Array([fromF16Bits(0x3555)]));
  });

  it('rejects non-float dtypes', () => {
    expect(() => castTensor(tensor('int32', [1], [1]), 'float32')).toThrow(/castTensor/);
  });
});
