/**
 * Seeded, platform-independent random numbers: xoshiro128** on uint32 arithmetic (Math.imul, >>>),
 * seeded through splitmix32, so the integer stream is identical everywhere.
 */
import type { DType } from './dtype.js';
import { f32ToBf16, f32ToF16 } from './half.js';
import { numel, type HostTensor } from './tensor.js';

const TWO32 = 4294967296;
const TWO53 = 9007199254740992;

/** Finaliser of splitmix32 / murmur3: a bijective avalanche on uint32. */
function mix32(z: number): number {
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** Split a safe integer into uint32 words (negative seeds wrap mod 2^64 in effect). */
function words(n: number, what: string): [number, number] {
  if (!Number.isSafeInteger(n)) throw new Error(`${what} must be a safe integer, got ${n}`);
  return [n >>> 0, Math.floor(n / TWO32) >>> 0];
}

export class Rng {
  // Key the stream was derived from (kept for fork), and the xoshiro128** state.
  private k0 = 0;
  private k1 = 0;
  private s0 = 0;
  private s1 = 0;
  private s2 = 0;
  private s3 = 0;
  private spare: number | undefined;

  constructor(seed = 0) {
    const [lo, hi] = words(seed, 'Rng seed');
    this.init(lo, hi);
  }

  private init(k0: number, k1: number): void {
    this.k0 = k0;
    this.k1 = k1;
    // splitmix32 from the 64-bit key fills the 128-bit state.
    let sm = mix32(k0 ^ mix32(k1 ^ 0x6a09e667));
    const next = (): number => mix32((sm = (sm + 0x9e3779b9) | 0));
    this.s0 = next(); this.s1 = next(); this.s2 = next(); this.s3 = next();
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1; // all-zero state is a fixed point
    this.spare = undefined;
  }

  nextUint32(): number {
    const s1 = this.s1;
    const result = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    const t = s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform in [0, 1) with 53 random bits (two draws). */
  uniform(): number {
    const a = this.nextUint32() >>> 5; // 27 bits
    const b = this.nextUint32() >>> 6; // 26 bits
    return (a * 67108864 + b) / TWO53;
  }

  /**
   * Standard normal by Box-Muller; the second value of each pair is cached.
   * Math.log/cos/sin in V8 are ports of fdlibm (and Math.sqrt is correctly rounded), so these
   * results do not depend on the platform's libm.
   */
  normal(): number {
    if (this.spare !== undefined) {
      const v = this.spare;
      this.spare = undefined;
      return v;
    }
    const u1 = 1 - this.uniform(); // (0, 1]: log stays finite
    const u2 = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u1));
    const theta = 2 * Math.PI * u2;
    this.spare = r * Math.sin(theta);
    return r * Math.cos(theta);
  }

  fillNormal<A extends Float32Array | Float64Array>(arr: A, mean = 0, std = 1): A {
    for (let i = 0; i < arr.length; i++) arr[i] = mean + std * this.normal();
    return arr;
  }

  fillUniform<A extends Float32Array | Float64Array>(arr: A, lo = 0, hi = 1): A {
    const span = hi - lo;
    for (let i = 0; i < arr.length; i++) arr[i] = lo + span * this.uniform();
    return arr;
  }

  /** Uniform integer in [0, n) without modulo bias (rejection sampling); n up to 2^53. */
  int(n: number): number {
    if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`Rng.int needs a positive safe integer, got ${n}`);
    if (n <= TWO32) {
      const limit = TWO32 - (TWO32 % n);
      for (;;) {
        const x = this.nextUint32();
        if (x < limit) return x % n;
      }
    }
    const limit = TWO53 - (TWO53 % n);
    for (;;) {
      const x = this.uniform() * TWO53;
      if (x < limit) return x % n;
    }
  }

  /** Fisher-Yates shuffle in place; returns the same array. */
  shuffle<T>(a: T[]): T[] {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const tmp = a[i]!;
      a[i] = a[j]!;
      a[j] = tmp;
    }
    return a;
  }

  /**
   * An independent stream derived from this generator's seed and `label`. It depends only on the seed
   * chain and the label, not on how many numbers were drawn, so `fork('layer3')` is stable across code changes.
   */
  fork(label: string | number): Rng {
    let h0: number;
    let h1: number;
    if (typeof label === 'number') {
      [h0, h1] = words(label, 'fork label');
      h0 = mix32(h0 ^ 0x1b873593);
      h1 = mix32(h1 ^ 0x1b873593);
    } else {
      // Two FNV-1a style hashes over UTF-16 code units with different seeds, then avalanche.
      h0 = 0x811c9dc5;
      h1 = 0xcc9e2d51;
      for (let i = 0; i < label.length; i++) {
        const c = label.charCodeAt(i);
        h0 = Math.imul(h0 ^ c, 0x01000193);
        h1 = Math.imul(h1 ^ c, 0x5bd1e995);
      }
      h0 = mix32(h0 ^ label.length);
      h1 = mix32(h1 ^ 0xe6546b64);
    }
    const child = new Rng(0);
    child.init(mix32(this.k0 ^ h0) ^ mix32(this.k1 + 0x9e3779b9), mix32(this.k1 ^ h1) ^ mix32(this.k0 + 0x7f4a7c15));
    return child;
  }
}

/** Tensor of standard normals (float64/float32 directly, float16/bfloat16 rounded from float32). */
export function randn(shape: readonly number[], seed: number | Rng, dtype: DType = 'float32'): HostTensor {
  const rng = typeof seed === 'number' ? new Rng(seed) : seed;
  const n = numel(shape);
  switch (dtype) {
    case 'float64': return { dtype, shape: [...shape], data: rng.fillNormal(new Float64Array(n)) };
    case 'float32': return { dtype, shape: [...shape], data: rng.fillNormal(new Float32Array(n)) };
    case 'float16': return { dtype, shape: [...shape], data: f32ToF16(rng.fillNormal(new Float32Array(n))) };
    case 'bfloat16': return { dtype, shape: [...shape], data: f32ToBf16(rng.fillNormal(new Float32Array(n))) };
    default: throw new Error(`randn supports float dtypes float64/float32/float16/bfloat16, not ${dtype}`);
  }
}
