import { Rng } from '../tensor/rng.js';
import { tensor, type HostTensor } from '../tensor/tensor.js';
import { TIMESTEP_FEATURES } from './embeddings.js';
import type { PixArtConfig } from './pixart.js';

/**
 * Random PixArt-alpha weights in the diffusers `PixArtTransformer2DModel` layout: for
 * benchmarks and training from scratch. Linear weights ~ N(0, std^2) with
 * std = 1/sqrt(fan_in) * `scale`, biases zero; the scale-shift tables ~ N(0, 1/D) * `scale`
 * as diffusers initialises them. Nothing is zeroed, so every sublayer contributes, unless
 * `zeroOutputs`: then the output projection and every cross-attention output start at zero,
 * as PixArt-alpha trains from scratch (the model starts by predicting zero noise).
 */
export function initPixArtWeights(cfg: PixArtConfig, seed: number, scale = 1, zeroOutputs = false): Map<string, HostTensor> {
  const rng = new Rng(seed);
  const d = cfg.hidden;
  const p = cfg.patchSize;
  const w = new Map<string, HostTensor>();
  const normal = (name: string, shape: number[], std: number) => {
    const t = tensor('float32', shape);
    rng.fillNormal(t.data as Float32Array, 0, std);
    w.set(name, t);
  };
  const linear = (name: string, inF: number, outF: number, shape: number[] = [outF, inF]) => {
    normal(`${name}.weight`, shape, scale / Math.sqrt(inF));
    w.set(`${name}.bias`, tensor('float32', [outF]));
  };
  const embedder = (name: string, width: number) => {
    linear(`${name}.linear_1`, TIMESTEP_FEATURES, width);
    linear(`${name}.linear_2`, width, width);
  };
  linear('pos_embed.proj', cfg.inChannels * p * p, d, [d, cfg.inChannels, p, p]);
  embedder('adaln_single.emb.timestep_embedder', d);
  if (cfg.useAdditionalConditions) {
    embedder('adaln_single.emb.resolution_embedder', d / 3);
    embedder('adaln_single.emb.aspect_ratio_embedder', d / 3);
  }
  linear('adaln_single.linear', d, 6 * d);
  linear('caption_projection.linear_1', cfg.captionChannels, d);
  linear('caption_projection.linear_2', d, d);
  for (let i = 0; i < cfg.depth; i++) {
    const k = `transformer_blocks.${i}`;
    normal(`${k}.scale_shift_table`, [6, d], scale / Math.sqrt(d));
    for (const attn of ['attn1', 'attn2']) for (const n of ['to_q', 'to_k', 'to_v', 'to_out.0']) linear(`${k}.${attn}.${n}`, d, d);
    linear(`${k}.ff.net.0.proj`, d, cfg.mlpRatio * d);
    linear(`${k}.ff.net.2`, cfg.mlpRatio * d, d);
  }
  normal('scale_shift_table', [2, d], scale / Math.sqrt(d));
  linear('proj_out', d, p * p * cfg.outChannels);
  if (zeroOutputs) {
    for (const [name, t] of w) if (/^proj_out\.|attn2\.to_out\.0\./.test(name)) (t.data as Float32Array).fill(0);
  }
  return w;
}
