import { Rng } from '../tensor/rng.js';
import { tensor, type HostTensor } from '../tensor/tensor.js';
import type { T5Config } from './t5.js';

/** One weight of a random T5 encoder: N(mean, std^2). */
export interface T5WeightSpec {
  name: string;
  shape: number[];
  std: number;
  mean: number;
}

/** The weights of a T5 encoder in the transformers T5EncoderModel key layout, in drawing order. */
export function t5WeightSpecs(cfg: T5Config): T5WeightSpec[] {
  const specs: T5WeightSpec[] = [];
  const put = (name: string, shape: number[], std: number, mean = 0) => specs.push({ name, shape, std, mean });
  const inner = cfg.numHeads * cfg.dKv;
  put('shared.weight', [cfg.vocabSize, cfg.dModel], 1);
  put('encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight', [cfg.relativeAttentionNumBuckets, cfg.numHeads], 1);
  for (let i = 0; i < cfg.numLayers; i++) {
    const p = `encoder.block.${i}.layer`;
    for (const m of ['q', 'k', 'v']) put(`${p}.0.SelfAttention.${m}.weight`, [inner, cfg.dModel], 1 / Math.sqrt(cfg.dModel));
    put(`${p}.0.SelfAttention.o.weight`, [cfg.dModel, inner], 1 / Math.sqrt(inner));
    put(`${p}.0.layer_norm.weight`, [cfg.dModel], 0.1, 1);
    const ff = `${p}.1.DenseReluDense`;
    if (cfg.feedForwardProj === 'gated-gelu') {
      put(`${ff}.wi_0.weight`, [cfg.dFf, cfg.dModel], 1 / Math.sqrt(cfg.dModel));
      put(`${ff}.wi_1.weight`, [cfg.dFf, cfg.dModel], 1 / Math.sqrt(cfg.dModel));
    } else {
      put(`${ff}.wi.weight`, [cfg.dFf, cfg.dModel], 1 / Math.sqrt(cfg.dModel));
    }
    put(`${ff}.wo.weight`, [cfg.dModel, cfg.dFf], 1 / Math.sqrt(cfg.dFf));
    put(`${p}.1.layer_norm.weight`, [cfg.dModel], 0.1, 1);
  }
  put('encoder.final_layer_norm.weight', [cfg.dModel], 0.1, 1);
  return specs;
}

/** Draws one weight from `rng` (weights drawn in `t5WeightSpecs` order with one Rng are initT5Weights'). */
export function drawT5Weight(spec: T5WeightSpec, rng: Rng): HostTensor {
  const x = tensor('float32', spec.shape);
  rng.fillNormal(x.data as Float32Array, spec.mean, spec.std);
  return x;
}

/**
 * Random T5 encoder weights in the transformers T5EncoderModel key layout ([out, in]
 * linears): for tests and for training a small text encoder from scratch.
 */
export function initT5Weights(cfg: T5Config, seed: number): Map<string, HostTensor> {
  const rng = new Rng(seed);
  return new Map(t5WeightSpecs(cfg).map((s) => [s.name, drawT5Weight(s, rng)]));
}
