import type { GraphBuilder } from '../onnx/builder.js';
import type { Value } from '../onnx/ir.js';
import { castTensor } from '../tensor/half.js';
import { readSafetensors } from '../tensor/safetensors.js';
import { tensor, type HostTensor } from '../tensor/tensor.js';
import { HarmonicaError } from '../util/errors.js';
import type { LinearParams } from './layers.js';

/**
 * Checkpoint tensors by name, converted to float32 on access, with shape checks that name
 * the key. Builders read every weight through here, so a missing key or a wrong shape is
 * reported the same way for every model.
 */
export class Weights {
  private readonly used = new Set<string>();

  constructor(
    private readonly tensors: Map<string, HostTensor>,
    /** Where the weights came from, for error messages. */
    readonly source = 'checkpoint',
  ) {}

  static async load(path: string): Promise<Weights> {
    return new Weights(await readSafetensors(path), path);
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  names(): string[] {
    return [...this.tensors.keys()];
  }

  /** The float32 tensor `name`; `shape` (if given) must match exactly. */
  get(name: string, shape?: readonly number[]): HostTensor {
    const t = this.tensors.get(name);
    if (!t) throw new HarmonicaError('MISSING_WEIGHT', `${this.source}: missing weight "${name}"`);
    if (shape && (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]))) {
      throw new HarmonicaError('WEIGHT_SHAPE', `${this.source}: weight "${name}" has shape [${t.shape}], expected [${shape}]`);
    }
    this.used.add(name);
    return t.dtype === 'float32' ? t : castTensor(t, 'float32');
  }

  /** Names never read by a builder (a sign of a layout or config mismatch). */
  unused(): string[] {
    return this.names().filter((n) => !this.used.has(n));
  }
}

/** [rows, cols] -> [cols, rows] */
export function transpose2d(t: HostTensor): HostTensor {
  const [rows, cols] = t.shape as [number, number];
  const src = t.data as Float32Array;
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = src[r * cols + c]!;
  return tensor('float32', [cols, rows], out);
}

/**
 * A PyTorch nn.Linear stored as `${prefix}.weight` [out, in] (+ `.bias`): becomes a graph
 * param [in, out] named after the checkpoint key.
 */
export function loadLinear(b: GraphBuilder, w: Weights, prefix: string, inFeatures: number, outFeatures: number, bias = true): LinearParams {
  const stored = w.get(`${prefix}.weight`, [outFeatures, inFeatures]);
  const weight = b.param(`${prefix}.weight`, transpose2d(stored), { from: stored, toCheckpoint: transpose2d });
  const params: LinearParams = { weight };
  if (bias) params.bias = b.param(`${prefix}.bias`, w.get(`${prefix}.bias`, [outFeatures]));
  return params;
}

/** Any other tensor, as a graph param under its checkpoint name. */
export function loadParam(b: GraphBuilder, w: Weights, name: string, shape: readonly number[]): Value {
  return b.param(name, w.get(name, shape));
}

/**
 * A stride-k patch convolution `${prefix}.weight` [out, in, k, k] (+ bias) as the linear map
 * [in*k*k, out] over patchified tokens (see patchify in embeddings.ts).
 */
export function loadPatchEmbedding(b: GraphBuilder, w: Weights, prefix: string, inChannels: number, patch: number, outChannels: number): LinearParams {
  const stored = w.get(`${prefix}.weight`, [outChannels, inChannels, patch, patch]);
  const flat = transpose2d({ ...stored, shape: [outChannels, inChannels * patch * patch] });
  return {
    weight: b.param(`${prefix}.weight`, flat, { from: stored, toCheckpoint: (t) => ({ ...transpose2d(t), shape: stored.shape }) }),
    bias: b.param(`${prefix}.bias`, w.get(`${prefix}.bias`, [outChannels])),
  };
}
