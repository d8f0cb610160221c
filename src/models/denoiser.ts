import type { GraphBuilder } from '../onnx/builder.js';
import type { Value } from '../onnx/ir.js';
import { HarmonicaError } from '../util/errors.js';
import { buildDit, ditOtherMacs, ditOutChannels, ditSlots, validateDitConfig, type DitConfig } from './dit.js';
import { buildPixArt, pixartOtherMacs, pixartSlots, validatePixArtConfig, type PixArtConfig, type PixArtInputs } from './pixart.js';
import type { SlotInfo, SublayerHooks } from './sublayer.js';
import type { Weights } from './weights.js';

/** What the executor, the samplers and the engine need to know about a denoising model. */
export interface Denoiser {
  family: 'dit' | 'pixart';
  /**
   * What the inputs besides x and t carry: class labels `y` [B] int64, or a text encoding
   * `encoder_hidden_states` [B, L, C] with `encoder_attention_mask` [B, L] (1 = real token).
   * Absent means 'class'.
   */
  conditioning?: 'class' | 'text';
  slots: SlotInfo[];
  /** MACs per sample outside the gated sublayers. */
  otherMacs: number;
  /** [C, H, W] of the (latent) image. */
  latentShape: [number, number, number];
  /** Output channels (2x latent channels with learned sigma). */
  outChannels: number;
  /** Declares the model's inputs on `b` for `batch` samples and builds the forward pass. */
  build(b: GraphBuilder, weights: Weights, batch: number, hooks: SublayerHooks): { out: Value; inputs: Record<string, Value> };
}

export function ditDenoiser(config: DitConfig): Denoiser {
  const cfg = validateDitConfig(config);
  return {
    family: 'dit',
    conditioning: 'class',
    slots: ditSlots(cfg),
    otherMacs: ditOtherMacs(cfg),
    latentShape: [cfg.inChannels, cfg.inputSize, cfg.inputSize],
    outChannels: ditOutChannels(cfg),
    build(b, weights, batch, hooks) {
      const inputs = {
        x: b.input('x', 'float32', [batch, cfg.inChannels, cfg.inputSize, cfg.inputSize]),
        t: b.input('t', 'float32', [batch]),
        y: b.input('y', 'int64', [batch]),
      };
      return { out: buildDit(b, weights, cfg, inputs, hooks), inputs };
    },
  };
}

/**
 * PixArt-alpha, built for captions of `maxTokens` tokens; `resolution` [B, 2] and
 * `aspect_ratio` [B, 1] are inputs only when the model uses the micro-conditions.
 */
export function pixartDenoiser(config: PixArtConfig): Denoiser {
  const cfg = validatePixArtConfig(config);
  return {
    family: 'pixart',
    conditioning: 'text',
    slots: pixartSlots(cfg),
    otherMacs: pixartOtherMacs(cfg),
    latentShape: [cfg.inChannels, cfg.sampleSize, cfg.sampleSize],
    outChannels: cfg.outChannels,
    build(b, weights, batch, hooks) {
      const io: PixArtInputs = {
        x: b.input('x', 'float32', [batch, cfg.inChannels, cfg.sampleSize, cfg.sampleSize]),
        t: b.input('t', 'float32', [batch]),
        encoderHiddenStates: b.input('encoder_hidden_states', 'float32', [batch, cfg.maxTokens, cfg.captionChannels]),
        encoderAttentionMask: b.input('encoder_attention_mask', 'float32', [batch, cfg.maxTokens]),
      };
      const inputs: Record<string, Value> = { x: io.x, t: io.t, encoder_hidden_states: io.encoderHiddenStates, encoder_attention_mask: io.encoderAttentionMask };
      if (cfg.useAdditionalConditions) {
        inputs.resolution = io.resolution = b.input('resolution', 'float32', [batch, 2]);
        inputs.aspect_ratio = io.aspectRatio = b.input('aspect_ratio', 'float32', [batch, 1]);
      }
      return { out: buildPixArt(b, weights, cfg, io, hooks), inputs };
    },
  };
}

export function createDenoiser(family: string, config: unknown): Denoiser {
  switch (family) {
    case 'dit': return ditDenoiser(config as DitConfig);
    case 'pixart': return pixartDenoiser(config as PixArtConfig);
    default: throw new HarmonicaError('BAD_CONFIG', `unknown model family "${family}" (known: dit, pixart)`);
  }
}
