import type { GraphBuilder } from '../onnx/builder.js';
import type { Value } from '../onnx/ir.js';

/** The sublayers a cache can skip: self-attention, cross-attention, MLP. */
export type SublayerKind = 'attn' | 'cross' | 'mlp';

/** One gated sublayer of a model: a column of the router's [T, S] logits. */
export interface SlotInfo {
  /** e.g. `blocks.3.attn` */
  name: string;
  block: number;
  kind: SublayerKind;
  /** Multiply-accumulates of one evaluation for one sample (analytic). */
  macs: number;
}

/**
 * How a model's residual sublayers run. Models call `gated` for every cacheable sublayer and
 * know nothing about caching: the plain forward computes everything; the cached executor
 * wraps `compute` in an `If`; router training mixes fresh and cached outputs.
 */
export interface SublayerHooks {
  /**
   * Returns x + gate * sublayer, where `compute` builds the raw sublayer output (before the
   * adaLN gate; caches store exactly that) in the builder it is given. `gate` is [B, 1, D]
   * or null (no gate).
   */
  gated(slot: SlotInfo, x: Value, gate: Value | null, compute: (b: GraphBuilder) => Value): Value;
  /** Named intermediate values that input-adaptive cache policies may read. */
  probe(name: string, value: Value): void;
}

export function plainHooks(b: GraphBuilder): SublayerHooks {
  return {
    gated: (_slot, x, gate, compute) => {
      const raw = compute(b);
      return b.add(x, gate ? b.mul(gate, raw) : raw);
    },
    probe: () => {},
  };
}

/** Analytic MACs per sample. */
export const macs = {
  linear: (tokens: number, inFeatures: number, outFeatures: number) => tokens * inFeatures * outFeatures,
  /** q/k/v/out projections plus the two attention products. */
  selfAttention: (tokens: number, width: number) => 4 * tokens * width * width + 2 * tokens * tokens * width,
  crossAttention: (tokens: number, width: number, contextTokens: number, contextWidth: number) =>
    2 * tokens * width * width + 2 * contextTokens * contextWidth * width + 2 * tokens * contextTokens * width,
  mlp: (tokens: number, width: number, hidden: number) => 2 * tokens * width * hidden,
};
