import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildCachedStep, stepNames } from '../cache/step-graph.js';
import { Engine } from '../engine/engine.js';
import { psnr } from '../eval/metrics.js';
import { ditDenoiser } from '../models/denoiser.js';
import { DIT_XL_2 } from '../models/dit.js';
import { initDitWeights } from '../models/dit-init.js';
import { PRECISIONS, type ComponentPrecision, type Precision } from '../models/precision.js';
import { initT5Weights } from '../models/t5-init.js';
import { buildT5Encoder, PIXART_T5_MAX_LENGTH, type T5Config } from '../models/t5.js';
import { Weights } from '../models/weights.js';
import { GraphBuilder } from '../onnx/builder.js';
import type { Graph } from '../onnx/ir.js';
import { Session } from '../onnx/session.js';
import { initializerBytes } from '../onnx/writer.js';
import { castTensor } from '../tensor/half.js';
import { Rng } from '../tensor/rng.js';
import { writeSafetensors } from '../tensor/safetensors.js';
import { tensor, type HostTensor } from '../tensor/tensor.js';
import { median, timeRuns } from './timing.js';

/** T5 v1.1 XXL (PixArt-alpha's text encoder) widths; the layer count is the benchmark's choice. */
export function t5XxlConfig(numLayers: number): T5Config {
  return {
    vocabSize: 32128, dModel: 4096, dKv: 64, dFf: 10240, numLayers, numHeads: 64,
    relativeAttentionNumBuckets: 32, relativeAttentionMaxDistance: 128, layerNormEpsilon: 1e-6,
    feedForwardProj: 'gated-gelu', maxLength: PIXART_T5_MAX_LENGTH,
  };
}

/** What the benchmark builds: T5-XXL encoder layers, or all of DiT-XL/2 (256px) as the cached step graph. */
export type PrecisionTarget = 't5-xxl' | 'dit-xl-2';

/** What one precision measured in its own process (so its peak RSS is its own). */
export interface PrecisionRow {
  precision: Precision;
  /** Initializer bytes of the graph we hand to ORT. */
  graphWeightsMB: number;
  buildMs: number;
  sessionMs: number;
  /** Median run at batch 2 (the CFG rows): the encoder over 120 tokens, or one DiT step computing every slot. */
  runMs: number;
  /** Nodes of the graph we built. */
  nodes: number;
  /** Resident set after the session is ready, and the process's peak. */
  rssMB: number;
  peakRssMB: number;
  /** Cosine similarity of the output with fp32's (every value). */
  cosine: number;
}

export interface PrecisionResult {
  model: string;
  stored: 'float16' | 'float32';
  threads: number;
  machine: string;
  rows: PrecisionRow[];
}

const BATCH = 2;
const MB = 2 ** 20;

/** Random weights in the real key layout (transformers' / diffusers' names and [out, in] linears). */
function randomCheckpoint(target: PrecisionTarget, numLayers: number): Map<string, HostTensor> {
  if (target === 'dit-xl-2') return initDitWeights(DIT_XL_2, 0);
  const cfg = t5XxlConfig(numLayers);
  const ckpt = initT5Weights(cfg, 0);
  // transformers initializes q with std (d_model * d_kv)^-0.5 (T5 folds the attention scale
  // into it); initT5Weights' d_model^-0.5 makes the softmax nearly one-hot, which would
  // overstate how much any rounding changes the output.
  for (const [k, t] of ckpt) if (k.endsWith('.SelfAttention.q.weight')) (t.data as Float32Array).forEach((v, i, a) => (a[i] = v / Math.sqrt(cfg.dKv)));
  return ckpt;
}

