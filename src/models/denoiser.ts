import type { GraphBuilder } from '../onnx/builder.js';
import type { Value } from '../onnx/ir.js';
import { HarmonicaError } from '../util/errors.js';
import { buildDit, ditOtherMacs, ditOutChannels, ditSlots, validateDitConfig, type DitConfig } from './dit.js';
import type { SlotInfo, SublayerHooks } from './sublayer.js';
import type { Weights } from './weights.js';

/** What the executor, the samplers and the engine need to know about a denoising model. */
export interface Denoiser {
  family: 'dit' | 'pixart';
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

export function createDenoiser(family: string, config: unknown): Denoiser {
  switch (family) {
    case 'dit': return ditDenoiser(config as DitConfig);
    default: throw new HarmonicaError('BAD_CONFIG', `unknown model family "${family}" (known: dit)`);
  }
}
