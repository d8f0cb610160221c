import type { GraphBuilder } from '../onnx/builder.js';
import type { Value } from '../onnx/ir.js';
import { tensor, type HostTensor } from '../tensor/tensor.js';

/** Width of the sinusoidal timestep features fed to the timestep MLP (DiT, PixArt). */
export const TIMESTEP_FEATURES = 256;
const MAX_PERIOD = 10_000;

/**
 * Sinusoidal timestep features [B, dim] as cat(cos, sin). The original DiT divides the
 * frequency exponent by `half`; diffusers' port divides by `half - freqShift` with
 * freqShift = 1 (`downscale_freq_shift`). The frequencies are a constant.
 */
export function timestepFeatures(b: GraphBuilder, t: Value, dim = TIMESTEP_FEATURES, freqShift = 0): Value {
  const freqs = Float32Array.from(timestepFrequencies(dim, freqShift));
  const args = b.mul(b.unsqueeze(b.cast(t, 'float32'), [1]), b.constant(tensor('float32', [1, dim / 2], freqs), 'timestep_freqs'));
  return b.concat([b.cos(args), b.sin(args)], 1);
}

function timestepFrequencies(dim: number, freqShift: number): Float64Array {
  const half = dim / 2;
  return Float64Array.from({ length: half }, (_, i) => Math.exp((-Math.log(MAX_PERIOD) * i) / (half - freqShift)));
}

/** The features of one timestep on the host, as timestepFeatures computes them in a graph. */
export function timestepFeatureValues(t: number, dim = TIMESTEP_FEATURES, freqShift = 0): Float64Array {
  const freqs = timestepFrequencies(dim, freqShift);
  return Float64Array.from({ length: dim }, (_, i) => (i < dim / 2 ? Math.cos(t * freqs[i]!) : Math.sin(t * freqs[i - dim / 2]!)));
}

/** 1-D sin-cos embedding of positions: [n, dim] as cat(sin, cos) (MAE / DiT). */
function sincos1d(dim: number, positions: Float64Array): Float64Array {
  const half = dim / 2;
  const out = new Float64Array(positions.length * dim);
  positions.forEach((p, n) => {
    for (let i = 0; i < half; i++) {
      const omega = 1 / MAX_PERIOD ** (i / half);
      out[n * dim + i] = Math.sin(p * omega);
      out[n * dim + half + i] = Math.cos(p * omega);
    }
  });
  return out;
}

/**
 * Fixed 2-D sin-cos position embedding [gridH * gridW, dim] (row-major tokens): the first
 * half of the channels encodes the column, the second the row, as in the DiT/MAE reference
 * (whose meshgrid puts the w coordinate first). Positions are divided by
 * gridSize / baseSize * interpolationScale, as PixArt does for other resolutions.
 */
export function sincos2d(dim: number, gridH: number, gridW: number, baseSize = gridH, interpolationScale = 1): HostTensor {
  if (dim % 4 !== 0) throw new Error(`2-D sin-cos position embedding needs a width divisible by 4, got ${dim}`);
  const tokens = gridH * gridW;
  const col = new Float64Array(tokens);
  const row = new Float64Array(tokens);
  for (let h = 0; h < gridH; h++) {
    for (let w = 0; w < gridW; w++) {
      col[h * gridW + w] = w / (gridW / baseSize) / interpolationScale;
      row[h * gridW + w] = h / (gridH / baseSize) / interpolationScale;
    }
  }
  const embW = sincos1d(dim / 2, col);
  const embH = sincos1d(dim / 2, row);
  const out = new Float32Array(tokens * dim);
  for (let n = 0; n < tokens; n++) {
    for (let i = 0; i < dim / 2; i++) {
      out[n * dim + i] = embW[n * (dim / 2) + i]!;
      out[n * dim + dim / 2 + i] = embH[n * (dim / 2) + i]!;
    }
  }
  return tensor('float32', [tokens, dim], out);
}

/**
 * [B, C, H, W] -> [B, (H/p)*(W/p), C*p*p] tokens in the order of a stride-p convolution's
 * weight [out, C, p, p], so a patch-embedding Conv becomes one MatMul.
 */
export function patchify(b: GraphBuilder, x: Value, patch: number): Value {
  const [batch, c, h, w] = x.shape as [number, number, number, number];
  const gh = h / patch;
  const gw = w / patch;
  const blocks = b.reshape(x, [batch, c, gh, patch, gw, patch]);
  return b.reshape(b.transpose(blocks, [0, 2, 4, 1, 3, 5]), [batch, gh * gw, c * patch * patch]);
}

/** [B, T, p*p*C] -> [B, C, H, W]: tokens to an image (einsum nhwpqc -> nchpwq). */
export function unpatchify(b: GraphBuilder, x: Value, patch: number, channels: number, gridH: number, gridW: number): Value {
  const batch = x.shape[0]!;
  const blocks = b.reshape(x, [batch, gridH, gridW, patch, patch, channels]);
  return b.reshape(b.transpose(blocks, [0, 5, 1, 3, 2, 4]), [batch, channels, gridH * patch, gridW * patch]);
}