/** The graph of one target at batch 2 (the CFG rows), its feeds and its output's name. */
function targetGraph(target: PrecisionTarget, weights: Weights, numLayers: number): { graph: Graph; feeds: Record<string, HostTensor>; output: string } {
  const rng = new Rng(3);
  if (target === 'dit-xl-2') {
    const model = ditDenoiser(DIT_XL_2);
    const graph = buildCachedStep(model, weights, BATCH).graph;
    const [c, h, w] = model.latentShape;
    const feeds: Record<string, HostTensor> = { x: tensor('float32', [BATCH, c, h, w]), t: tensor('float32', [BATCH], [500, 500]), y: tensor('int64', [BATCH], [207, 1000]) };
    rng.fillNormal(feeds.x!.data as Float32Array, 0, 1);
    // A step that computes every slot (what the executor feeds on a first step).
    for (const v of graph.inputs) {
      if (v.name.startsWith('compute/')) feeds[v.name] = tensor('bool', [1], [1]);
      if (v.name.startsWith('cache/')) feeds[v.name] = tensor(v.dtype, v.shape);
    }
    return { graph, feeds, output: stepNames.out };
  }
  const cfg = t5XxlConfig(numLayers);
  const b = new GraphBuilder('t5_encoder');
  const L = cfg.maxLength;
  b.output(buildT5Encoder(b, weights, cfg, b.input('input_ids', 'int64', [BATCH, L]), b.input('attention_mask', 'int64', [BATCH, L])), 'hidden');
  const ids = tensor('int64', [BATCH, L], Array.from({ length: BATCH * L }, () => Math.floor(rng.uniform() * cfg.vocabSize)));
  // The second row is a short (negative) prompt: most of it padding.
  const mask = tensor('int64', [BATCH, L], Array.from({ length: BATCH * L }, (_, i) => (i < L ? (i < 100 ? 1 : 0) : i - L < 8 ? 1 : 0)));
  return { graph: b.graph, feeds: { input_ids: ids, attention_mask: mask }, output: 'hidden' };
}

/** One precision, in this process: weights file -> graph -> session -> timed runs; writes the output to `outFile`. */
export async function runPrecision(o: { target: PrecisionTarget; weightsFile: string; numLayers: number; precision: Precision; runs: number; threads: number; outFile: string }): Promise<Omit<PrecisionRow, 'cosine'>> {
  const weights = Weights.load(o.weightsFile, o.precision, o.target);
  let t0 = performance.now();
  const { graph, feeds, output } = targetGraph(o.target, weights, o.numLayers);
  const buildMs = performance.now() - t0;
  t0 = performance.now();
  const session = await Session.create(graph, { threads: o.threads });
  const sessionMs = performance.now() - t0;
  let out: Float32Array = new Float32Array();
  const times = await timeRuns(async () => {
    out = (await session.run(feeds, [output]))[output]!.data as Float32Array;
  }, o.runs, 1);
  await writeFile(o.outFile, new Uint8Array(out.buffer, out.byteOffset, out.byteLength));
  return {
    precision: o.precision, graphWeightsMB: initializerBytes(graph) / MB, buildMs, sessionMs, runMs: median(times), nodes: graph.nodes.length,
    rssMB: process.memoryUsage().rss / MB, peakRssMB: (process.resourceUsage().maxRSS * 1024) / MB,
  };
}

function cosine(a: Float32Array, b: Float32Array): number {
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i]! * b[i]!;
    aa += a[i]! * a[i]!;
    bb += b[i]! * b[i]!;
  }
  return ab / Math.sqrt(aa * bb);
}

const CLI = join(dirname(fileURLToPath(import.meta.url)), '../../bin/harmonica.js');

function child(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`bench precision worker exited with ${code}`))));
  });
}

/**
 * T5-XXL-wide encoder layers or DiT-XL/2 with random weights in the real key layout, stored
 * fp16 (or fp32) in a safetensors file as a downloaded checkpoint is; each precision runs in
 * a fresh process.
 */
