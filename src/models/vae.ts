import type { GraphBuilder } from '../onnx/builder.js';
import type { Value } from '../onnx/ir.js';
import { HarmonicaError } from '../util/errors.js';
import { attention, type AttentionParams } from './layers.js';
import { loadLinear, loadParam, type Weights } from './weights.js';

/**
 * The decoder half of diffusers' `AutoencoderKL` (latents -> image), built from a checkpoint
 * in the diffusers key layout (`post_quant_conv.*`, `decoder.*`). PixArt-alpha and DiT denoise
 * in the latent space of the SD VAE (4 channels, scaling factor 0.18215).
 */
export interface VaeConfig {
  latentChannels: number;
  outChannels: number;
  /** Encoder order; the decoder walks it reversed (widest first). */
  blockOutChannels: number[];
  /** Resnets per encoder block; each decoder up block has one more. */
  layersPerBlock: number;
  normNumGroups: number;
  /** Latents from the diffusion model are z * scalingFactor; the decoder divides it back out. */
  scalingFactor: number;
  midBlockAddAttention: boolean;
}

/** The SD VAE (`stabilityai/sd-vae-ft-ema`, PixArt-alpha's and DiT's `vae/config.json`). */
export const SD_VAE_CONFIG: VaeConfig = {
  latentChannels: 4,
  outChannels: 3,
  blockOutChannels: [128, 256, 512, 512],
  layersPerBlock: 2,
  normNumGroups: 32,
  scalingFactor: 0.18215,
  midBlockAddAttention: true,
};

/** Every GroupNorm of the decoder (resnets, mid-block attention, conv_norm_out) uses this eps. */
export const VAE_NORM_EPS = 1e-6;

function bad(message: string): HarmonicaError {
  return new HarmonicaError('BAD_CONFIG', `VAE config: ${message}`);
}

function positiveInt(json: Record<string, unknown>, key: string, fallback?: number): number {
  const v = json[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw bad(`${key} must be a positive integer, got ${JSON.stringify(v)}`);
  return v;
}

/**
 * Reads a diffusers `AutoencoderKL` config.json. Missing keys take diffusers' defaults (old SD
 * VAE configs such as sd-vae-ft-ema's predate scaling_factor and rely on its 0.18215), except
 * block_out_channels, whose default [64] fits no real model. Options this decoder does not
 * implement are refused rather than ignored: ignoring them would decode to a plausible-looking
 * but wrong image.
 */
export function vaeConfigFromDiffusers(json: unknown): VaeConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw bad('expected a JSON object');
  const j = json as Record<string, unknown>;
  if (j._class_name !== undefined && j._class_name !== 'AutoencoderKL') throw bad(`_class_name ${JSON.stringify(j._class_name)} is not AutoencoderKL`);

  const channels = j.block_out_channels;
  if (!Array.isArray(channels) || channels.length === 0 || !channels.every((c) => typeof c === 'number' && Number.isInteger(c) && c > 0)) {
    throw bad(`block_out_channels must be a non-empty list of positive integers, got ${JSON.stringify(channels)}`);
  }
  const blockOutChannels = channels as number[];
  const normNumGroups = positiveInt(j, 'norm_num_groups', 32);
  const indivisible = blockOutChannels.find((c) => c % normNumGroups !== 0);
  if (indivisible !== undefined) throw bad(`block_out_channels ${indivisible} is not divisible into norm_num_groups ${normNumGroups}`);

  const scalingFactor = j.scaling_factor ?? SD_VAE_CONFIG.scalingFactor;
  if (typeof scalingFactor !== 'number' || !Number.isFinite(scalingFactor) || scalingFactor <= 0) {
    throw bad(`scaling_factor must be a positive number, got ${JSON.stringify(scalingFactor)}`);
  }
  const addAttention = j.mid_block_add_attention ?? true;
  if (typeof addAttention !== 'boolean') throw bad(`mid_block_add_attention must be a boolean, got ${JSON.stringify(addAttention)}`);

  const upBlocks = j.up_block_types;
  if (upBlocks !== undefined && (!Array.isArray(upBlocks) || upBlocks.length !== blockOutChannels.length || upBlocks.some((t) => t !== 'UpDecoderBlock2D'))) {
    throw bad(`up_block_types must be ${blockOutChannels.length} x "UpDecoderBlock2D", got ${JSON.stringify(upBlocks)}`);
  }
  if ((j.act_fn ?? 'silu') !== 'silu') throw bad(`act_fn ${JSON.stringify(j.act_fn)} is not supported (only "silu")`);
  if ((j.norm_type ?? 'group') !== 'group') throw bad(`norm_type ${JSON.stringify(j.norm_type)} is not supported (only "group")`);
  if ((j.use_post_quant_conv ?? true) !== true) throw bad('use_post_quant_conv false (SD3/Flux VAEs) is not supported');
  if ((j.shift_factor ?? 0) !== 0) throw bad(`shift_factor ${JSON.stringify(j.shift_factor)} (SD3/Flux VAEs) is not supported`);

  return {
    latentChannels: positiveInt(j, 'latent_channels', 4),
    outChannels: positiveInt(j, 'out_channels', 3),
    blockOutChannels,
    layersPerBlock: positiveInt(j, 'layers_per_block', 1),
    normNumGroups,
    scalingFactor,
    midBlockAddAttention: addAttention,
  };
}

