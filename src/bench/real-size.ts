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
import { initVaeWeights, vaeConfigToDiffusers } from '../models/vae-init.js';
import { SD_VAE_CONFIG, type VaeConfig } from '../models/vae.js';
import { writeSafetensors } from '../tensor/safetensors.js';

const run = promisify(execFile);
const CLI = fileURLToPath(new URL('../../bin/harmonica.js', import.meta.url));

/** DiT-XL/2 at 256 px as the Hub folder (facebook/DiT-XL-2-256) and the original checkpoint have it. */
export const DIT_XL_2_256: DitConfig = {
  ...DIT_PRESETS['DiT-XL/2']!, inputSize: 32, inChannels: 4, mlpRatio: 4, numClasses: 1000, learnSigma: true, freqShift: 0, mlpNormEps: 1e-6,
};

export interface RealSizeOptions {
  /** Working folder: checkpoints, packages and the cache are made here (and kept for reruns). */
  dir: string;
  layout: 'diffusers' | 'original';
  steps: number;
  seed: number;
  threads?: number;
  /** The model's sizes: DiT-XL/2 256 px and the SD VAE unless given (tests use tiny ones). */
  sizes?: { dit: DitConfig; vae: VaeConfig };
}

export interface PhaseResult {
  phase: string;
  wallS: number;
  /** Peak resident memory of the phase's process (GNU time's maximum RSS). */
  peakRssGb: number;
  openMs?: number;
  sessionsMs?: number;
  compiledCache?: string;
  /** Median of the steps after the first (the first touches every mapped weight page). */
  stepMs?: number;
  loopMs?: number;
}

/**
 * Writes a random DiT-XL/2 checkpoint in the exact real layout, seeded: the Hub diffusers
 * folder (transformer/ and vae/ with the SD VAE) or the original state dict beside a VAE folder.
 */
async function writeCheckpoint(o: RealSizeOptions, d: DitConfig, vae: VaeConfig): Promise<{ from: string; vae?: string }> {
  const root = join(o.dir, `dit-${o.layout}`);
  const vaeDir = join(root, o.layout === 'diffusers' ? 'vae' : 'sd-vae-ft-ema');
  const from = o.layout === 'diffusers' ? root : join(root, 'DiT-XL-2-256x256.safetensors');
  const done = join(root, '.complete');
  if (existsSync(done)) return { from, vae: o.layout === 'original' ? vaeDir : undefined };
  await mkdir(vaeDir, { recursive: true });
  await writeFile(join(vaeDir, 'config.json'), JSON.stringify(vaeConfigToDiffusers(vae)));
  await writeSafetensors(join(vaeDir, 'diffusion_pytorch_model.safetensors'), initVaeWeights(vae, o.seed + 1));
  const weights = initDitWeights(d, o.seed);
  if (o.layout === 'diffusers') {
    await mkdir(join(root, 'transformer'), { recursive: true });
    await writeFile(join(root, 'transformer', 'config.json'), JSON.stringify({
      _class_name: 'Transformer2DModel', norm_type: 'ada_norm_zero', sample_size: d.inputSize, patch_size: d.patchSize, in_channels: d.inChannels,
      out_channels: 2 * d.inChannels, num_layers: d.depth, num_attention_heads: d.heads, attention_head_dim: d.hidden / d.heads, num_embeds_ada_norm: d.numClasses,
      activation_fn: 'gelu-approximate', norm_elementwise_affine: false, norm_eps: 1e-5,
    }));
    await writeSafetensors(join(root, 'transformer', 'diffusion_pytorch_model.safetensors'), weights);
    await writeFile(join(root, 'model_index.json'), JSON.stringify({ _class_name: 'DiTPipeline', transformer: ['diffusers', 'Transformer2DModel'], vae: ['diffusers', 'AutoencoderKL'] }));
  } else {
    await writeSafetensors(from, diffusersDitToOriginal(weights, d));
  }
  await writeFile(done, '');
  return { from, vae: o.layout === 'original' ? vaeDir : undefined };
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
 * DiT-XL/2 at real size from nothing: random real-layout checkpoint, convert, then generate
 * (256 px, CFG batch 2) with an empty compiled-model cache, again with it filled, and with
 * fora:2. Every phase is its own process, so its peak RSS is its own.
 */
export async function benchRealSize(o: RealSizeOptions): Promise<{ machine: string; model: string; layout: string; steps: number; phases: PhaseResult[]; fora2Speedup: number }> {
  await mkdir(o.dir, { recursive: true });
  const { dit, vae } = o.sizes ?? { dit: DIT_XL_2_256, vae: SD_VAE_CONFIG };
  const t0 = performance.now();
  const checkpoint = await writeCheckpoint(o, dit, vae);
  const phases: PhaseResult[] = [{ phase: 'write random checkpoint (or reuse)', wallS: (performance.now() - t0) / 1000, peakRssGb: process.resourceUsage().maxRSS / 2 ** 20 }];
  const cacheDir = join(o.dir, 'cache');
  await rm(cacheDir, { recursive: true, force: true });
  const pkg = join(o.dir, `pkg-dit-${o.layout}`);
  const shape = { depth: dit.depth, hidden: dit.hidden, heads: dit.heads, patchSize: dit.patchSize, numClasses: dit.numClasses };
  const original = ['--vae', checkpoint.vae!, '--config', JSON.stringify(shape), '--image-size', String(dit.inputSize * 8)];
  const convertArgs = ['convert', '--from', checkpoint.from, '--out', pkg, ...(o.layout === 'original' ? original : [])];
  const converted = await cli(convertArgs, cacheDir);
  phases.push({ phase: 'convert', wallS: converted.wallS, peakRssGb: converted.peakRssGb });
  const threads = o.threads ? ['--threads', String(o.threads)] : [];
  const generate = async (phase: string, cache: string) => {
    const r = await cli(['generate', '--model', pkg, '--class', String(Math.min(207, dit.numClasses - 1)), '--steps', String(o.steps), '--cfg', '4', '--seed', String(o.seed), '--cache', cache, '--json', '--out', join(o.dir, `${phase.replace(/\W+/g, '-')}.png`), ...threads], cacheDir);
    const report = JSON.parse(r.stdout.trim().split('\n').pop()!) as { stepsMs: number[]; openMs: number; sessionsMs: number; compiledCache: string };
    const result: PhaseResult = {
      phase, wallS: r.wallS, peakRssGb: r.peakRssGb, openMs: report.openMs, sessionsMs: report.sessionsMs, compiledCache: report.compiledCache,
      stepMs: median(report.stepsMs.slice(1)), loopMs: report.stepsMs.slice(1).reduce((a, b) => a + b, 0),
    };
    phases.push(result);
    return result;
  };
  await generate('generate, cold (empty compiled cache)', 'none');
  const cached = await generate('generate, second start', 'none');
  const fora = await generate('generate fora:2, second start', 'fora:2');
  return {
    machine: `${cpus().length} x ${cpus()[0]?.model ?? 'CPU'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB`,
    model: o.sizes ? `DiT depth ${dit.depth}, hidden ${dit.hidden} (random weights)` : 'DiT-XL/2 256px (random weights, real layout)', layout: o.layout, steps: o.steps, phases,
    fora2Speedup: cached.loopMs! / fora.loopMs!,
  };
}
