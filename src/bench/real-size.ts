import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { DIT_PRESETS } from '../engine/convert.js';
import { diffusersDitToOriginal } from '../models/checkpoints/dit.js';
import { initDitWeights } from '../models/dit-init.js';
import type { DitConfig } from '../models/dit.js';
import { initPixArtWeights } from '../models/pixart-init.js';
import { PIXART_XL_2_256, type PixArtConfig } from '../models/pixart.js';
import { drawT5Weight, t5WeightSpecs } from '../models/t5-init.js';
import type { T5Config } from '../models/t5.js';
import { writeWordLevelTokenizer } from '../models/tokenizer.js';
import { initVaeWeights, vaeConfigToDiffusers } from '../models/vae-init.js';
import { SD_VAE_CONFIG, type VaeConfig } from '../models/vae.js';
import { Rng } from '../tensor/rng.js';
import { writeSafetensors } from '../tensor/safetensors.js';
import type { HostTensor } from '../tensor/tensor.js';

const run = promisify(execFile);
const CLI = fileURLToPath(new URL('../../bin/harmonica.js', import.meta.url));

/** DiT-XL/2 at 256 px as the Hub folder (facebook/DiT-XL-2-256) and the original checkpoint have it. */
export const DIT_XL_2_256: DitConfig = {
  ...DIT_PRESETS['DiT-XL/2']!, inputSize: 32, inChannels: 4, mlpRatio: 4, numClasses: 1000, learnSigma: true, freqShift: 0, mlpNormEps: 1e-6,
};

/** PixArt-XL-2-512x512 (PixArt-alpha/PixArt-XL-2-512x512). */
export const PIXART_XL_2_512: PixArtConfig = { ...PIXART_XL_2_256, sampleSize: 64 };

/** T5 v1.1 XXL's encoder (PixArt-alpha's text encoder); 24 layers in the real one. */
export const T5_XXL: T5Config = {
  vocabSize: 32128, dModel: 4096, dKv: 64, dFf: 10240, numLayers: 24, numHeads: 64, relativeAttentionNumBuckets: 32,
  relativeAttentionMaxDistance: 128, layerNormEpsilon: 1e-6, feedForwardProj: 'gated-gelu', maxLength: 120,
};

export type RealSizeModel = 'dit-xl-2-256' | 'pixart-xl-2-512';

export interface RealSizeOptions {
  /** Working folder: checkpoints, packages and the cache are made here (and kept for reruns). */
  dir: string;
  model: RealSizeModel;
  /** DiT only: the Hub folder or the original state dict (converted with --vae). */
  layout: 'diffusers' | 'original';
  steps: number;
  seed: number;
  threads?: number;
  /** PixArt: T5-XXL encoder layers to write (24 is the real encoder: ~19 GB in fp32). */
  t5Layers?: number;
  /** Other sizes than the real ones (tests use tiny ones). */
  sizes?: { dit?: DitConfig; pixart?: PixArtConfig; t5?: T5Config; vae?: VaeConfig };
}

export interface PhaseResult {
  phase: string;
  wallS: number;
  /** Peak resident memory of the phase's process (GNU time's maximum RSS). */
  peakRssGb: number;
  /** Process start to the first step (generate's startMs). */
  startMs?: number;
  openMs?: number;
  sessionsMs?: number;
  compiledCache?: string;
  /** Median of the steps after the first (the first touches every mapped weight page). */
  stepMs?: number;
  loopMs?: number;
}

const jsonFile = (path: string, value: unknown) => writeFile(path, JSON.stringify(value));

async function writeVae(dir: string, vae: VaeConfig, seed: number): Promise<void> {
  await mkdir(dir, { recursive: true });
  await jsonFile(join(dir, 'config.json'), vaeConfigToDiffusers(vae));
  await writeSafetensors(join(dir, 'diffusion_pytorch_model.safetensors'), initVaeWeights(vae, seed));
}

/**
 * A random DiT checkpoint in the exact real layout, seeded: the Hub diffusers folder
 * (transformer/ and vae/ with the SD VAE) or the original state dict beside a VAE folder.
 */
