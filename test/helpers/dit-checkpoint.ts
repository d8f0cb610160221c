import type { DitConfig } from '../../src/models/dit.js';
import { sincos2d } from '../../src/models/embeddings.js';
import { Rng } from '../../src/tensor/rng.js';
import { tensor, type HostTensor } from '../../src/tensor/tensor.js';

/** DiT-XL/2's structure with tiny widths: 8x8x4 latent, patch 2 (16 tokens), 2 blocks. */
export const TINY_DIT: DitConfig = {
  inputSize: 8, patchSize: 2, inChannels: 4, hidden: 32, depth: 2, heads: 4, mlpRatio: 4,
  numClasses: 10, learnSigma: true, freqShift: 0, mlpNormEps: 1e-6,
};

/**
 * The same random weights in both real key layouts: facebookresearch DiT (`models.py`
 * state dict) and diffusers `DiTTransformer2DModel` (per-block copies of the embedders).
 */
export function randomDitCheckpoints(cfg: DitConfig, seed = 1, std = 0.2): { original: Map<string, HostTensor>; diffusers: Map<string, HostTensor> } {
  const rng = new Rng(seed);
  const d = cfg.hidden;
  const p = cfg.patchSize;
  const out = (cfg.learnSigma ? 2 : 1) * cfg.inChannels;
  const rand = (shape: number[]) => {
    const t = tensor('float32', shape);
    rng.fillNormal(t.data as Float32Array, 0, std);
    return t;
  };
  const original = new Map<string, HostTensor>();
  const diffusers = new Map<string, HostTensor>();
  const both = (o: string, df: string | string[], t: HostTensor) => {
    original.set(o, t);
    for (const name of [df].flat()) diffusers.set(name, t);
  };
  const blocks = (suffix: string) => Array.from({ length: cfg.depth }, (_, i) => `transformer_blocks.${i}.${suffix}`);
  both('x_embedder.proj.weight', 'pos_embed.proj.weight', rand([d, cfg.inChannels, p, p]));
  both('x_embedder.proj.bias', 'pos_embed.proj.bias', rand([d]));
  original.set('pos_embed', tensor('float32', [1, (cfg.inputSize / p) ** 2, d], sincos2d(d, cfg.inputSize / p, cfg.inputSize / p).data as Float32Array));
  both('t_embedder.mlp.0.weight', blocks('norm1.emb.timestep_embedder.linear_1.weight'), rand([d, 256]));
  both('t_embedder.mlp.0.bias', blocks('norm1.emb.timestep_embedder.linear_1.bias'), rand([d]));
  both('t_embedder.mlp.2.weight', blocks('norm1.emb.timestep_embedder.linear_2.weight'), rand([d, d]));
  both('t_embedder.mlp.2.bias', blocks('norm1.emb.timestep_embedder.linear_2.bias'), rand([d]));
  both('y_embedder.embedding_table.weight', blocks('norm1.emb.class_embedder.embedding_table.weight'), rand([cfg.numClasses + 1, d]));
  for (let i = 0; i < cfg.depth; i++) {
    const k = `transformer_blocks.${i}`;
    const q = rand([d, d]), kk = rand([d, d]), v = rand([d, d]);
    const qb = rand([d]), kb = rand([d]), vb = rand([d]);
    original.set(`blocks.${i}.attn.qkv.weight`, tensor('float32', [3 * d, d], Float32Array.from([...q.data as Float32Array, ...kk.data as Float32Array, ...v.data as Float32Array])));
    original.set(`blocks.${i}.attn.qkv.bias`, tensor('float32', [3 * d], Float32Array.from([...qb.data as Float32Array, ...kb.data as Float32Array, ...vb.data as Float32Array])));
    diffusers.set(`${k}.attn1.to_q.weight`, q);
    diffusers.set(`${k}.attn1.to_k.weight`, kk);
    diffusers.set(`${k}.attn1.to_v.weight`, v);
    diffusers.set(`${k}.attn1.to_q.bias`, qb);
    diffusers.set(`${k}.attn1.to_k.bias`, kb);
    diffusers.set(`${k}.attn1.to_v.bias`, vb);
    both(`blocks.${i}.attn.proj.weight`, `${k}.attn1.to_out.0.weight`, rand([d, d]));
    both(`blocks.${i}.attn.proj.bias`, `${k}.attn1.to_out.0.bias`, rand([d]));
    both(`blocks.${i}.mlp.fc1.weight`, `${k}.ff.net.0.proj.weight`, rand([cfg.mlpRatio * d, d]));
    both(`blocks.${i}.mlp.fc1.bias`, `${k}.ff.net.0.proj.bias`, rand([cfg.mlpRatio * d]));
    both(`blocks.${i}.mlp.fc2.weight`, `${k}.ff.net.2.weight`, rand([d, cfg.mlpRatio * d]));
    both(`blocks.${i}.mlp.fc2.bias`, `${k}.ff.net.2.bias`, rand([d]));
    both(`blocks.${i}.adaLN_modulation.1.weight`, `${k}.norm1.linear.weight`, rand([6 * d, d]));
    both(`blocks.${i}.adaLN_modulation.1.bias`, `${k}.norm1.linear.bias`, rand([6 * d]));
  }
  both('final_layer.adaLN_modulation.1.weight', 'proj_out_1.weight', rand([2 * d, d]));
  both('final_layer.adaLN_modulation.1.bias', 'proj_out_1.bias', rand([2 * d]));
  both('final_layer.linear.weight', 'proj_out_2.weight', rand([p * p * out, d]));
  both('final_layer.linear.bias', 'proj_out_2.bias', rand([p * p * out]));
  return { original, diffusers };
}
