import type { HostTensor } from '../../tensor/tensor.js';
import { tensor } from '../../tensor/tensor.js';
import { HarmonicaError } from '../../util/errors.js';
import type { DitConfig } from '../dit.js';
import { sincos2d } from '../embeddings.js';

/**
 * Key names of the original facebookresearch DiT state dict, mapped onto the diffusers
 * `DiTTransformer2DModel` layout that the builder reads. Tensors are shared, not copied:
 * the single timestep/class embedder of the original becomes every block's embedder.
 */
const BLOCK_RENAMES: [string, string][] = [
  ['attn.proj', 'attn1.to_out.0'],
  ['mlp.fc1', 'ff.net.0.proj'],
  ['mlp.fc2', 'ff.net.2'],
  ['adaLN_modulation.1', 'norm1.linear'],
];

const TOP_RENAMES: [string, string][] = [
  ['x_embedder.proj', 'pos_embed.proj'],
  ['final_layer.adaLN_modulation.1', 'proj_out_1'],
  ['final_layer.linear', 'proj_out_2'],
];

const EMBEDDER_RENAMES: [string, string][] = [
  ['t_embedder.mlp.0', 'norm1.emb.timestep_embedder.linear_1'],
  ['t_embedder.mlp.2', 'norm1.emb.timestep_embedder.linear_2'],
  ['y_embedder.embedding_table', 'norm1.emb.class_embedder.embedding_table'],
];

/** Rows [from, to) of a 2-D (or 1-D) tensor, sharing nothing with the source. */
function rows(t: HostTensor, from: number, to: number): HostTensor {
  const width = t.shape.length === 2 ? t.shape[1]! : 1;
  const data = (t.data as Float32Array).slice(from * width, to * width);
  return tensor(t.dtype, t.shape.length === 2 ? [to - from, width] : [to - from], data);
}

/** True when the keys look like the original DiT state dict. */
export function isOriginalDitLayout(names: Iterable<string>): boolean {
  for (const n of names) if (n.startsWith('x_embedder.') || n.startsWith('blocks.0.attn.qkv')) return true;
  return false;
}

export function originalDitToDiffusers(src: Map<string, HostTensor>, cfg: DitConfig): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  const take = (name: string): HostTensor => {
    const t = src.get(name);
    if (!t) throw new HarmonicaError('MISSING_WEIGHT', `original DiT checkpoint: missing weight "${name}"`);
    return t;
  };
  for (const suffix of ['weight', 'bias']) {
    for (const [from, to] of TOP_RENAMES) out.set(`${to}.${suffix}`, take(`${from}.${suffix}`));
    for (let i = 0; i < cfg.depth; i++) {
      const block = `transformer_blocks.${i}`;
      for (const [from, to] of BLOCK_RENAMES) out.set(`${block}.${to}.${suffix}`, take(`blocks.${i}.${from}.${suffix}`));
      for (const [from, to] of EMBEDDER_RENAMES) {
        if (from.startsWith('y_') && suffix === 'bias') continue;
        out.set(`${block}.${to}.${suffix}`, take(`${from}.${suffix}`));
      }
      // timm's fused qkv: rows [q; k; v].
      const qkv = take(`blocks.${i}.attn.qkv.${suffix}`);
      const d = cfg.hidden;
      if (qkv.shape[0] !== 3 * d) throw new HarmonicaError('WEIGHT_SHAPE', `original DiT checkpoint: "blocks.${i}.attn.qkv.${suffix}" has ${qkv.shape[0]} rows, expected ${3 * d}`);
      ['to_q', 'to_k', 'to_v'].forEach((name, j) => out.set(`${block}.attn1.${name}.${suffix}`, rows(qkv, j * d, (j + 1) * d)));
    }
  }
  return out;
}

/**
 * The inverse: a diffusers-layout DiT as the original state dict (fused qkv, one embedder,
 * the fixed position embedding), e.g. to write random checkpoints in the original layout.
 */
export function diffusersDitToOriginal(src: Map<string, HostTensor>, cfg: DitConfig): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  const take = (name: string): HostTensor => {
    const t = src.get(name);
    if (!t) throw new HarmonicaError('MISSING_WEIGHT', `diffusers DiT checkpoint: missing weight "${name}"`);
    return t;
  };
  const grid = cfg.inputSize / cfg.patchSize;
  out.set('pos_embed', { ...sincos2d(cfg.hidden, grid, grid), shape: [1, grid * grid, cfg.hidden] });
  for (const suffix of ['weight', 'bias']) {
    for (const [from, to] of TOP_RENAMES) out.set(`${from}.${suffix}`, take(`${to}.${suffix}`));
    for (const [from, to] of EMBEDDER_RENAMES) {
      if (!(from.startsWith('y_') && suffix === 'bias')) out.set(`${from}.${suffix}`, take(`transformer_blocks.0.${to}.${suffix}`));
    }
    for (let i = 0; i < cfg.depth; i++) {
      const block = `transformer_blocks.${i}`;
      for (const [from, to] of BLOCK_RENAMES) out.set(`blocks.${i}.${from}.${suffix}`, take(`${block}.${to}.${suffix}`));
      const [q, k, v] = ['to_q', 'to_k', 'to_v'].map((n) => take(`${block}.attn1.${n}.${suffix}`));
      const data = new Float32Array(3 * q!.data.length);
      [q, k, v].forEach((t, j) => data.set(t!.data as Float32Array, j * q!.data.length));
      out.set(`blocks.${i}.attn.qkv.${suffix}`, tensor('float32', [3 * cfg.hidden, ...q!.shape.slice(1)], data));
    }
  }
  return out;
}

/** The fixed position embedding of the original state dict is recomputed, not loaded. */
export const ORIGINAL_DIT_IGNORED = ['pos_embed'];
