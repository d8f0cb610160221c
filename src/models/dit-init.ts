import { Rng } from '../tensor/rng.js';
import { tensor, type HostTensor } from '../tensor/tensor.js';
import type { DitConfig } from './dit.js';
import { TIMESTEP_FEATURES } from './embeddings.js';

/**
 * Random DiT weights in the diffusers layout (one embedder shared by reference across
 * blocks, as converted original checkpoints are): for benchmarks and training from scratch.
 * Linear weights ~ N(0, std^2) with std = 1/sqrt(fan_in) * `scale`; biases zero. With
 * `adaLNZero` the modulation and output layers start at zero, as DiT trains them (every
 * block starts as the identity).
 */
export function initDitWeights(cfg: DitConfig, seed: number, scale = 1, adaLNZero = false): Map<string, HostTensor> {
  const rng = new Rng(seed);
  const d = cfg.hidden;
  const p = cfg.patchSize;
  const out = (cfg.learnSigma ? 2 : 1) * cfg.inChannels;
  const w = new Map<string, HostTensor>();
  const linear = (name: string, inF: number, outF: number, shape: number[] = [outF, inF]) => {
    const t = tensor('float32', shape);
    rng.fillNormal(t.data as Float32Array, 0, scale / Math.sqrt(inF));
    w.set(`${name}.weight`, t);
    w.set(`${name}.bias`, tensor('float32', [outF]));
    return [t, w.get(`${name}.bias`)!] as const;
  };
  linear('pos_embed.proj', cfg.inChannels * p * p, d, [d, cfg.inChannels, p, p]);
  const t1 = linear('shared.t1', TIMESTEP_FEATURES, d);
  const t2 = linear('shared.t2', d, d);
  const table = tensor('float32', [cfg.numClasses + 1, d]);
  rng.fillNormal(table.data as Float32Array, 0, scale);
  for (const k of ['shared.t1.weight', 'shared.t1.bias', 'shared.t2.weight', 'shared.t2.bias']) w.delete(k);
  for (let i = 0; i < cfg.depth; i++) {
    const k = `transformer_blocks.${i}`;
    const emb = `${k}.norm1.emb`;
    w.set(`${emb}.timestep_embedder.linear_1.weight`, t1[0]);
    w.set(`${emb}.timestep_embedder.linear_1.bias`, t1[1]);
    w.set(`${emb}.timestep_embedder.linear_2.weight`, t2[0]);
    w.set(`${emb}.timestep_embedder.linear_2.bias`, t2[1]);
    w.set(`${emb}.class_embedder.embedding_table.weight`, table);
    linear(`${k}.norm1.linear`, d, 6 * d);
    for (const n of ['to_q', 'to_k', 'to_v', 'to_out.0']) linear(`${k}.attn1.${n}`, d, d);
    linear(`${k}.ff.net.0.proj`, d, cfg.mlpRatio * d);
    linear(`${k}.ff.net.2`, cfg.mlpRatio * d, d);
  }
  linear('proj_out_1', d, 2 * d);
  linear('proj_out_2', d, p * p * out);
  if (adaLNZero) {
    for (const [name, t] of w) if (/norm1\.linear|proj_out_/.test(name)) (t.data as Float32Array).fill(0);
    (table.data as Float32Array).forEach((_, i, a) => (a[i] = a[i]! * 0.02));
  }
  return w;
}
