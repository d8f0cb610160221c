import type { GraphBuilder } from '../onnx/builder.js';
import type { Value } from '../onnx/ir.js';
import { castTensor } from '../tensor/half.js';
import { INT4_BLOCK, quantizeInt4, quantizeInt8 } from '../tensor/quantize.js';
import { SafetensorsFileSync } from '../tensor/safetensors.js';
import { leadingRows, tensor, type HostTensor } from '../tensor/tensor.js';
import { HarmonicaError } from '../util/errors.js';
import type { LinearParams } from './layers.js';
import type { Precision } from './precision.js';

/** MatMulNBits' accuracy level 4 quantizes activations to int8 too: measured faster, same error class as int8 (docs/BENCHMARKS.md). */
const INT4_ACCURACY_LEVEL = 4;

/**
 * Checkpoint tensors by name, kept in their stored dtype, with shape checks that name the
 * key. `get` returns the same object every time (identity marks tensors shared by several
 * keys); anything derived from a tensor (a float32 copy, quantized data) is made once and
 * shared by every graph built from these weights. `precision` says how builders put the
 * matrix weights into graphs (see precision.ts).
 */
export class Weights {
  private readonly used = new Set<string>();
  private readonly derived = new Map<string, unknown>();
  /** Stored tensors dropped once quantized (nothing reads them again): what get() would have checked. */
  private readonly released = new Map<string, { shape: readonly number[]; identity: object }>();
  private readonly identities = new WeakMap<HostTensor, object>();

  /** Tensors in memory (all of them for a map; those read so far for a file). */
  private readonly tensors: Map<string, HostTensor>;
  /** A file's tensors not read yet. */
  private readonly unread = new Set<string>();
  private readonly file: SafetensorsFileSync | null;

  constructor(
    /** A map is copied (by reference: release() never changes the caller's map); a file is read lazily and stays open. */
    tensors: Map<string, HostTensor> | SafetensorsFileSync,
    /** Where the weights came from, for error messages. */
    readonly source = 'checkpoint',
    readonly precision: Precision = 'fp32',
  ) {
    if (tensors instanceof SafetensorsFileSync) {
      this.file = tensors;
      this.tensors = new Map();
      for (const n of tensors.names()) this.unread.add(n);
    } else {
      this.file = null;
      this.tensors = new Map(tensors);
    }
  }

  /** A safetensors file, each tensor read when a builder first asks for it. */
  static load(path: string, precision?: Precision, source = path): Weights {
    return new Weights(SafetensorsFileSync.open(path), source, precision);
  }

  has(name: string): boolean {
    return this.tensors.has(name) || this.unread.has(name) || this.released.has(name);
  }

  names(): string[] {
    return [...this.tensors.keys(), ...this.unread, ...this.released.keys()];
  }

  /** Checks that `name` exists with `shape` without reading it (also after it was released). */
  check(name: string, shape: readonly number[]): void {
    const known = this.released.get(name)?.shape ?? (this.unread.has(name) ? this.file!.info(name).shape : undefined);
    if (!known) return void this.get(name, shape);
    checkShape(this.source, name, known, shape);
    this.used.add(name);
  }

  /**
   * A token equal for keys that share one stored tensor (the original DiT's single embedder
   * behind every block's key), valid after release too.
   */
  identity(name: string): object {
    const gone = this.released.get(name);
    if (gone) return gone.identity;
    const t = this.get(name);
    let id = this.identities.get(t);
    if (!id) this.identities.set(t, (id = {}));
    return id;
  }

  /**
   * Drops the stored tensor `name` once its derived form is made (quantized weights), so a
   * large checkpoint is not held twice. Keys sharing the tensor keep it until released too.
   */
  release(name: string): void {
    if (!this.tensors.has(name) && !this.unread.has(name)) return;
    this.released.set(name, { shape: this.get(name).shape, identity: this.identity(name) });
    this.tensors.delete(name);
  }

  /** The stored tensor `name` (any dtype); `shape` (if given) must match exactly. */
  get(name: string, shape?: readonly number[]): HostTensor {
    if (this.unread.delete(name)) this.tensors.set(name, this.file!.read(name));
    const t = this.tensors.get(name);
    if (!t) {
      // A program error, not a user's: loaders read released weights through derive().
      if (this.released.has(name)) throw new Error(`${this.source}: weight "${name}" was released after quantization`);
      throw new HarmonicaError('MISSING_WEIGHT', `${this.source}: missing weight "${name}"`);
    }
    if (shape) checkShape(this.source, name, t.shape, shape);
    this.used.add(name);
    return t;
  }

