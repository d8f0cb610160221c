/** Test helpers for the diffusion samplers (not a test file itself). */
import { Rng } from '../../src/tensor/rng.js';

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** max |a - b| / (1 + |b|): absolute near zero, relative for large values. */
export function maxScaledDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!) / (1 + Math.abs(b[i]!)));
  return m;
}

export function randn32(n: number, seed: number): Float32Array {
  return new Rng(seed).fillNormal(new Float32Array(n));
}

/** x_t = sqrt(ab) x0 + sqrt(1 - ab) eps, computed in float64 and stored as float32. */
export function noised(x0: Float32Array, eps: Float32Array, ab: number): Float32Array {
  return Float32Array.from(x0, (v, k) => Math.sqrt(ab) * v + Math.sqrt(1 - ab) * eps[k]!);
}

export function bytesEqual(a: Float32Array, b: Float32Array): boolean {
  const ua = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const ub = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  return ua.length === ub.length && ua.every((v, i) => v === ub[i]);
}

export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

/**
 * Error bound for float32 storage along a DDIM / DPM++ trajectory. Each stored x is rounded once
 * (|err| <= 2^-24 * scale); for these updates d x_target / d x_j = sqrt(ab_target / ab_j) (it goes through
 * x0 = (x - sqrt(1-ab) eps) / sqrt(ab)), so the rounding at t = 999 is amplified ~157x by the time ab = 1.
 * The bound sums those contributions over the alpha_bars at which x was stored, with a 4x margin.
 */
export function roundingBound(storedAbs: readonly number[], targetAb: number, scale: number): number {
  let s = 0;
  for (const ab of storedAbs) s += Math.sqrt(targetAb / ab);
  return 4 * 2 ** -24 * scale * (s + 1);
}
