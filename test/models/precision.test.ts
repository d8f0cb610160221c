import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { plainHooks } from '../../src/models/sublayer.js';
import { buildDit } from '../../src/models/dit.js';
import { linear } from '../../src/models/layers.js';
import { parseComponentPrecision, parsePrecision, type Precision } from '../../src/models/precision.js';
import { initT5Weights } from '../../src/models/t5-init.js';
import { buildT5Encoder, type T5Config } from '../../src/models/t5.js';
import { loadLinear, Weights } from '../../src/models/weights.js';
import { originalDitToDiffusers } from '../../src/models/checkpoints/dit.js';
import { GraphBuilder } from '../../src/onnx/builder.js';
import { initializerBytes } from '../../src/onnx/writer.js';
import { Session } from '../../src/onnx/session.js';
import { castTensor } from '../../src/tensor/half.js';
import { dequantizeInt4, dequantizeInt8, quantizeInt4, quantizeInt8 } from '../../src/tensor/quantize.js';
import { Rng } from '../../src/tensor/rng.js';
import { readSafetensors, SafetensorsError, SafetensorsFileSync, serializeSafetensors, writeSafetensors } from '../../src/tensor/safetensors.js';
import { tensor, type HostTensor } from '../../src/tensor/tensor.js';
import { HarmonicaError } from '../../src/util/errors.js';
import { randomDitCheckpoints, TINY_DIT } from '../helpers/dit-checkpoint.js';

function randn(shape: number[], seed: number, std = 1): HostTensor {
  const t = tensor('float32', shape);
  new Rng(seed).fillNormal(t.data as Float32Array, 0, std);
  return t;
}

/** x [m, k] @ w [k, n] in float64. */
function matmul(x: HostTensor, w: HostTensor): Float64Array {
  const [m, k] = x.shape as [number, number];
  const n = w.shape[1]!;
  const a = x.data as Float32Array;
  const b = w.data as Float32Array;
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let p = 0; p < k; p++) for (let j = 0; j < n; j++) out[i * n + j]! += a[i * k + p]! * b[p * n + j]!;
  return out;
}

/** ||a - b|| / ||b|| */
function relRms(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return Math.sqrt(num / den);
}

function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i]! * b[i]!;
    aa += a[i]! ** 2;
    bb += b[i]! ** 2;
  }
  return ab / Math.sqrt(aa * bb);
}

/** One nn.Linear [out, in] (stored as `dtype`) applied by ORT in `precision`. */
async function runLinear(stored: HostTensor, bias: HostTensor, x: HostTensor, precision: Precision): Promise<Float32Array> {
  const [out, inF] = stored.shape as [number, number];
  const w = new Weights(new Map([['l.weight', stored], ['l.bias', bias]]), 'test', precision);
  const b = new GraphBuilder('linear');
  b.output(linear(b, b.input('x', 'float32', x.shape), loadLinear(b, w, 'l', inF, out)), 'y');
  const s = await Session.create(b.graph, { threads: 1 });
  return (await s.run({ x })).y!.data as Float32Array;
}

describe('weight-only quantization (host side)', () => {
  // Weights [out, in] with K = 100 (not a multiple of the int4 block: the last block is padded).
  const w = randn([24, 100], 1, 0.05);
  const ref = (t: HostTensor) => Float32Array.from({ length: 100 * 24 }, (_, idx) => (t.data as Float32Array)[(idx % 24) * 100 + Math.floor(idx / 24)]!);
  const exact = ref(w);

  it('int8: per-column symmetric, every weight within half a step of its scale', () => {
    const q = quantizeInt8(w);
    expect(q.data.shape).toEqual([100, 24]);
    const back = dequantizeInt8(q).data as Float32Array;
    const scales = q.scales.data as Float32Array;
    for (let i = 0; i < back.length; i++) expect(Math.abs(back[i]! - exact[i]!)).toBeLessThanOrEqual(scales[i % 24]! / 2 + 1e-9);
  });

  it('int4: blocks of 32 with zero points, every weight within half a step; fp16 and fp32 storage quantize alike', () => {
    const q = quantizeInt4(w);
    expect(q.data.shape).toEqual([24, 4, 16]);
    expect(q.scales.shape).toEqual([24 * 4]);
    expect(q.zeroPoints.shape).toEqual([24 * 2]);
    const back = dequantizeInt4(q).data as Float32Array;
    const scales = q.scales.data as Float32Array;
    for (let i = 0; i < back.length; i++) {
      const [k, n] = [Math.floor(i / 24), i % 24];
      expect(Math.abs(back[i]! - exact[i]!)).toBeLessThanOrEqual(scales[n * 4 + Math.floor(k / 32)]! / 2 + 1e-9);
    }
    const fromHalf = dequantizeInt4(quantizeInt4(castTensor(w, 'float16'))).data as Float32Array;
    expect(relRms(fromHalf, back)).toBeLessThan(0.02);
  });
});

