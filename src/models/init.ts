import type { GraphBuilder } from '../onnx/builder.js';
import type { DType } from '../tensor/dtype.js';
import { Rng } from '../tensor/rng.js';
import { numel, tensor } from '../tensor/tensor.js';
import type { AdaLNBlockParams, LinearParams } from './layers.js';

/** Random initial weights for benchmarks, tests and training from scratch. */
export interface InitOptions {
  rng: Rng;
  dtype?: DType;
  /** Std of weights; default: 1/sqrt(fan_in) (keeps activations O(1)). */
  std?: number;
}

export function initLinear(b: GraphBuilder, name: string, inFeatures: number, outFeatures: number, o: InitOptions, bias = true): LinearParams {
  const dtype = o.dtype ?? 'float32';
  const std = o.std ?? 1 / Math.sqrt(inFeatures);
  const w = tensor(dtype, [inFeatures, outFeatures]);
  o.rng.fillNormal(w.data as Float32Array, 0, std);
  const params: LinearParams = { weight: b.param(`${name}.weight`, w) };
  if (bias) {
    const t = tensor(dtype, [outFeatures]);
    o.rng.fillNormal(t.data as Float32Array, 0, std);
    params.bias = b.param(`${name}.bias`, t);
  }
  return params;
}

export function initDitBlock(b: GraphBuilder, name: string, hidden: number, mlpHidden: number, o: InitOptions): AdaLNBlockParams {
  const lin = (n: string, i: number, out: number) => initLinear(b, `${name}.${n}`, i, out, o);
  return {
    attn: { q: lin('attn.q', hidden, hidden), k: lin('attn.k', hidden, hidden), v: lin('attn.v', hidden, hidden), out: lin('attn.out', hidden, hidden) },
    mlp: { fc1: lin('mlp.fc1', hidden, mlpHidden), fc2: lin('mlp.fc2', mlpHidden, hidden) },
    adaLN: lin('adaLN', hidden, 6 * hidden),
  };
}

export function randomTensor(shape: number[], rng: Rng, dtype: DType = 'float32', std = 1) {
  const t = tensor(dtype, shape);
  if (numel(shape)) rng.fillNormal(t.data as Float32Array, 0, std);
  return t;
}
