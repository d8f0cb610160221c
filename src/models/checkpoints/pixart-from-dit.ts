import { tensor, type HostTensor } from '../../tensor/tensor.js';
import { HarmonicaError } from '../../util/errors.js';
import type { DitConfig } from '../dit.js';
import { timestepFeatureValues } from '../embeddings.js';
import type { PixArtConfig } from '../pixart.js';
import { initPixArtWeights } from '../pixart-init.js';

/** Timesteps over which the per-layer tables are fitted: every tenth, mid-interval. */
export const DEFAULT_REFERENCE_TIMESTEPS: readonly number[] = Array.from({ length: 100 }, (_, i) => 10 * i + 5);

type W = Map<string, HostTensor>;

function get(w: W, key: string): Float32Array {
  const t = w.get(key);
  if (!t) throw new HarmonicaError('BAD_CONFIG', `DiT weights have no ${key}`);
  if (t.dtype !== 'float32') throw new HarmonicaError('BAD_CONFIG', `DiT weight ${key} must be float32, got ${t.dtype}`);
  return t.data as Float32Array;
}

/** y = W x + b for a diffusers Linear (weight [out, in]). */
function linear(w: W, name: string, x: Float64Array): Float64Array {
  const weight = get(w, `${name}.weight`);
  const bias = get(w, `${name}.bias`);
  const out = new Float64Array(bias.length);
  for (let o = 0; o < out.length; o++) {
    let s = bias[o]!;
    for (let i = 0; i < x.length; i++) s += weight[o * x.length + i]! * x[i]!;
    out[o] = s;
  }
  return out;
}

const silu = (x: Float64Array) => x.map((v) => v / (1 + Math.exp(-v)));

function checkCompatible(dit: DitConfig, pixart: PixArtConfig): void {
  const pairs: [string, unknown, unknown][] = [
    ['hidden', dit.hidden, pixart.hidden], ['depth', dit.depth, pixart.depth], ['heads', dit.heads, pixart.heads],
    ['mlpRatio', dit.mlpRatio, pixart.mlpRatio], ['patchSize', dit.patchSize, pixart.patchSize],
    ['inChannels', dit.inChannels, pixart.inChannels], ['inputSize/sampleSize', dit.inputSize, pixart.sampleSize],
    ['output channels', dit.learnSigma ? 2 * dit.inChannels : dit.inChannels, pixart.outChannels],
    ['timestep frequency shift', dit.freqShift, 0], ['MLP norm eps', dit.mlpNormEps, pixart.normEps],
  ];
  const bad = pairs.filter(([, a, b]) => a !== b).map(([k, a, b]) => `${k} ${a} vs ${b}`);
  if (bad.length) throw new HarmonicaError('BAD_CONFIG', `cannot start this PixArt from that DiT: ${bad.join(', ')}`);
}

/**
 * PixArt-alpha weights that start from a trained class-conditional DiT, as PixArt-alpha
 * itself is trained (its first stage, "pixel dependency", is an ImageNet DiT): patch
 * embedding, self-attention, MLPs and output projection are the DiT's; adaLN-single is
 * re-parameterised from the DiT's per-block adaLN (null class): its embedding and shared
 * linear are block 0's, and each per-layer table is the mean, over `timesteps`, of what that
 * layer's own adaLN differs from the shared one (the least-squares constant; exact for block
 * 0, and for all blocks when `timesteps` is one step). The text path (caption projection,
 * cross-attention with a zero output) starts fresh, so with a single reference timestep the
 * converted model computes the DiT's unconditional prediction there (tested).
 *
 * Both weight maps are in the diffusers layout, float32.
 */