describe('quantized MatMuls in ONNX Runtime', () => {
  const [m, k, n] = [16, 256, 96];
  const w = randn([n, k], 2, 1 / Math.sqrt(k));
  const bias = randn([n], 3, 0.1);
  const x = randn([m, k], 4);
  const withBias = (y: Float64Array) => y.map((v, i) => v + (bias.data as Float32Array)[i % n]!);
  const wT = tensor('float32', [k, n], Float32Array.from({ length: k * n }, (_, i) => (w.data as Float32Array)[(i % n) * k + Math.floor(i / n)]!));
  const fp32 = withBias(matmul(x, wT));

  it('fp32 from an fp16 checkpoint equals the product with the fp16 values widened', async () => {
    const half = castTensor(w, 'float16');
    const widened = castTensor(half, 'float32');
    const y = await runLinear(half, castTensor(bias, 'float16'), x, 'fp32');
    const expected = matmul(x, tensor('float32', [k, n], Float32Array.from({ length: k * n }, (_, i) => (widened.data as Float32Array)[(i % n) * k + Math.floor(i / n)]!)))
      .map((v, i) => v + (castTensor(castTensor(bias, 'float16'), 'float32').data as Float32Array)[i % n]!);
    expect(relRms(y, expected)).toBeLessThan(1e-6);
  });

  // Tolerances: the operator against the product with the dequantized weights (what it is
  // meant to compute; the difference is the activations' dynamic 8-bit quantization), and
  // against fp32 (adds the weights' own rounding).
  it('int8 (DynamicQuantizeMatMul): within 1.5e-2 of the dequantized product, 2.5e-2 of fp32', async () => {
    const y = await runLinear(w, bias, x, 'int8');
    const deq = withBias(matmul(x, dequantizeInt8(quantizeInt8(w))));
    expect(relRms(y, deq)).toBeLessThan(1.5e-2);
    expect(relRms(y, fp32)).toBeLessThan(2.5e-2);
  });

  it('int4 (MatMulNBits, accuracy level 4): within 1e-2 of the dequantized product, 0.12 of fp32', async () => {
    const y = await runLinear(w, bias, x, 'int4');
    const deq = withBias(matmul(x, dequantizeInt4(quantizeInt4(w))));
    expect(relRms(y, deq)).toBeLessThan(1e-2);
    expect(relRms(y, fp32)).toBeLessThan(0.12);
  });
});

const nonCastNodes = (b: GraphBuilder) => b.graph.nodes.filter((n) => n.op !== 'Cast').length;

function buildTinyDit(w: Weights): GraphBuilder {
  const b = new GraphBuilder('dit');
  const c = TINY_DIT;
  const io = { x: b.input('x', 'float32', [2, c.inChannels, c.inputSize, c.inputSize]), t: b.input('t', 'float32', [2]), y: b.input('y', 'int64', [2]) };
  b.output(buildDit(b, w, c, io, plainHooks(b)), 'out');
  return b;
}

