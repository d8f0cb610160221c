import type { GraphBuilder } from '../onnx/builder.js';
import type { Value } from '../onnx/ir.js';
import { HarmonicaError } from '../util/errors.js';
import { patchify, sincos2d, TIMESTEP_FEATURES, timestepFeatures, unpatchify } from './embeddings.js';
import { ADALN_NORM_EPS, attention, linear, mlp, modulate, type AttentionParams, type LinearParams, type MlpParams } from './layers.js';
import { macs, type SlotInfo, type SublayerHooks } from './sublayer.js';
import { loadLinear, loadLinearChunks, loadParam, loadPatchEmbedding, type Weights } from './weights.js';

/**
 * DiT (Peebles & Xie, 2023): class-conditional adaLN-Zero transformer over image patches.
 * Weights are read in the diffusers `DiTTransformer2DModel` layout; the original
 * facebookresearch state dict is mapped onto it in checkpoints/dit.ts.
 */
export interface DitConfig {
  /** Side of the (latent) image. */
  inputSize: number;
  patchSize: number;
  inChannels: number;
  hidden: number;
  depth: number;
  heads: number;
  mlpRatio: number;
  numClasses: number;
  /** Output has 2x channels: epsilon and the learned variance interpolation. */
  learnSigma: boolean;
  /**
   * Timestep frequency exponent divisor is `half - freqShift`: 0 as in the original DiT (the
   * weights were trained with it), 1 as in diffusers' port (`downscale_freq_shift=1`).
   */
  freqShift: 0 | 1;
  /** Eps of the LayerNorm before the MLP: 1e-6 in the original, `norm_eps` (1e-5) in diffusers. */
  mlpNormEps: number;
}

/** DiT-XL/2 at 256px (latent 32x32x4), the model of the HarmoniCa paper's headline table. */
export const DIT_XL_2: DitConfig = {
  inputSize: 32, patchSize: 2, inChannels: 4, hidden: 1152, depth: 28, heads: 16, mlpRatio: 4,
  numClasses: 1000, learnSigma: true, freqShift: 0, mlpNormEps: 1e-6,
};

export function validateDitConfig(cfg: DitConfig): DitConfig {
  const problems: string[] = [];
  if (cfg.inputSize % cfg.patchSize !== 0) problems.push(`inputSize ${cfg.inputSize} not divisible by patchSize ${cfg.patchSize}`);
  if (cfg.hidden % cfg.heads !== 0) problems.push(`hidden ${cfg.hidden} not divisible by heads ${cfg.heads}`);
  if (cfg.hidden % 4 !== 0) problems.push(`hidden ${cfg.hidden} must be divisible by 4 (2-D position embedding)`);
  for (const k of ['inputSize', 'patchSize', 'inChannels', 'hidden', 'depth', 'heads', 'mlpRatio', 'numClasses'] as const) {
    if (!Number.isInteger(cfg[k]) || cfg[k] < 1) problems.push(`${k} must be a positive integer, got ${cfg[k]}`);
  }
  if (problems.length) throw new HarmonicaError('BAD_CONFIG', `invalid DiT config: ${problems.join('; ')}`);
  return cfg;
}

export const ditOutChannels = (cfg: DitConfig) => (cfg.learnSigma ? 2 * cfg.inChannels : cfg.inChannels);
const gridSide = (cfg: DitConfig) => cfg.inputSize / cfg.patchSize;
const tokenCount = (cfg: DitConfig) => gridSide(cfg) ** 2;

/**
 * Gated sublayers in router order: entry 2i = block i attention, 2i+1 = block i MLP. A
 * sublayer's MACs include its shift/scale modulation, which is computed only with it.
 */
export function ditSlots(cfg: DitConfig): SlotInfo[] {
  const t = tokenCount(cfg);
  const d = cfg.hidden;
  const modulation = macs.linear(1, d, 2 * d);
  return Array.from({ length: cfg.depth }, (_, i) => [
    { name: `blocks.${i}.attn`, block: i, kind: 'attn' as const, macs: macs.selfAttention(t, d) + modulation },
    { name: `blocks.${i}.mlp`, block: i, kind: 'mlp' as const, macs: macs.mlp(t, d, cfg.mlpRatio * d) + modulation },
  ]).flat();
}