  /** `name` as float32: the stored tensor itself, or one widened copy made on first use. */
  float32(name: string, shape?: readonly number[]): HostTensor {
    const t = this.get(name, shape);
    return t.dtype === 'float32' ? t : this.derive(`float32:${name}`, () => castTensor(t, 'float32'));
  }

  /** The value `make` returns for `key`, made once. */
  derive<T>(key: string, make: () => T): T {
    if (!this.derived.has(key)) this.derived.set(key, make());
    return this.derived.get(key) as T;
  }

  /** Bytes of stored tensors held in memory now (read and not released). */
  heldBytes(): number {
    let total = 0;
    for (const t of new Set(this.tensors.values())) total += t.data.byteLength;
    return total;
  }

  /** Names never read by a builder (a sign of a layout or config mismatch). */
  unused(): string[] {
    return this.names().filter((n) => !this.used.has(n));
  }
}

function checkShape(source: string, name: string, actual: readonly number[], expected: readonly number[]): void {
  if (actual.length !== expected.length || actual.some((d, i) => d !== expected[i])) {
    throw new HarmonicaError('WEIGHT_SHAPE', `${source}: weight "${name}" has shape [${actual}], expected [${expected}]`);
  }
}

/** [rows, cols] -> [cols, rows], any dtype. */
export function transpose2d(t: HostTensor): HostTensor {
  const [rows, cols] = t.shape as [number, number];
  const src = t.data;
  const out = tensor(t.dtype, [cols, rows]);
  const dst = out.data as Float32Array;
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) dst[c * rows + r] = (src as Float32Array)[r * cols + c]!;
  return out;
}

/**
 * A stored float tensor as a float32 graph value. Initializers keep the stored dtype (no host
 * copy); fp16/bf16 go through a Cast that ORT folds once at session start. Graph inputs
 * (training) are float32 host copies, made once.
 */
function floatParam(b: GraphBuilder, w: Weights, name: string, shape: readonly number[]): Value {
  if (b.weights === 'inputs') return b.param(name, w.float32(name, shape));
  return b.cast(b.param(name, w.get(name, shape)), 'float32');
}

/**
 * An nn.Linear weight stored [out, in] as the graph's [in, out] operand, in `w.precision`.
 * Float initializers are the stored tensor itself behind Transpose + Cast nodes that ORT
 * folds at session start (the host keeps no second copy); quantized data is made once per
 * Weights, and the stored tensor is then released. `rows` takes output features [from, to)
 * only (a chunk of a fused projection).
 */
function linearWeight(b: GraphBuilder, w: Weights, name: string, inFeatures: number, outFeatures: number, rows?: [number, number]): Omit<LinearParams, 'bias'> {
  w.check(name, [outFeatures, inFeatures]);
  const [from, to] = rows ?? [0, outFeatures];
  const label = rows ? `${name}[${from}:${to}]` : name;
  const part = () => (rows ? leadingRows(w.get(name), from, to) : w.get(name));
  if (b.weights === 'inputs') {
    if (w.precision !== 'fp32') throw new HarmonicaError('BAD_CONFIG', `${w.source}: trained weights must be fp32, not ${w.precision}`);
    return { weight: b.param(name, transpose2d(w.float32(name)), { from: w.get(name), toCheckpoint: transpose2d }) };
  }
  switch (w.precision) {
    case 'int8': {
      const q = w.derive(`int8:${label}`, () => quantizeInt8(part()));
      return { weight: b.initializer(label, q.data), quant: { kind: 'int8', scales: b.initializer(`${label}.scales`, q.scales) } };
    }
    case 'int4': {
      const q = w.derive(`int4:${label}`, () => quantizeInt4(part(), INT4_BLOCK));
      return {
        weight: b.initializer(label, q.data),
        quant: {
          kind: 'int4', scales: b.initializer(`${label}.scales`, q.scales), zeroPoints: b.initializer(`${label}.zero_points`, q.zeroPoints),
          inFeatures, blockSize: q.blockSize, accuracyLevel: INT4_ACCURACY_LEVEL,
        },
      };
    }
    default: {
      // Transposed before the Cast: ORT folds a 2-byte transpose faster (measured).
      const init = b.param(label, rows ? w.derive(`rows:${label}`, part) : part());
      return { weight: b.cast(b.transpose(init, [1, 0]), w.precision === 'fp16' ? 'float16' : 'float32') };
    }
  }
}

/** Quantized weights never read their stored tensor again. */
function releaseIfQuantized(w: Weights, name: string): void {
  if (w.precision === 'int8' || w.precision === 'int4') w.release(name);
}

