import type { HostTensor } from '../../src/tensor/tensor.js';

/**
 * Naive float64 building blocks for the reference forward passes the model tests compare
 * against (row-major [rows, width] arrays; PyTorch [out, in] linear weights by key).
 */
export function referenceOps(weights: Map<string, HostTensor>, width: number) {
  const get = (k: string) => Float64Array.from(weights.get(k)!.data as Float32Array);
  const lin = (v: Float64Array, name: string, inF: number, outF: number) => {
    const W = get(`${name}.weight`);
    const bias = get(`${name}.bias`);
    const rows = v.length / inF;
    const o = new Float64Array(rows * outF);
    for (let r = 0; r < rows; r++) for (let j = 0; j < outF; j++) {
      let s = bias[j]!;
      for (let i = 0; i < inF; i++) s += v[r * inF + i]! * W[j * inF + i]!;
      o[r * outF + j] = s;
    }
    return o;
  };
  const silu = (v: Float64Array) => v.map((a) => a / (1 + Math.exp(-a)));
  const gelu = (a: number) => 0.5 * a * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (a + 0.044715 * a ** 3)));
  /** LayerNorm without affine over rows of `width`. */
  const ln = (v: Float64Array, eps: number) => {
    const d = width;
    const o = new Float64Array(v.length);
    for (let r = 0; r < v.length / d; r++) {
      let m = 0, q = 0;
      for (let i = 0; i < d; i++) m += v[r * d + i]! / d;
      for (let i = 0; i < d; i++) q += (v[r * d + i]! - m) ** 2 / d;
      for (let i = 0; i < d; i++) o[r * d + i] = (v[r * d + i]! - m) / Math.sqrt(q + eps);
    }
    return o;
  };
  const modulate = (v: Float64Array, shift: Float64Array, scale: Float64Array) => v.map((a, k) => a * (1 + scale[k % width]!) + shift[k % width]!);
  return { get, lin, silu, gelu, ln, modulate };
}