async function writeDit(root: string, o: RealSizeOptions, d: DitConfig, vae: VaeConfig): Promise<{ from: string; args: string[] }> {
  const vaeDir = join(root, o.layout === 'diffusers' ? 'vae' : 'sd-vae-ft-ema');
  const from = o.layout === 'diffusers' ? root : join(root, 'DiT-XL-2-256x256.safetensors');
  const shape = { depth: d.depth, hidden: d.hidden, heads: d.heads, patchSize: d.patchSize, numClasses: d.numClasses };
  const args = o.layout === 'original' ? ['--vae', vaeDir, '--config', JSON.stringify(shape), '--image-size', String(d.inputSize * 8)] : [];
  if (existsSync(join(root, '.complete'))) return { from, args };
  await writeVae(vaeDir, vae, o.seed + 1);
  const weights = initDitWeights(d, o.seed);
  if (o.layout === 'diffusers') {
    await mkdir(join(root, 'transformer'), { recursive: true });
    await jsonFile(join(root, 'transformer', 'config.json'), {
      _class_name: 'Transformer2DModel', norm_type: 'ada_norm_zero', sample_size: d.inputSize, patch_size: d.patchSize, in_channels: d.inChannels,
      out_channels: 2 * d.inChannels, num_layers: d.depth, num_attention_heads: d.heads, attention_head_dim: d.hidden / d.heads, num_embeds_ada_norm: d.numClasses,
      activation_fn: 'gelu-approximate', norm_elementwise_affine: false, norm_eps: 1e-5,
    });
    await writeSafetensors(join(root, 'transformer', 'diffusion_pytorch_model.safetensors'), weights);
    await jsonFile(join(root, 'model_index.json'), { _class_name: 'DiTPipeline', transformer: ['diffusers', 'Transformer2DModel'], vae: ['diffusers', 'AutoencoderKL'] });
  } else {
    await writeSafetensors(from, diffusersDitToOriginal(weights, d));
  }
  await writeFile(join(root, '.complete'), '');
  return { from, args };
}

/** Words of the benchmark's word-level tokenizer (the real one is T5's sentencepiece). */
const WORDS = ['a', 'photo', 'of', 'dog', 'on', 'the', 'beach', 'at', 'sunset'];

/**
 * A random PixArt-alpha Hub folder, seeded: transformer/ (`Transformer2DModel`,
 * `ada_norm_single`), text_encoder/ with T5 shards (one per 4 layers) and an index,
 * tokenizer/tokenizer.json and vae/.
 */