export function pixartFromDit(ditWeights: W, dit: DitConfig, pixart: PixArtConfig, seed: number, timesteps: readonly number[] = DEFAULT_REFERENCE_TIMESTEPS): W {
  checkCompatible(dit, pixart);
  const d = pixart.hidden;
  const out = initPixArtWeights(pixart, seed, 1, true);
  const copy = (from: string, to: string) => {
    const src = get(ditWeights, from);
    const dst = out.get(to)!;
    if (dst.data.length !== src.length) throw new HarmonicaError('BAD_CONFIG', `DiT ${from} has ${src.length} values, PixArt ${to} needs ${dst.data.length}`);
    out.set(to, tensor('float32', [...dst.shape], Float32Array.from(src)));
  };
  for (const p of ['weight', 'bias']) {
    copy(`pos_embed.proj.${p}`, `pos_embed.proj.${p}`);
    copy(`proj_out_2.${p}`, `proj_out.${p}`);
    for (let i = 0; i < pixart.depth; i++) {
      const k = `transformer_blocks.${i}`;
      for (const n of ['attn1.to_q', 'attn1.to_k', 'attn1.to_v', 'attn1.to_out.0', 'ff.net.0.proj', 'ff.net.2']) copy(`${k}.${n}.${p}`, `${k}.${n}.${p}`);
    }
  }

  // The DiT's conditioning of block i: c_i(t) = timestep MLP_i(t) + class_i[null].
  const nullClass = dit.numClasses;
  const embedder = (i: number) => `transformer_blocks.${i}.norm1.emb`;
  const classRow = (i: number) => get(ditWeights, `${embedder(i)}.class_embedder.embedding_table.weight`).subarray(nullClass * d, (nullClass + 1) * d);
  const condition = (i: number, t: number) => {
    const e = embedder(i);
    const temb = linear(ditWeights, `${e}.timestep_embedder.linear_2`, silu(linear(ditWeights, `${e}.timestep_embedder.linear_1`, timestepFeatureValues(t))));
    const row = classRow(i);
    return temb.map((v, k) => v + row[k]!);
  };
  // adaLN-single's embedding is block 0's conditioning (the null class folded into the bias),
  // its shared linear block 0's adaLN linear.
  for (const n of ['linear_1.weight', 'linear_1.bias', 'linear_2.weight']) copy(`${embedder(0)}.timestep_embedder.${n}`, `adaln_single.emb.timestep_embedder.${n}`);
  const bias2 = get(ditWeights, `${embedder(0)}.timestep_embedder.linear_2.bias`);
  const nullRow = classRow(0);
  out.set('adaln_single.emb.timestep_embedder.linear_2.bias', tensor('float32', [d], bias2.map((v, k) => v + nullRow[k]!)));
  copy('transformer_blocks.0.norm1.linear.weight', 'adaln_single.linear.weight');
  copy('transformer_blocks.0.norm1.linear.bias', 'adaln_single.linear.bias');
  // Block 0's conditioning and (shared) modulation at each fitting timestep, computed once.
  const c0 = timesteps.map((t) => condition(0, t));
  const shared = c0.map((c) => linear(ditWeights, 'transformer_blocks.0.norm1.linear', silu(c)));
  const meanOver = (size: number, f: (t: number, j: number) => Float64Array) => {
    const sum = new Float64Array(size);
    timesteps.forEach((t, j) => f(t, j).forEach((v, k) => (sum[k] = sum[k]! + v / timesteps.length)));
    return Float32Array.from(sum);
  };
  // Each block's table: the mean of what its own adaLN differs from the shared one.
  for (let i = 0; i < pixart.depth; i++) {
    const table = meanOver(6 * d, (t, j) =>
      linear(ditWeights, `transformer_blocks.${i}.norm1.linear`, silu(condition(i, t))).map((v, k) => v - shared[j]![k]!));
    out.set(`transformer_blocks.${i}.scale_shift_table`, tensor('float32', [6, d], table));
  }
  // The final layer modulates with the embedding itself: shift = T0 + c0, scale = T1 + c0.
  const finalTable = meanOver(2 * d, (_, j) => linear(ditWeights, 'proj_out_1', silu(c0[j]!)).map((v, k) => v - c0[j]![k % d]!));
  out.set('scale_shift_table', tensor('float32', [2, d], finalTable));
  return out;
}