export async function benchPrecision(o: { target?: PrecisionTarget; numLayers?: number; precisions?: readonly Precision[]; runs?: number; threads?: number; stored?: 'float16' | 'float32' } = {}): Promise<PrecisionResult> {
  const target = o.target ?? 't5-xxl';
  const numLayers = o.numLayers ?? 1;
  const stored = o.stored ?? 'float16';
  const threads = o.threads ?? cpus().length;
  const precisions = o.precisions ?? PRECISIONS.filter((p) => p !== 'fp16');
  const dir = await mkdtemp(join(tmpdir(), 'harmonica-precision-'));
  try {
    const weightsFile = join(dir, 'weights.safetensors');
    const ckpt = randomCheckpoint(target, numLayers);
    // Cast once per tensor object: shared tensors stay shared (they are written once per key).
    const cast = new Map<HostTensor, HostTensor>();
    for (const [k, t] of ckpt) {
      if (!cast.has(t)) cast.set(t, castTensor(t, stored));
      ckpt.set(k, cast.get(t)!);
    }
    cast.clear();
    await writeSafetensors(weightsFile, ckpt);
    ckpt.clear();
    const outputs = new Map<Precision, Float32Array>();
    const rows: PrecisionRow[] = [];
    for (const p of ['fp32' as Precision, ...precisions.filter((x) => x !== 'fp32')]) {
      const outFile = join(dir, `${p}.f32`);
      const line = await child(['bench', 'precision', '--worker', weightsFile, '--target', target, '--layers', String(numLayers), '--only', p, '--runs', String(o.runs ?? 3), '--threads', String(threads), '--worker-out', outFile]);
      const row = JSON.parse(line) as Omit<PrecisionRow, 'cosine'>;
      const buf = await readFile(outFile);
      outputs.set(p, new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4));
      rows.push({ ...row, cosine: cosine(outputs.get(p)!, outputs.get('fp32')!) });
    }
    const model = target === 'dit-xl-2' ? 'DiT-XL/2 256px (diffusers layout), cached step graph, random weights' : `T5 v1.1 XXL widths, ${numLayers} layer(s), random weights`;
    return { model, stored, threads, machine: `${cpus().length} x ${cpus()[0]?.model ?? 'CPU'}`, rows };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export interface ModelPrecisionRow {
  precision: string;
  cache: string;
  /** Mean step time over every step of every sample (reused steps included). */
  stepMs: number;
  /** Mean PSNR of the generated images against fp32 without caching (same seeds), dB. */
  psnr: number;
}

/**
 * A bundled (or any) model generated at each precision, with and without a cache policy: the
 * quality cost of quantization alone and of quantization + caching, against fp32 uncached.
 */
export async function benchModelPrecision(o: { model: string; n?: number; caches?: readonly string[]; threads?: number; settings?: readonly ComponentPrecision[] }): Promise<{ model: string; n: number; machine: string; rows: ModelPrecisionRow[] }> {
  const n = o.n ?? 8;
  const caches = o.caches ?? ['none', 'fora:2'];
  const probe = await Engine.open(o.model, { threads: o.threads });
  const text = probe.model.conditioning === 'text';
  const settings = o.settings ?? (text
    ? [{}, { textEncoder: 'int8' }, { textEncoder: 'int4' }, { transformer: 'int8' }, { transformer: 'int4' }, { transformer: 'int8', textEncoder: 'int8' }]
    : [{}, { transformer: 'int8' }, { transformer: 'int4' }]) as ComponentPrecision[];
  const requests = Array.from({ length: n }, (_, i) => (text ? { prompt: `the digit ${i % 10}`, seed: i } : { classLabel: i % 10, seed: i }));
  const generateAll = async (engine: Engine, cache: string) => {
    const images: Float32Array[] = [];
    const steps: number[] = [];
    for (const r of requests) {
      const { images: [img], report } = await engine.generate({ ...r, cache });
      images.push(img!.data as Float32Array);
      steps.push(...report.stepsMs);
    }
    return { images, stepMs: steps.reduce((a, b) => a + b, 0) / steps.length };
  };
  const reference = await generateAll(probe, 'none');
  const rows: ModelPrecisionRow[] = [];
  for (const precision of settings) {
    const engine = Object.keys(precision).length ? await Engine.open(o.model, { threads: o.threads, precision }) : probe;
    const label = Object.entries(engine.precision).map(([k, v]) => `${k} ${v}`).join(', ');
    for (const cache of caches) {
      const run = precision === settings[0] && cache === 'none' ? reference : await generateAll(engine, cache);
      const db = run.images.reduce((s, img, i) => s + psnr(img, reference.images[i]!), 0) / n;
      rows.push({ precision: label, cache, stepMs: run.stepMs, psnr: db });
    }
  }
  return { model: probe.id, n, machine: probe.machine, rows };
}