/**
 * Parameter names of the mid-block attention. diffusers renamed them in 0.15 (the old
 * `AttentionBlock` became `Attention`); checkpoints saved before still carry the old names,
 * and diffusers itself converts them on load. Both hold nn.Linear weights [C, C].
 */
export const VAE_ATTENTION_KEYS = {
  current: { norm: 'group_norm', q: 'to_q', k: 'to_k', v: 'to_v', out: 'to_out.0' },
  legacy: { norm: 'group_norm', q: 'query', k: 'key', v: 'value', out: 'proj_attn' },
} as const;

export type VaeAttentionLayout = keyof typeof VAE_ATTENTION_KEYS;

/** Which attention layout a checkpoint uses; the current one when neither is present (so errors name it). */
export function vaeAttentionLayout(w: Weights, prefix: string): VaeAttentionLayout {
  if (w.has(`${prefix}.${VAE_ATTENTION_KEYS.current.q}.weight`)) return 'current';
  if (w.has(`${prefix}.${VAE_ATTENTION_KEYS.legacy.q}.weight`)) return 'legacy';
  return 'current';
}

function conv(b: GraphBuilder, w: Weights, x: Value, prefix: string, outChannels: number, kernel: 1 | 3): Value {
  const inChannels = x.shape[1]!;
  const weight = loadParam(b, w, `${prefix}.weight`, [outChannels, inChannels, kernel, kernel]);
  const bias = loadParam(b, w, `${prefix}.bias`, [outChannels]);
  const p = (kernel - 1) / 2; // "same" padding, as every decoder conv has
  return b.conv(x, weight, bias, { pads: [p, p, p, p] });
}

function groupNorm(b: GraphBuilder, w: Weights, cfg: VaeConfig, x: Value, prefix: string): Value {
  const c = x.shape[1]!;
  return b.groupNorm(x, cfg.normNumGroups, loadParam(b, w, `${prefix}.weight`, [c]), loadParam(b, w, `${prefix}.bias`, [c]), VAE_NORM_EPS);
}

/** ResnetBlock2D without a time embedding: x + conv2(silu(norm2(conv1(silu(norm1(x)))))); dropout is identity at inference. */
function resnet(b: GraphBuilder, w: Weights, cfg: VaeConfig, x: Value, prefix: string, outChannels: number): Value {
  return b.scope(prefix, () => {
    let h = conv(b, w, b.silu(groupNorm(b, w, cfg, x, `${prefix}.norm1`)), `${prefix}.conv1`, outChannels, 3);
    h = conv(b, w, b.silu(groupNorm(b, w, cfg, h, `${prefix}.norm2`)), `${prefix}.conv2`, outChannels, 3);
    // A 1x1 projection of the raw input when the width changes (diffusers' use_in_shortcut).
    const shortcut = x.shape[1] === outChannels ? x : conv(b, w, x, `${prefix}.conv_shortcut`, outChannels, 1);
    return b.add(shortcut, h);
  });
}

