import { existsSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { isOriginalDitLayout } from '../models/checkpoints/dit.js';
import { validateDitConfig, type DitConfig } from '../models/dit.js';
import { pixartConfigFromDiffusers } from '../models/pixart.js';
import { t5ConfigFromHf } from '../models/t5.js';
import { vaeConfigFromDiffusers } from '../models/vae.js';
import { SafetensorsFile, tensorSources, type TensorSource } from '../tensor/safetensors.js';
import { HarmonicaError } from '../util/errors.js';
import { writeModelPackage, type ModelPackage } from './package.js';

/** The DiT family of the original paper (Table 1): depth, hidden, heads, patch. */
export const DIT_PRESETS: Record<string, Pick<DitConfig, 'depth' | 'hidden' | 'heads' | 'patchSize'>> = {
  'DiT-XL/2': { depth: 28, hidden: 1152, heads: 16, patchSize: 2 },
  'DiT-XL/4': { depth: 28, hidden: 1152, heads: 16, patchSize: 4 },
  'DiT-L/2': { depth: 24, hidden: 1024, heads: 16, patchSize: 2 },
  'DiT-B/2': { depth: 12, hidden: 768, heads: 12, patchSize: 2 },
  'DiT-S/2': { depth: 12, hidden: 384, heads: 6, patchSize: 2 },
};

/** Original DiT numerics by default (the weights were trained with them); see DitConfig. */
const ORIGINAL_NUMERICS = { freqShift: 0, mlpNormEps: 1e-6 } as const;
const DIT_DEFAULTS = { sampler: 'ddim', steps: 20, cfg: 1.5 };
/** PixArt-alpha's pipeline defaults: DPM-Solver 20 steps, guidance 4.5. */
const PIXART_DEFAULTS = { sampler: 'dpmpp', steps: 20, cfg: 4.5 };

export interface ConvertOptions {
  /** A diffusers folder (transformer/, vae/, for PixArt text_encoder/ and tokenizer/) or an original DiT .safetensors file. */
  from: string;
  out: string;
  /** Default: the name of the `out` folder. */
  id?: string;
  /** A diffusers AutoencoderKL folder (config.json and weights): the VAE an original checkpoint lacks, or one to use instead of the folder's vae/. */
  vae?: string;
  /** For original checkpoints: one of DIT_PRESETS, or a full DiT config. */
  preset?: string;
  config?: Partial<DitConfig>;
  /** For original checkpoints: 256 or 512 (latent side = image / 8). */
  imageSize?: number;
  /** Use diffusers' timestep shift and norm eps instead of the original DiT's. */
  diffusersNumerics?: boolean;
}

function ditConfigFromDiffusers(json: Record<string, unknown>, diffusersNumerics: boolean): DitConfig {
  const num = (k: string, fallback?: number) => {
    const v = json[k] ?? fallback;
    if (typeof v !== 'number') throw new HarmonicaError('BAD_CONFIG', `DiT config.json: "${k}" must be a number`);
    return v;
  };
  const inChannels = num('in_channels', 4);
  const outChannels = num('out_channels', inChannels);
  return validateDitConfig({
    inputSize: num('sample_size', 32), patchSize: num('patch_size', 2), inChannels,
    hidden: num('num_attention_heads', 16) * num('attention_head_dim', 72), depth: num('num_layers', 28), heads: num('num_attention_heads', 16),
    mlpRatio: 4, numClasses: num('num_embeds_ada_norm', 1000), learnSigma: outChannels === 2 * inChannels,
    ...(diffusersNumerics ? { freqShift: 1, mlpNormEps: num('norm_eps', 1e-5) } : ORIGINAL_NUMERICS),
  });
}

async function readJson(path: string): Promise<Record<string, unknown>> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new HarmonicaError('BAD_CONFIG', `cannot read ${path}: ${(err as Error).message}`);
  }
}

/**
 * The weights of the safetensors files opened while converting, read tensor by tensor as the
 * package is written (shards of many GB are never all in memory); closed at the end.
 */
class OpenFiles {
  private readonly files: SafetensorsFile[] = [];

  async open(paths: string[]): Promise<Map<string, TensorSource>> {
    const opened: SafetensorsFile[] = [];
    for (const p of paths) {
      const f = await SafetensorsFile.open(p);
      opened.push(f);
      this.files.push(f);
    }
    return tensorSources(opened);
  }

  /** A diffusers/transformers component folder: one safetensors file, or shards with an index. */
  async component(dir: string): Promise<Map<string, TensorSource>> {
    for (const base of ['diffusion_pytorch_model', 'model']) {
      if (existsSync(join(dir, `${base}.safetensors`))) return this.open([join(dir, `${base}.safetensors`)]);
      const index = join(dir, `${base}.safetensors.index.json`);
      if (existsSync(index)) {
        const map = (await readJson(index)).weight_map as Record<string, string> | undefined;
        if (!map) throw new HarmonicaError('BAD_CONFIG', `${index}: no weight_map`);
        return this.open([...new Set(Object.values(map))].map((shard) => join(dir, shard)));
      }
    }
    throw new HarmonicaError('BAD_CONFIG', `${dir}: no safetensors weights (.bin checkpoints are not supported: save them as safetensors)`);
  }

  async close(): Promise<void> {
    await Promise.all(this.files.map((f) => f.close()));
  }
}

/**
 * The transformer's model class as diffusers resolves it: Hub folders saved before the
 * dedicated classes name `Transformer2DModel`, which diffusers remaps by `norm_type`.
 */