describe('weights kept in their stored precision', () => {
  const { original } = randomDitCheckpoints(TINY_DIT);
  const half = new Map([...original].map(([k, t]) => [k, castTensor(t, 'float16')]));
  const widened = new Map([...half].map(([k, t]) => [k, castTensor(t, 'float32')]));
  const fp16File = new Weights(originalDitToDiffusers(half, TINY_DIT), 'fp16');
  const fp32File = new Weights(originalDitToDiffusers(widened, TINY_DIT), 'fp32');

  it('an fp16 checkpoint builds fp16 initializers (half the bytes, no host copies), the same graph as fp32 plus Casts, and shares the embedder', () => {
    const g16 = buildTinyDit(fp16File);
    const g32 = buildTinyDit(fp32File);
    const inits = [...g16.graph.initializers.values()];
    expect(inits.every((t) => t.dtype === 'float16')).toBe(true);
    expect(initializerBytes(g16.graph) * 2).toBe(initializerBytes(g32.graph));
    expect(nonCastNodes(g16)).toBe(nonCastNodes(g32));
    expect(g16.graph.initializers.size).toBe(g32.graph.initializers.size);
    // The initializer is the checkpoint's tensor itself, and the same object for a second graph.
    const q = fp16File.get('transformer_blocks.0.attn1.to_q.weight');
    expect(inits).toContain(q);
    expect([...buildTinyDit(fp16File).graph.initializers.values()]).toContain(q);
    // One timestep embedder for both blocks (the original layout has one).
    const names = [...g16.graph.initializers.keys()].map((v) => v.name);
    expect(names.filter((n) => n.includes('timestep_embedder.linear_1.weight'))).toHaveLength(1);
  });

  it('the fp16 checkpoint computes what the widened fp32 checkpoint computes', async () => {
    const feeds = { x: randn([2, 4, 8, 8], 5), t: tensor('float32', [2], [10, 500]), y: tensor('int64', [2], [3, 10]) };
    const run = async (w: Weights) => ((await (await Session.create(buildTinyDit(w).graph, { threads: 1 })).run(feeds)).out!.data as Float32Array);
    expect(relRms(await run(fp16File), await run(fp32File))).toBeLessThan(1e-6);
  });

  it('quantized weights are made once, shared by a second graph, and their stored tensors released', () => {
    const w = new Weights(originalDitToDiffusers(half, TINY_DIT), 'fp16', 'int8');
    const first = buildTinyDit(w);
    const second = buildTinyDit(w);
    const q = 'transformer_blocks.0.attn1.to_q.weight';
    const find = (g: GraphBuilder) => [...g.graph.initializers].find(([v]) => v.name === q)![1];
    expect(find(first).dtype).toBe('int8');
    expect(find(second)).toBe(find(first));
    expect(w.has(q)).toBe(true);
    expect(() => w.get(q)).toThrow(/released after quantization/);
    // Still one embedder in the second graph: shared keys keep one identity after release.
    const names = [...second.graph.initializers.keys()].map((v) => v.name);
    expect(names.filter((n) => n.includes('timestep_embedder.linear_1.weight') && !n.endsWith('.scales'))).toHaveLength(1);
  });

  it('fp16 precision puts float16 MatMuls in the graph (CUDA); quantized precisions keep no float matrix', () => {
    const count = (p: Precision, op: string) => buildTinyDit(new Weights(originalDitToDiffusers(original, TINY_DIT), 'w', p)).graph.nodes.filter((n) => n.op === op).length;
    const matmuls = count('fp32', 'MatMul');
    const fp16 = buildTinyDit(new Weights(originalDitToDiffusers(original, TINY_DIT), 'w', 'fp16'));
    const halfMatMuls = fp16.graph.nodes.filter((n) => n.op === 'MatMul' && n.outputs[0]!.dtype === 'float16');
    // Every linear but the patch embedding; attention's two products stay fp32.
    expect(halfMatMuls.length).toBe(matmuls - 1 - 2 * TINY_DIT.depth);
    expect(count('int8', 'DynamicQuantizeMatMul')).toBe(matmuls - 1 - 2 * TINY_DIT.depth);
    expect(count('int4', 'MatMulNBits')).toBe(matmuls - 1 - 2 * TINY_DIT.depth);
    expect(count('int8', 'MatMul')).toBe(1 + 2 * TINY_DIT.depth);
  });
});

describe('T5 encoder at int8 and int4', () => {
  const cfg: T5Config = {
    vocabSize: 64, dModel: 64, dKv: 16, dFf: 160, numLayers: 2, numHeads: 4,
    relativeAttentionNumBuckets: 8, relativeAttentionMaxDistance: 16, layerNormEpsilon: 1e-6, feedForwardProj: 'gated-gelu', maxLength: 12,
  };
  const ckpt = initT5Weights(cfg, 7);
  const ids = tensor('int64', [2, 12], Array.from({ length: 24 }, (_, i) => (i * 7) % 64));
  const mask = tensor('int64', [2, 12], Array.from({ length: 24 }, (_, i) => (i % 12 < 9 ? 1 : 0)));
  const encode = async (p: Precision) => {
    const b = new GraphBuilder('t5');
    b.output(buildT5Encoder(b, new Weights(ckpt, 't5', p), cfg, b.input('ids', 'int64', [2, 12]), b.input('mask', 'int64', [2, 12])), 'h');
    return (await (await Session.create(b.graph, { threads: 1 })).run({ ids, mask })).h!.data as Float32Array;
  };

  // Random Gaussian weights; int4's ~8% weight error per matrix compounds over the layers
  // (measured here: int8 0.9996, int4 0.970).
  it('int8 output has cosine similarity > 0.999 with fp32, int4 > 0.95', async () => {
    const fp32 = await encode('fp32');
    const c8 = cosine(await encode('int8'), fp32);
    const c4 = cosine(await encode('int4'), fp32);
    expect(c8).toBeGreaterThan(0.999);
    expect(c4).toBeGreaterThan(0.95);
  });
});

