import type { GraphBuilder } from '../onnx/builder.js';
import type { Value } from '../onnx/ir.js';
import type { DType } from '../tensor/dtype.js';
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
  /**
   * Declares the model's inputs on `b` for `batch` samples and builds the forward pass.
   * Inputs named in `provided` are taken from there instead (e.g. caption embeddings computed
   * in the same graph by a text encoder being trained jointly).
   */
  build(b: GraphBuilder, weights: Weights, batch: number, hooks: SublayerHooks, provided?: Record<string, Value>): { out: Value; inputs: Record<string, Value> };
}

/** A graph input, unless the caller already has the value. */
function inputOrProvided(b: GraphBuilder, provided: Record<string, Value> | undefined) {
  return (name: string, dtype: DType, shape: number[]): Value => {
    const v = provided?.[name];
    if (!v) return b.input(name, dtype, shape);
    if (v.dtype !== dtype || v.shape.length !== shape.length || v.shape.some((d, i) => d !== shape[i])) {
      throw new HarmonicaError('BAD_INPUT', `provided ${name} is ${v.dtype}[${v.shape}], the model needs ${dtype}[${shape}]`);
    }
    return v;
  };
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
    build(b, weights, batch, hooks, provided) {
      const input = inputOrProvided(b, provided);
      const inputs = {
        x: input('x', 'float32', [batch, cfg.inChannels, cfg.inputSize, cfg.inputSize]),
        t: input('t', 'float32', [batch]),
        y: input('y', 'int64', [batch]),
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
    build(b, weights, batch, hooks, provided) {
      const input = inputOrProvided(b, provided);
      const io: PixArtInputs = {
        x: input('x', 'float32', [batch, cfg.inChannels, cfg.sampleSize, cfg.sampleSize]),
        t: input('t', 'float32', [batch]),
        encoderHiddenStates: input('encoder_hidden_states', 'float32', [batch, cfg.maxTokens, cfg.captionChannels]),
        encoderAttentionMask: input('encoder_attention_mask', 'float32', [batch, cfg.maxTokens]),
      };
      const inputs: Record<string, Value> = { x: io.x, t: io.t, encoder_hidden_states: io.encoderHiddenStates, encoder_attention_mask: io.encoderAttentionMask };
      if (cfg.useAdditionalConditions) {
        inputs.resolution = io.resolution = input('resolution', 'float32', [batch, 2]);
        inputs.aspect_ratio = io.aspectRatio = input('aspect_ratio', 'float32', [batch, 1]);
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
