/**
 * fp16 / bf16 <-> fp32 conversion on raw bits (Uint16Array), round-to-nearest-even.
 * Table-free bit manipulation; fp16 and bf16 tensors keep their raw bits on the host.
 */
import type { DType } from './dtype.js';
import type { HostTensor } from './tensor.js';

/** fp32 bit pattern -> fp16 bit pattern, round-to-nearest-even, overflow to inf, NaN stays (quiet) NaN. */
export function f32BitsToF16Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return mant !== 0 ? sign | 0x7e00 | (mant >>> 13) : sign | 0x7c00;
  // fp32 exponent 143 is 2^16, beyond the fp16 max (65504): inf.
  if (exp >= 143) return sign | 0x7c00;
  if (exp <= 112) {
    // fp16 subnormal (or zero): units of 2^-24. Below 2^-25 everything rounds to zero
    // (exactly 2^-25 is a tie and rounds to the even 0).
    if (exp < 102) return sign;
    const m = mant | 0x800000;
    const shift = 126 - exp; // 14..24
    let h = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1) !== 0)) h++; // may carry into the smallest normal: still correct
    return sign | h;
  }
  let h = ((exp - 112) << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) !== 0)) h++; // a carry into the exponent is the right result, up to inf
  return sign | h;
}

/** fp16 bit pattern -> fp32 bit pattern (exact). */
export function f16BitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  let mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0;
  if (exp === 0) {
    if (mant === 0) return sign >>> 0;
    // Subnormal: normalise so the leading 1 becomes the implicit bit.
    let e = 113;
    while ((mant & 0x400) === 0) { mant <<= 1; e--; }
    return (sign | (e << 23) | ((mant & 0x3ff) << 13)) >>> 0;
  }
  return (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0;
}

/** fp32 bit pattern -> bf16 bit pattern, round-to-nearest-even, NaN stays (quiet) NaN. */
export function f32BitsToBf16Bits(x: number): number {
  if ((x & 0x7fffffff) > 0x7f800000) return ((x >>> 16) | 0x40) & 0xffff;
  // Adding 0x7fff plus the kept lsb rounds ties to even; overflow lands on inf by construction.
  return ((x >>> 0) + 0x7fff + ((x >>> 16) & 1)) >>> 16;
}

export function bf16BitsToF32Bits(h: number): number {
  return (h << 16) >>> 0;
}

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** Number -> fp16 bits (rounded once, correctly, also for float64 inputs). */
export function toF16Bits(v: number): number {
  return f32BitsToF16Bits(roundToOddF32Bits(v));
}
export function fromF16Bits(h: number): number {
  scratchU32[0] = f16BitsToF32Bits(h);
  return scratchF32[0]!;
}
export function toBf16Bits(v: number): number {
  return f32BitsToBf16Bits(roundToOddF32Bits(v));
}
export function fromBf16Bits(h: number): number {
  scratchU32[0] = bf16BitsToF32Bits(h);
  return scratchF32[0]!;
}

/**
 * float64 -> fp32 bits rounded to odd. Rounding f64 -> f32 -> f16 to nearest twice can be off by one ulp
 * (double rounding); rounding to odd first with >= 2p+2 bits (24 >= 2*11+2) makes the second rounding exact.
 */
function roundToOddF32Bits(v: number): number {
  scratchF32[0] = v;
  let bits = scratchU32[0]!;
  const f = scratchF32[0]!;
  if (f !== v && v === v && (bits & 1) === 0) {
    // Inexact with an even result: step to the odd neighbour that lies on v's side (covers inf -> max float).
    bits = Math.abs(f) > Math.abs(v) ? bits - 1 : bits + 1;
  }
  return bits >>> 0;
}

function u32View(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

export function f32ToF16(src: Float32Array, out = new Uint16Array(src.length)): Uint16Array {
  const s = u32View(src);
  for (let i = 0; i < s.length; i++) out[i] = f32BitsToF16Bits(s[i]!);
  return out;
}

export function f16ToF32(src: Uint16Array, out = new Float32Array(src.length)): Float32Array {
  const o = u32View(out);
  for (let i = 0; i < src.length; i++) o[i] = f16BitsToF32Bits(src[i]!);
  return out;
}

export function f32ToBf16(src: Float32Array, out = new Uint16Array(src.length)): Uint16Array {
  const s = u32View(src);
  for (let i = 0; i < s.length; i++) out[i] = f32BitsToBf16Bits(s[i]!);
  return out;
}

export function bf16ToF32(src: Uint16Array, out = new Float32Array(src.length)): Float32Array {
  const o = u32View(out);
  for (let i = 0; i < src.length; i++) o[i] = bf16BitsToF32Bits(src[i]!);
  return out;
}

/** float64 -> fp16 / bf16 with a single correct rounding (no double rounding through fp32). */
export function f64ToF16(src: Float64Array, out = new Uint16Array(src.length)): Uint16Array {
  for (let i = 0; i < src.length; i++) out[i] = toF16Bits(src[i]!);
  return out;
}
export function f64ToBf16(src: Float64Array, out = new Uint16Array(src.length)): Uint16Array {
  for (let i = 0; i < src.length; i++) out[i] = toBf16Bits(src[i]!);
  return out;
}

const CASTABLE: readonly DType[] = ['float64', 'float32', 'float16', 'bfloat16'];

/**
 * Convert between float64/float32/float16/bfloat16. Returns `t` itself when the dtype already matches.
 * Widening is exact; narrowing rounds to nearest even once.
 */
export function castTensor(t: HostTensor, to: DType): HostTensor {
  if (t.dtype === to) return t;
  if (!CASTABLE.includes(t.dtype) || !CASTABLE.includes(to)) {
    throw new Error(`castTensor supports ${CASTABLE.join('/')}, not ${t.dtype} -> ${to}`);
  }
  const shape = [...t.shape];
  if (t.dtype === 'float64') {
    const src = t.data as Float64Array;
    if (to === 'float32') return { dtype: to, shape, data: Float32Array.from(src) };
    return { dtype: to, shape, data: to === 'float16' ? f64ToF16(src) : f64ToBf16(src) };
  }
  // fp32/fp16/bf16 all widen exactly to fp32 first.
  const f32 = t.dtype === 'float32' ? (t.data as Float32Array)
    : t.dtype === 'float16' ? f16ToF32(t.data as Uint16Array) : bf16ToF32(t.data as Uint16Array);
  switch (to) {
    case 'float64': return { dtype: to, shape, data: Float64Array.from(f32) };
    case 'float32': return { dtype: to, shape, data: f32 };
    case 'float16': return { dtype: to, shape, data: f32ToF16(f32) };
    default: return { dtype: to, shape, data: f32ToBf16(f32) };
  }
}