function linearBias(b: GraphBuilder, w: Weights, name: string, outFeatures: number, rows?: [number, number]): Value {
  if (!rows) return floatParam(b, w, name, [outFeatures]);
  const part = w.derive(`rows:${name}[${rows[0]}:${rows[1]}]`, () => leadingRows(w.get(name, [outFeatures]), rows[0], rows[1]));
  return b.cast(b.param(`${name}[${rows[0]}:${rows[1]}]`, part), 'float32');
}

/**
 * A PyTorch nn.Linear stored as `${prefix}.weight` [out, in] (+ `.bias`): becomes graph
 * params named after the checkpoint key.
 */
export function loadLinear(b: GraphBuilder, w: Weights, prefix: string, inFeatures: number, outFeatures: number, bias = true): LinearParams {
  const params: LinearParams = linearWeight(b, w, `${prefix}.weight`, inFeatures, outFeatures);
  if (bias) params.bias = linearBias(b, w, `${prefix}.bias`, outFeatures);
  if (b.weights === 'initializers') releaseIfQuantized(w, `${prefix}.weight`);
  return params;
}

/**
 * Consecutive chunks of a fused nn.Linear's outputs (e.g. adaLN's shift/scale/gate), each its
 * own linear: initializers hold only the rows each chunk needs; trained weights stay one
 * param, sliced in the graph.
 */
export function loadLinearChunks(b: GraphBuilder, w: Weights, prefix: string, inFeatures: number, outFeatures: number, chunks: readonly [number, number][]): LinearParams[] {
  if (b.weights === 'inputs') {
    const whole = loadLinear(b, w, prefix, inFeatures, outFeatures);
    return chunks.map(([from, to]) => ({ weight: b.slice(whole.weight, [from], [to], [1]), bias: b.slice(whole.bias!, [from], [to], [0]) }));
  }
  const params = chunks.map((rows) => ({
    ...linearWeight(b, w, `${prefix}.weight`, inFeatures, outFeatures, rows),
    bias: linearBias(b, w, `${prefix}.bias`, outFeatures, rows),
  }));
  releaseIfQuantized(w, `${prefix}.weight`);
  return params;
}

/** Any other tensor, as a float32 graph param under its checkpoint name. */
export function loadParam(b: GraphBuilder, w: Weights, name: string, shape: readonly number[]): Value {
  return floatParam(b, w, name, shape);
}

/**
 * Rows `indices` of an embedding table as float32. The table stays in its stored dtype and
 * only the gathered rows are widened, so an fp16 vocabulary table stays fp16 in memory; with
 * a non-fp32 precision an fp32 table is kept as fp16 (half the memory, rows rounded once).
 */
export function loadEmbedding(b: GraphBuilder, w: Weights, name: string, shape: readonly number[], indices: Value): Value {
  if (b.weights === 'inputs') return b.gather(b.param(name, w.float32(name, shape)), indices, 0);
  w.check(name, shape);
  const storedDtype = w.derive(`dtype:${name}`, () => w.get(name).dtype);
  const narrowed = w.precision !== 'fp32' && storedDtype === 'float32';
  const table = narrowed ? w.derive(`float16:${name}`, () => castTensor(w.get(name), 'float16')) : w.get(name);
  if (narrowed) w.release(name);
  return b.cast(b.gather(b.param(name, table), indices, 0), 'float32');
}

/**
 * A stride-k patch convolution `${prefix}.weight` [out, in, k, k] (+ bias) as the linear map
 * [in*k*k, out] over patchified tokens (see patchify in embeddings.ts). Kept float32 in
 * every precision (one small matrix, applied to raw pixels or latents).
 */
export function loadPatchEmbedding(b: GraphBuilder, w: Weights, prefix: string, inChannels: number, patch: number, outChannels: number): LinearParams {
  const name = `${prefix}.weight`;
  const stored = w.get(name, [outChannels, inChannels, patch, patch]);
  const flatShape = [outChannels, inChannels * patch * patch];
  const bias = floatParam(b, w, `${prefix}.bias`, [outChannels]);
  if (b.weights === 'inputs') {
    const flat = transpose2d({ ...w.float32(name), shape: flatShape });
    return { weight: b.param(name, flat, { from: stored, toCheckpoint: (t) => ({ ...transpose2d(t), shape: stored.shape }) }), bias };
  }
  const flat = w.derive(`flat:${name}`, () => ({ ...stored, shape: flatShape }));
  return { weight: b.cast(b.transpose(b.param(name, flat), [1, 0]), 'float32'), bias };
}