export function transformerClass(config: Record<string, unknown>): string {
  const cls = String(config._class_name ?? '');
  if (cls !== 'Transformer2DModel') return cls;
  if (config.norm_type === 'ada_norm_zero') return 'DiTTransformer2DModel';
  if (config.norm_type === 'ada_norm_single') return 'PixArtTransformer2DModel';
  return cls;
}

/** The VAE of `dir` (a diffusers AutoencoderKL folder), checked, or none when `dir` is undefined. */
async function readVae(files: OpenFiles, dir: string | undefined) {
  if (!dir) return undefined;
  const config = await readJson(join(dir, 'config.json'));
  vaeConfigFromDiffusers(config);
  return { config, weights: await files.component(dir) };
}

/** Writes a model package from a diffusers folder or an original DiT checkpoint. */
export async function convertCheckpoint(o: ConvertOptions): Promise<ModelPackage> {
  if (!existsSync(o.from)) throw new HarmonicaError('BAD_CONFIG', `${o.from} does not exist`);
  if (o.vae && !existsSync(join(o.vae, 'config.json'))) throw new HarmonicaError('BAD_CONFIG', `--vae ${o.vae}: no config.json (expected a diffusers AutoencoderKL folder)`);
  const files = new OpenFiles();
  try {
    return await convertOpened(o, o.id ?? basename(o.out), files);
  } finally {
    await files.close();
  }
}

async function convertOpened(o: ConvertOptions, id: string, files: OpenFiles): Promise<ModelPackage> {
  if (statSync(o.from).isDirectory()) {
    const transformerDir = existsSync(join(o.from, 'transformer')) ? join(o.from, 'transformer') : o.from;
    const config = await readJson(join(transformerDir, 'config.json'));
    const cls = transformerClass(config);
    const vae = await readVae(files, o.vae ?? (existsSync(join(o.from, 'vae', 'config.json')) ? join(o.from, 'vae') : undefined));
    const extra: Record<string, Map<string, TensorSource> | object> = vae ? { 'vae.safetensors': vae.weights } : {};
    const common = { id, layout: 'diffusers' as const, ...(vae ? { vae: { config: vae.config, weights: 'vae.safetensors' } } : {}) };
    if (cls === 'PixArtTransformer2DModel') {
      const pixart = pixartConfigFromDiffusers(config);
      const tokenizerPath = join(o.from, 'tokenizer', 'tokenizer.json');
      if (!existsSync(tokenizerPath)) {
        throw new HarmonicaError('BAD_CONFIG', `${tokenizerPath} is missing: save the tokenizer in the fast format first (transformers: T5TokenizerFast.from_pretrained(dir).save_pretrained(dir))`);
      }
      const textConfig = await readJson(join(o.from, 'text_encoder', 'config.json'));
      t5ConfigFromHf(textConfig, pixart.maxTokens);
      extra['text_encoder.safetensors'] = await files.component(join(o.from, 'text_encoder'));
      extra['tokenizer.json'] = await readJson(tokenizerPath);
      return writeModelPackage(o.out, {
        ...common, family: 'pixart', config: { ...pixart }, defaults: PIXART_DEFAULTS,
        textEncoder: { config: textConfig, weights: 'text_encoder.safetensors', tokenizer: 'tokenizer.json', maxLength: pixart.maxTokens },
        provenance: { convertedFrom: o.from, format: 'diffusers' },
      }, await files.component(transformerDir), extra);
    }
    if (cls !== 'DiTTransformer2DModel') {
      throw new HarmonicaError('BAD_CONFIG', `${transformerDir}/config.json: unsupported model class "${cls}" (supported: DiTTransformer2DModel, PixArtTransformer2DModel, and Transformer2DModel with norm_type ada_norm_zero or ada_norm_single)`);
    }
    const dit = ditConfigFromDiffusers(config, !!o.diffusersNumerics);
    return writeModelPackage(o.out, {
      ...common, family: 'dit', config: { ...dit }, defaults: DIT_DEFAULTS, classes: classNames(dit),
      provenance: { convertedFrom: o.from, format: 'diffusers', diffusersNumerics: !!o.diffusersNumerics },
    }, await files.component(transformerDir), extra);
  }
  const preset = o.config ?? (o.preset ? DIT_PRESETS[o.preset] : undefined);
  if (!preset) throw new HarmonicaError('BAD_CONFIG', `an original DiT checkpoint needs --preset (one of ${Object.keys(DIT_PRESETS).join(', ')}) or --config`);
  const weights = await files.open([o.from]);
  if (!isOriginalDitLayout(weights.keys())) throw new HarmonicaError('BAD_CONFIG', `${o.from}: not an original DiT state dict (no x_embedder / blocks.N.attn.qkv keys)`);
  const imageSize = o.imageSize ?? 256;
  const dit = validateDitConfig({
    inputSize: imageSize / 8, inChannels: 4, mlpRatio: 4, numClasses: 1000, learnSigma: true, ...ORIGINAL_NUMERICS, ...preset,
  } as DitConfig);
  const vae = await readVae(files, o.vae);
  return writeModelPackage(o.out, {
    id, family: 'dit', layout: 'original', config: { ...dit }, defaults: DIT_DEFAULTS, classes: classNames(dit),
    ...(vae ? { vae: { config: vae.config, weights: 'vae.safetensors' } } : {}),
    provenance: { convertedFrom: o.from, format: 'facebookresearch DiT state dict', preset: o.preset, imageSize, ...(o.vae ? { vae: o.vae } : {}) },
  }, weights, vae ? { 'vae.safetensors': vae.weights } : {});
}

/**
 * Checkpoints carry no class names; their indices name them (ImageNet's for DiT), so class
 * conditioning (e.g. router training) knows how many there are.
 */
function classNames(dit: DitConfig): string[] {
  return Array.from({ length: dit.numClasses }, (_, i) => String(i));
}