describe('precision settings', () => {
  it('names the field and the allowed values', () => {
    expect(parsePrecision('int4', 'precision')).toBe('int4');
    expect(() => parsePrecision('int2', 'precision.transformer')).toThrow(/precision.transformer must be one of fp32, fp16, int8, int4, got "int2"/);
    expect(() => parseComponentPrecision({ vae: 'int8' })).toThrow(/precision.vae is not a component \(known: transformer, textEncoder\)/);
    expect(() => parseComponentPrecision('int8')).toThrow(HarmonicaError);
    expect(parseComponentPrecision({ textEncoder: 'int8' })).toEqual({ textEncoder: 'int8' });
  });

  it('training builds refuse a quantized precision', () => {
    const w = new Weights(new Map([['l.weight', randn([4, 4], 1)], ['l.bias', randn([4], 2)]]), 'train', 'int8');
    const b = new GraphBuilder('train', { weights: 'inputs' });
    expect(() => loadLinear(b, w, 'l', 4, 4)).toThrow(/trained weights must be fp32, not int8/);
  });
});

describe('weights read lazily from a file', () => {
  const dirs: string[] = [];
  afterAll(async () => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));
  const cfg: T5Config = {
    vocabSize: 64, dModel: 32, dKv: 8, dFf: 64, numLayers: 2, numHeads: 4,
    relativeAttentionNumBuckets: 8, relativeAttentionMaxDistance: 16, layerNormEpsilon: 1e-6, feedForwardProj: 'gated-gelu', maxLength: 6,
  };
  const ckpt = new Map([...initT5Weights(cfg, 3)].map(([k, t]) => [k, castTensor(t, 'float16')]));
  const file = async () => {
    const dir = await mkdtemp(join(tmpdir(), 'harmonica-lazy-'));
    dirs.push(dir);
    const path = join(dir, 't5.safetensors');
    await writeSafetensors(path, ckpt);
    return path;
  };
  const build = (w: Weights) => {
    const b = new GraphBuilder('t5');
    b.output(buildT5Encoder(b, w, cfg, b.input('ids', 'int64', [1, 6]), b.input('mask', 'int64', [1, 6])), 'h');
    return b;
  };
  const bytes = (names: (n: string) => boolean) => [...ckpt].filter(([n]) => names(n)).reduce((s, [, t]) => s + t.data.byteLength, 0);

  it('the sync reader returns what the async one does, and refuses a truncated file with its code', async () => {
    const path = await file();
    const lazy = SafetensorsFileSync.open(path);
    const all = await readSafetensors(path);
    for (const n of lazy.names()) expect(lazy.read(n)).toEqual(all.get(n));
    lazy.close();
    const cut = join(dirs.at(-1)!, 'cut.safetensors');
    const full = serializeSafetensors(ckpt);
    await writeFile(cut, full.subarray(0, full.byteLength - 10));
    expect(() => SafetensorsFileSync.open(cut)).toThrow(expect.objectContaining({ code: 'OFFSET_OUT_OF_RANGE' }));
    // A file cut short after it was opened (the header checked out) fails at the read.
    await writeFile(cut, full);
    const opened = SafetensorsFileSync.open(cut);
    await truncate(cut, full.byteLength - 10);
    const last = opened.names().at(-1)!;
    expect(() => opened.read(last)).toThrow(expect.objectContaining({ code: 'TRUNCATED' }));
    expect(() => opened.read(last)).toThrow(SafetensorsError);
    opened.close();
  });

  it('nothing is read before a builder asks; at int8 only norms, the position table and the (fp16) vocabulary stay in memory', async () => {
    const path = await file();
    const w = Weights.load(path, 'int8');
    expect(w.heldBytes()).toBe(0);
    build(w);
    expect(w.heldBytes()).toBe(bytes((n) => n.includes('layer_norm') || n.includes('relative_attention_bias') || n === 'shared.weight'));
    build(w); // a second graph (another batch size) from the derived tensors
    expect(w.unused()).toEqual([]);
    const fp32 = Weights.load(path, 'fp32');
    build(fp32);
    expect(fp32.heldBytes()).toBe(bytes(() => true));
  });
});
