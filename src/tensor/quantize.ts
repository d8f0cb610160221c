import { bf16ToF32, f16ToF32 } from './half.js';
import { tensor, type HostTensor } from './tensor.js';

/**
 * Weight-only quantization of nn.Linear weights (stored [out, in], any float dtype) into the
 * layouts of ONNX Runtime's quantized MatMul operators, and the matching dequantization
 * (the reference the operators are tested against).
 */

/** Row `r` of a 2-D float tensor (float32, float16 or bfloat16) as float32 in `out`. */
function readRow(t: HostTensor, r: number, out: Float32Array<ArrayBuffer>): Float32Array {
  const k = t.shape[1]!;
  const row = t.data.subarray(r * k, (r + 1) * k);
  if (t.dtype === 'float32') out.set(row as Float32Array);
  else if (t.dtype === 'float16') f16ToF32(row as Uint16Array, out);
  else if (t.dtype === 'bfloat16') bf16ToF32(row as Uint16Array, out);
  else throw new Error(`cannot quantize ${t.dtype} weights`);
  return out;
}

function shape2d(w: HostTensor): [number, number] {
  if (w.shape.length !== 2) throw new Error(`quantization needs a 2-D [out, in] weight, got [${w.shape}]`);
  return w.shape as [number, number];
}

/** int8 weights [K, N] (the MatMul layout) with one symmetric scale per output column. */
export interface Int8Weight {
  data: HostTensor;
  scales: HostTensor;
}

/** For com.microsoft::DynamicQuantizeMatMul: per output feature, scale = max|w| / 127. */
export function quantizeInt8(weight: HostTensor): Int8Weight {
  const [n, k] = shape2d(weight);
  const data = new Int8Array(k * n);
  const scales = new Float32Array(n);
  // Rows in groups, so the transposed writes go to runs of GROUP adjacent bytes.
  const GROUP = 64;
  const rows = new Float32Array(GROUP * k);
  for (let j0 = 0; j0 < n; j0 += GROUP) {
    const g = Math.min(GROUP, n - j0);
    for (let r = 0; r < g; r++) {
      const row = readRow(weight, j0 + r, rows.subarray(r * k, (r + 1) * k));
      let max = 0;
      for (let i = 0; i < k; i++) max = Math.max(max, Math.abs(row[i]!));
      const scale = Math.fround(max > 0 ? max / 127 : 1);
      scales[j0 + r] = scale;
      const inv = 1 / scale;
      for (let i = 0; i < k; i++) row[i] = Math.round(row[i]! * inv);
    }
    for (let i = 0; i < k; i++) {
      const base = i * n + j0;
      for (let r = 0; r < g; r++) {
        const q = rows[r * k + i]!;
        data[base + r] = q > 127 ? 127 : q < -127 ? -127 : q;
      }
    }
  }
  return { data: tensor('int8', [k, n], data), scales: tensor('float32', [n], scales) };
}

/** The float32 [K, N] weight an Int8Weight stands for. */
export function dequantizeInt8(q: Int8Weight): HostTensor {
  const [k, n] = q.data.shape as [number, number];
  const d = q.data.data as Int8Array;
  const s = q.scales.data as Float32Array;
  return tensor('float32', [k, n], Float32Array.from(d, (v, idx) => v * s[idx % n]!));
}

/**
 * 4-bit weights in blocks of `blockSize` along K, asymmetric (a scale and a zero point per
 * block), packed two per byte low nibble first: data [N, blocks, blockSize / 2], scales
 * [N * blocks], zero points [N * ceil(blocks / 2)]. The layout of com.microsoft::MatMulNBits.
 */
export interface Int4Weight {
  data: HostTensor;
  scales: HostTensor;
  zeroPoints: HostTensor;
  k: number;
  n: number;
  blockSize: number;
}

/** MatMulNBits' default block: 32 weights per scale. */
export const INT4_BLOCK = 32;

export function quantizeInt4(weight: HostTensor, blockSize = INT4_BLOCK): Int4Weight {
  const [n, k] = shape2d(weight);
  if (blockSize < 16 || (blockSize & (blockSize - 1)) !== 0) throw new Error(`int4 block size must be a power of two >= 16, got ${blockSize}`);
  const blocks = Math.ceil(k / blockSize);
  const blockBytes = blockSize / 2;
  const zpBytes = Math.ceil(blocks / 2);
  const data = new Uint8Array(n * blocks * blockBytes);
  const scales = new Float32Array(n * blocks);
  const zeroPoints = new Uint8Array(n * zpBytes);
  const row = new Float32Array(k);
  for (let j = 0; j < n; j++) {
    readRow(weight, j, row);
    for (let b = 0; b < blocks; b++) {
      const start = b * blockSize;
      const end = Math.min(k, start + blockSize);
      // Zero stays exactly representable (padding past K dequantizes to 0).
      let lo = 0;
      let hi = 0;
      for (let i = start; i < end; i++) {
        lo = Math.min(lo, row[i]!);
        hi = Math.max(hi, row[i]!);
      }
      const scale = Math.fround(hi > lo ? (hi - lo) / 15 : 1);
      const zp = Math.max(0, Math.min(15, Math.round(-lo / scale)));
      scales[j * blocks + b] = scale;
      zeroPoints[j * zpBytes + (b >> 1)]! |= zp << ((b & 1) * 4);
      const base = (j * blocks + b) * blockBytes;
      for (let i = 0; i < blockSize; i++) {
        const q = start + i < end ? Math.max(0, Math.min(15, Math.round(row[start + i]! / scale) + zp)) : zp;
        data[base + (i >> 1)]! |= q << ((i & 1) * 4);
      }
    }
  }
  return {
    data: tensor('uint8', [n, blocks, blockBytes], data),
    scales: tensor('float32', [n * blocks], scales),
    zeroPoints: tensor('uint8', [n * zpBytes], zeroPoints),
    k, n, blockSize,
  };
}

/** The float32 [K, N] weight an Int4Weight stands for. */
export function dequantizeInt4(q: Int4Weight): HostTensor {
  const { k, n, blockSize } = q;
  const blocks = Math.ceil(k / blockSize);
  const zpBytes = Math.ceil(blocks / 2);
  const d = q.data.data as Uint8Array;
  const s = q.scales.data as Float32Array;
  const z = q.zeroPoints.data as Uint8Array;
  const out = new Float32Array(k * n);
  for (let j = 0; j < n; j++) {
    for (let i = 0; i < k; i++) {
      const b = Math.floor(i / blockSize);
      const within = i % blockSize;
      const v = (d[(j * blocks + b) * (blockSize / 2) + (within >> 1)]! >> ((within & 1) * 4)) & 15;
      const zp = (z[j * zpBytes + (b >> 1)]! >> ((b & 1) * 4)) & 15;
      out[i * n + j] = (v - zp) * s[j * blocks + b]!;
    }
  }
  return tensor('float32', [k, n], out);
}