/** MACs per sample outside the gated sublayers (embeddings, gates, final layer). */
export function ditOtherMacs(cfg: DitConfig): number {
  const t = tokenCount(cfg);
  const d = cfg.hidden;
  const p = cfg.patchSize;
  return macs.linear(t, cfg.inChannels * p * p, d) + macs.linear(1, TIMESTEP_FEATURES, d) + macs.linear(1, d, d)
    + cfg.depth * macs.linear(1, d, 2 * d) + macs.linear(1, d, 2 * d) + macs.linear(t, d, p * p * ditOutChannels(cfg));
}

interface BlockParams {
  embedder: { timestep1: LinearParams; timestep2: LinearParams; classTable: Value };
  /** adaLN-Zero's SiLU(c) -> 6D projection, by chunk: [shift, scale] and gate, for attention then MLP. */
  modulation: { msa: LinearParams; gateMsa: LinearParams; mlp: LinearParams; gateMlp: LinearParams };
  attn: AttentionParams;
  mlp: MlpParams;
}

const blockKey = (i: number) => `transformer_blocks.${i}`;

function loadBlock(b: GraphBuilder, w: Weights, cfg: DitConfig, i: number, embedderCache: Map<unknown, BlockParams['embedder']>): BlockParams {
  const d = cfg.hidden;
  const k = blockKey(i);
  const emb = `${k}.norm1.emb`;
  // Original checkpoints share one embedder; the converter maps every block to the same
  // tensors, and sharing them here keeps one copy in the graph.
  const identity = w.identity(`${emb}.timestep_embedder.linear_1.weight`);
  let embedder = embedderCache.get(identity);
  if (!embedder) {
    embedder = {
      timestep1: loadLinear(b, w, `${emb}.timestep_embedder.linear_1`, TIMESTEP_FEATURES, d),
      timestep2: loadLinear(b, w, `${emb}.timestep_embedder.linear_2`, d, d),
      classTable: loadParam(b, w, `${emb}.class_embedder.embedding_table.weight`, [cfg.numClasses + 1, d]),
    };
    embedderCache.set(identity, embedder);
  }
  const lin = (name: string, i2: number, o: number) => loadLinear(b, w, `${k}.${name}`, i2, o);
  return {
    embedder,
    modulation: loadModulation(b, w, `${k}.norm1.linear`, d),
    attn: { q: lin('attn1.to_q', d, d), k: lin('attn1.to_k', d, d), v: lin('attn1.to_v', d, d), out: lin('attn1.to_out.0', d, d) },
    mlp: { fc1: lin('ff.net.0.proj', d, cfg.mlpRatio * d), fc2: lin('ff.net.2', cfg.mlpRatio * d, d) },
  };
}

/** adaLN-Zero's chunks [shift, scale, gate] x [msa, mlp] as separate projections (a reused sublayer needs only its gate). */
function loadModulation(b: GraphBuilder, w: Weights, prefix: string, d: number): BlockParams['modulation'] {
  const [msa, gateMsa, mlp, gateMlp] = loadLinearChunks(b, w, prefix, d, 6 * d, [[0, 2 * d], [2 * d, 3 * d], [3 * d, 5 * d], [5 * d, 6 * d]]) as [LinearParams, LinearParams, LinearParams, LinearParams];
  return { msa, gateMsa, mlp, gateMlp };
}

/** c = timestep embedding + class embedding, [B, D]. */
function conditioning(b: GraphBuilder, e: BlockParams['embedder'], tFeatures: Value, y: Value): Value {
  const tEmb = linear(b, b.silu(linear(b, tFeatures, e.timestep1)), e.timestep2);
  return b.add(tEmb, b.gather(e.classTable, y));
}

export interface DitInputs {
  /** [B, C, H, W] */
  x: Value;
  /** [B] float32 or int64 timesteps in [0, 1000) */
  t: Value;
  /** [B] int64 class labels; `numClasses` is the null class of classifier-free guidance */
  y: Value;
}