/** Single-head self-attention over the H*W positions, with channels as features, plus the residual. */
function midAttention(b: GraphBuilder, w: Weights, cfg: VaeConfig, x: Value, prefix: string): Value {
  return b.scope(prefix, () => {
    const [batch, c, height, width] = x.shape as [number, number, number, number];
    const keys = VAE_ATTENTION_KEYS[vaeAttentionLayout(w, prefix)];
    const lin = (name: string) => loadLinear(b, w, `${prefix}.${name}`, c, c);
    const p: AttentionParams = { q: lin(keys.q), k: lin(keys.k), v: lin(keys.v), out: lin(keys.out) };
    const h = groupNorm(b, w, cfg, x, `${prefix}.${keys.norm}`);
    const tokens = b.transpose(b.reshape(h, [batch, c, height * width]), [0, 2, 1]);
    // One head of width C, so the scores are scaled by 1/sqrt(C) as in diffusers.
    const attended = attention(b, tokens, tokens, p, 1);
    const back = b.reshape(b.transpose(attended, [0, 2, 1]), [batch, c, height, width]);
    return b.add(x, back);
  });
}

/**
 * Decodes latents [B, latentChannels, h, w] to an image [B, outChannels, 2^(n-1) h, 2^(n-1) w]
 * (n = blockOutChannels.length; 8x for the SD VAE).
 *
 * `latents` are in the diffusion model's space (what the sampler produces); the graph divides
 * them by `scalingFactor` itself, so callers never have to. The image is in [-1, 1] nominally
 * but NOT clamped: callers map it with clamp((x + 1) / 2, 0, 1), as diffusers' image processor
 * does, and can see out-of-range values if they want to.
 */
export function buildVaeDecoder(b: GraphBuilder, w: Weights, cfg: VaeConfig, latents: Value): Value {
  if (latents.rank !== 4 || latents.shape[1] !== cfg.latentChannels) {
    throw new HarmonicaError('BAD_INPUT', `VAE decoder: latents must be [B, ${cfg.latentChannels}, h, w], got [${latents.shape}]`);
  }
  const reversed = [...cfg.blockOutChannels].reverse();
  const widest = reversed[0]!;

  let x = b.mul(latents, 1 / cfg.scalingFactor);
  x = b.scope('post_quant_conv', () => conv(b, w, x, 'post_quant_conv', cfg.latentChannels, 1));
  x = b.scope('decoder.conv_in', () => conv(b, w, x, 'decoder.conv_in', widest, 3));

  x = resnet(b, w, cfg, x, 'decoder.mid_block.resnets.0', widest);
  if (cfg.midBlockAddAttention) x = midAttention(b, w, cfg, x, 'decoder.mid_block.attentions.0');
  x = resnet(b, w, cfg, x, 'decoder.mid_block.resnets.1', widest);

  reversed.forEach((channels, i) => {
    for (let j = 0; j <= cfg.layersPerBlock; j++) x = resnet(b, w, cfg, x, `decoder.up_blocks.${i}.resnets.${j}`, channels);
    if (i < reversed.length - 1) {
      const prefix = `decoder.up_blocks.${i}.upsamplers.0`;
      x = b.scope(prefix, () => conv(b, w, b.resizeNearest(x, [1, 1, 2, 2]), `${prefix}.conv`, channels, 3));
    }
  });

  return b.scope('decoder.conv_out', () => {
    const h = b.silu(groupNorm(b, w, cfg, x, 'decoder.conv_norm_out'));
    return conv(b, w, h, 'decoder.conv_out', cfg.outChannels, 3);
  });
}