async function writePixArt(root: string, o: RealSizeOptions, p: PixArtConfig, t5: T5Config, vae: VaeConfig): Promise<{ from: string; args: string[] }> {
  if (existsSync(join(root, '.complete'))) return { from: root, args: [] };
  await writeVae(join(root, 'vae'), vae, o.seed + 1);
  for (const d of ['transformer', 'text_encoder', 'tokenizer']) await mkdir(join(root, d), { recursive: true });
  await jsonFile(join(root, 'transformer', 'config.json'), {
    _class_name: 'Transformer2DModel', norm_type: 'ada_norm_single', sample_size: p.sampleSize, patch_size: p.patchSize, in_channels: p.inChannels,
    out_channels: p.outChannels, num_layers: p.depth, num_attention_heads: p.heads, attention_head_dim: p.hidden / p.heads, caption_channels: p.captionChannels,
    cross_attention_dim: p.hidden, activation_fn: 'gelu-approximate', attention_bias: true, norm_elementwise_affine: false, norm_eps: p.normEps, num_embeds_ada_norm: 1000,
  });
  await writeSafetensors(join(root, 'transformer', 'diffusion_pytorch_model.safetensors'), initPixArtWeights(p, o.seed));
  await jsonFile(join(root, 'text_encoder', 'config.json'), {
    model_type: 't5', architectures: ['T5EncoderModel'], vocab_size: t5.vocabSize, d_model: t5.dModel, d_kv: t5.dKv, d_ff: t5.dFf, num_layers: t5.numLayers,
    num_heads: t5.numHeads, relative_attention_num_buckets: t5.relativeAttentionNumBuckets, relative_attention_max_distance: t5.relativeAttentionMaxDistance,
    layer_norm_epsilon: t5.layerNormEpsilon, feed_forward_proj: t5.feedForwardProj,
  });
  // Drawn in initT5Weights' order, written four layers to a shard: never the whole encoder in memory.
  const rng = new Rng(o.seed + 2);
  const shards = Math.ceil(t5.numLayers / 4);
  const shardOf = (name: string) => {
    const block = /^encoder\.block\.(\d+)\./.exec(name);
    return block ? Math.floor(Number(block[1]) / 4) : name === 'shared.weight' ? 0 : shards - 1;
  };
  const weightMap: Record<string, string> = {};
  let shard = new Map<string, HostTensor>();
  let current = 0;
  const flush = async () => {
    const file = `model-${String(current + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
    await writeSafetensors(join(root, 'text_encoder', file), shard);
    for (const k of shard.keys()) weightMap[k] = file;
    shard = new Map();
  };
  for (const spec of t5WeightSpecs(t5)) {
    const s = shardOf(spec.name);
    if (s !== current) {
      await flush();
      current = s;
    }
    shard.set(spec.name, drawT5Weight(spec, rng));
  }
  await flush();
  await jsonFile(join(root, 'text_encoder', 'model.safetensors.index.json'), { weight_map: weightMap });
  await jsonFile(join(root, 'tokenizer', 'tokenizer.json'), writeWordLevelTokenizer(WORDS));
  await writeFile(join(root, '.complete'), '');
  return { from: root, args: [] };
}

/** Runs the CLI in a child process under GNU time, so each phase has its own peak RSS. */
async function cli(args: string[], cacheDir: string): Promise<{ stdout: string; wallS: number; peakRssGb: number }> {
  const t0 = performance.now();
  const { stdout, stderr } = await run('/usr/bin/time', ['-f', 'maxrss_kb=%M', process.execPath, CLI, ...args], {
    env: { ...process.env, HARMONICA_CACHE_DIR: cacheDir }, maxBuffer: 1 << 26,
  });
  const kb = Number(/maxrss_kb=(\d+)/.exec(stderr)?.[1] ?? NaN);
  return { stdout, wallS: (performance.now() - t0) / 1000, peakRssGb: kb / 2 ** 20 };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s[(s.length - 1) >> 1]! + s[s.length >> 1]!) / 2 : NaN;
};

/**
 * A real-size model from nothing: random real-layout checkpoint, convert, then generate
 * (CFG batch 2, through the VAE) with an empty compiled-model cache, again with it filled,
 * and with fora:2. Every phase is its own process, so its peak RSS is its own.
 */
export async function benchRealSize(o: RealSizeOptions): Promise<{ machine: string; model: string; steps: number; phases: PhaseResult[]; fora2Speedup: number }> {
  await mkdir(o.dir, { recursive: true });
  const vae = o.sizes?.vae ?? SD_VAE_CONFIG;
  const dit = o.sizes?.dit ?? DIT_XL_2_256;
  const pixart = o.sizes?.pixart ?? PIXART_XL_2_512;
  const t5 = { ...(o.sizes?.t5 ?? T5_XXL), numLayers: o.t5Layers ?? (o.sizes?.t5 ?? T5_XXL).numLayers };
  const name = o.model === 'pixart-xl-2-512' ? `pixart-t5x${t5.numLayers}` : `dit-${o.layout}`;
  const t0 = performance.now();
  const checkpoint = o.model === 'pixart-xl-2-512' ? await writePixArt(join(o.dir, name), o, pixart, t5, vae) : await writeDit(join(o.dir, name), o, dit, vae);
  const phases: PhaseResult[] = [{ phase: 'write random checkpoint (or reuse)', wallS: (performance.now() - t0) / 1000, peakRssGb: process.resourceUsage().maxRSS / 2 ** 20 }];
  const cacheDir = join(o.dir, 'cache');
  await rm(cacheDir, { recursive: true, force: true });
  const pkg = join(o.dir, `pkg-${name}`);
  const converted = await cli(['convert', '--from', checkpoint.from, '--out', pkg, ...checkpoint.args], cacheDir);
  phases.push({ phase: 'convert', wallS: converted.wallS, peakRssGb: converted.peakRssGb });
  const condition = o.model === 'pixart-xl-2-512' ? ['--prompt', 'a photo of a dog on the beach at sunset', '--cfg', '4.5'] : ['--class', String(Math.min(207, dit.numClasses - 1)), '--cfg', '4'];
  const threads = o.threads ? ['--threads', String(o.threads)] : [];
  const generate = async (phase: string, cache: string) => {
    const out = join(o.dir, `${name}-${phase.replace(/\W+/g, '-')}.png`);
    const r = await cli(['generate', '--model', pkg, ...condition, '--steps', String(o.steps), '--seed', String(o.seed), '--cache', cache, '--json', '--out', out, ...threads], cacheDir);
    const report = JSON.parse(r.stdout.trim().split('\n').pop()!) as { stepsMs: number[]; startMs: number; openMs: number; sessionsMs: number; compiledCache: string };
    const result: PhaseResult = {
      phase, wallS: r.wallS, peakRssGb: r.peakRssGb, startMs: report.startMs, openMs: report.openMs, sessionsMs: report.sessionsMs, compiledCache: report.compiledCache,
      stepMs: median(report.stepsMs.slice(1)), loopMs: report.stepsMs.slice(1).reduce((a, b) => a + b, 0),
    };
    phases.push(result);
    return result;
  };
  await generate('generate, cold (empty compiled cache)', 'none');
  const cached = await generate('generate, second start', 'none');
  const fora = await generate('generate fora:2, second start', 'fora:2');
  const real = !o.sizes;
  const model = o.model === 'pixart-xl-2-512'
    ? `PixArt-XL-2-512 with a T5-XXL-wide encoder of ${t5.numLayers} layers (random weights, Hub layout)`
    : `DiT-XL/2 256px (random weights, ${o.layout} layout)`;
  return {
    machine: `${cpus().length} x ${cpus()[0]?.model ?? 'CPU'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB`,
    model: real ? model : `${model}, test sizes`, steps: o.steps, phases, fora2Speedup: cached.loopMs! / fora.loopMs!,
  };
}