/** Builds the DiT forward pass; returns the raw model output [B, C_out, H, W]. */
export function buildDit(b: GraphBuilder, w: Weights, cfg: DitConfig, io: DitInputs, hooks: SublayerHooks): Value {
  validateDitConfig(cfg);
  const { x, t, y } = io;
  const d = cfg.hidden;
  const p = cfg.patchSize;
  const grid = gridSide(cfg);
  const expected = [x.shape[0]!, cfg.inChannels, cfg.inputSize, cfg.inputSize];
  if (x.shape.some((dim, i) => dim !== expected[i])) {
    throw new HarmonicaError('BAD_INPUT', `DiT input x must be [${expected}], got [${x.shape}]`);
  }

  const embedderCache = new Map<unknown, BlockParams['embedder']>();
  const blocks = Array.from({ length: cfg.depth }, (_, i) => b.scope(`blocks.${i}`, () => loadBlock(b, w, cfg, i, embedderCache)));
  const patch = loadPatchEmbedding(b, w, 'pos_embed.proj', cfg.inChannels, p, d);
  let h = b.scope('patch_embed', () =>
    b.add(linear(b, patchify(b, x, p), patch), b.constant(sincos2d(d, grid, grid), 'pos_embed')));

  const tFeatures = b.scope('timestep', () => timestepFeatures(b, t, TIMESTEP_FEATURES, cfg.freqShift));
  const conds = new Map<BlockParams['embedder'], Value>();
  const condOf = (e: BlockParams['embedder']) => {
    let c = conds.get(e);
    if (!c) conds.set(e, (c = b.scope('conditioning', () => conditioning(b, e, tFeatures, y))));
    return c;
  };

  const slots = ditSlots(cfg);
  blocks.forEach((params, i) => b.scope(`blocks.${i}`, () => {
    // adaLN-Zero modulation, chunks [shift, scale, gate] x [msa, mlp]. Only the gates are
    // needed when a sublayer is reused; shift and scale are computed inside the sublayer.
    const c = b.silu(condOf(params.embedder));
    const m = params.modulation;
    const gateMsa = b.unsqueeze(linear(b, c, m.gateMsa), [1]);
    const gateMlp = b.unsqueeze(linear(b, c, m.gateMlp), [1]);
    const blockInput = h;
    const attnInput = (bb: GraphBuilder) => {
      const [shift, scale] = bb.split(linear(bb, c, m.msa), [d, d], 1) as [Value, Value];
      return modulate(bb, bb.layerNorm(blockInput, null, null, { epsilon: ADALN_NORM_EPS }), shift, scale);
    };
    let probedInput: Value | undefined;
    if (i === 0) hooks.probe('firstBlock.modulatedInput', (probedInput = attnInput(b)));
    h = hooks.gated(slots[2 * i]!, h, gateMsa, (bb) =>
      bb.scope('attn', () => {
        const input = probedInput ?? attnInput(bb);
        return attention(bb, input, input, params.attn, cfg.heads);
      }));
    const afterAttn = h;
    h = hooks.gated(slots[2 * i + 1]!, h, gateMlp, (bb) =>
      bb.scope('mlp', () => {
        const [shift, scale] = bb.split(linear(bb, c, m.mlp), [d, d], 1) as [Value, Value];
        return mlp(bb, modulate(bb, bb.layerNorm(afterAttn, null, null, { epsilon: cfg.mlpNormEps }), shift, scale), params.mlp);
      }));
    if (i === 0) hooks.probe('firstBlock.residual', b.sub(h, blockInput));
  }));

  return b.scope('final', () => {
    const finalMod = loadLinear(b, w, 'proj_out_1', d, 2 * d);
    const out = loadLinear(b, w, 'proj_out_2', d, p * p * ditOutChannels(cfg));
    const [shift, scale] = b.split(linear(b, b.silu(condOf(blocks[0]!.embedder)), finalMod), [d, d], 1) as [Value, Value];
    const tokens = linear(b, modulate(b, b.layerNorm(h, null, null, { epsilon: ADALN_NORM_EPS }), shift, scale), out);
    return unpatchify(b, tokens, p, ditOutChannels(cfg), grid, grid);
  });
}
