import type { GraphBuilder } from '../onnx/builder.js';
import type { Value } from '../onnx/ir.js';
import { HarmonicaError } from '../util/errors.js';
import { patchify, sincos2d, TIMESTEP_FEATURES, timestepFeatures, unpatchify } from './embeddings.js';
import { attention, linear, mlp, modulate, type AttentionParams, type LinearParams, type MlpParams } from './layers.js';
import { macs, type SlotInfo, type SublayerHooks } from './sublayer.js';
import { loadLinear, loadParam, loadPatchEmbedding, type Weights } from './weights.js';

/**
 * PixArt-alpha (Chen et al., 2023): a DiT conditioned on T5 text through cross-attention,
 * with adaLN-single (one timestep modulation shared by all blocks, plus a learned table per
 * block). Weights are read in the diffusers `PixArtTransformer2DModel` layout.
 */
export interface PixArtConfig {
  /** Side of the latent image (diffusers `sample_size`): 32 at 256px, 128 at 1024px. */
  sampleSize: number;
  patchSize: number;
  inChannels: number;
  /** 2x inChannels with learned sigma (epsilon and the variance interpolation). */
  outChannels: number;
  hidden: number;
  depth: number;
  heads: number;
  mlpRatio: number;
  /** Width of the text encoder's embeddings (T5-XXL d_model = 4096). */
  captionChannels: number;
  /** Caption length the graph is built for (padded T5 tokens). */
  maxTokens: number;
  /** Position embedding scale for resolutions other than the base one. */
  interpolationScale: number;
  /** Resolution and aspect-ratio micro-conditions (the 1024px model). */
  useAdditionalConditions: boolean;
  /** Eps of the affine-free LayerNorms inside the blocks. */
  normEps: number;
}

/** PixArt-alpha pads and truncates captions to 120 T5 tokens. */
export const PIXART_MAX_TOKENS = 120;

const XL_2 = {
  patchSize: 2, inChannels: 4, outChannels: 8, hidden: 1152, depth: 28, heads: 16, mlpRatio: 4,
  captionChannels: 4096, maxTokens: PIXART_MAX_TOKENS, normEps: 1e-6,
};
/** PixArt-XL-2-256x256, the model of the HarmoniCa paper's PixArt table. */
export const PIXART_XL_2_256: PixArtConfig = { ...XL_2, sampleSize: 32, interpolationScale: 1, useAdditionalConditions: false };
export const PIXART_XL_2_1024: PixArtConfig = { ...XL_2, sampleSize: 128, interpolationScale: 2, useAdditionalConditions: true };

export function validatePixArtConfig(cfg: PixArtConfig): PixArtConfig {
  const problems: string[] = [];
  for (const k of ['sampleSize', 'patchSize', 'inChannels', 'outChannels', 'hidden', 'depth', 'heads', 'mlpRatio', 'captionChannels', 'maxTokens'] as const) {
    if (!Number.isInteger(cfg[k]) || cfg[k] < 1) problems.push(`${k} must be a positive integer, got ${cfg[k]}`);
  }
  if (cfg.sampleSize % cfg.patchSize !== 0) problems.push(`sampleSize ${cfg.sampleSize} not divisible by patchSize ${cfg.patchSize}`);
  if (cfg.hidden % cfg.heads !== 0) problems.push(`hidden ${cfg.hidden} not divisible by heads ${cfg.heads}`);
  if (cfg.hidden % 4 !== 0) problems.push(`hidden ${cfg.hidden} must be divisible by 4 (2-D position embedding)`);
  // Resolution (2 scalars) and aspect ratio (1) are embedded at width hidden/3 each.
  if (cfg.useAdditionalConditions && cfg.hidden % 3 !== 0) problems.push(`hidden ${cfg.hidden} must be divisible by 3 with additional conditions`);
  if (!(cfg.interpolationScale > 0)) problems.push(`interpolationScale must be positive, got ${cfg.interpolationScale}`);
  if (!(cfg.normEps > 0)) problems.push(`normEps must be positive, got ${cfg.normEps}`);
  if (typeof cfg.useAdditionalConditions !== 'boolean') problems.push('useAdditionalConditions must be a boolean');
  if (problems.length) throw new HarmonicaError('BAD_CONFIG', `invalid PixArt config: ${problems.join('; ')}`);
  return cfg;
}

/**
 * Reads a diffusers `PixArtTransformer2DModel` config.json, with diffusers' defaults for
 * missing keys. The caption length is not part of it.
 */
export function pixartConfigFromDiffusers(json: Record<string, unknown>, maxTokens = PIXART_MAX_TOKENS): PixArtConfig {
  const bad = (msg: string) => new HarmonicaError('BAD_CONFIG', `PixArt config.json: ${msg}`);
  const num = (key: string, fallback?: number): number => {
    const v = json[key] ?? fallback;
    if (typeof v !== 'number') throw bad(v === undefined ? `missing "${key}"` : `"${key}" must be a number, got ${JSON.stringify(v)}`);
    return v;
  };
  // Variants this builder does not implement must fail loudly rather than load wrongly.
  const only = (key: string, supported: unknown) => {
    if (json[key] !== undefined && json[key] !== supported) throw bad(`unsupported ${key} ${JSON.stringify(json[key])} (expected ${JSON.stringify(supported)})`);
  };
  only('norm_type', 'ada_norm_single');
  only('norm_elementwise_affine', false);
  only('activation_fn', 'gelu-approximate');
  only('attention_bias', true);
  const sampleSize = num('sample_size');
  const inChannels = num('in_channels');
  const heads = num('num_attention_heads', 16);
  const hidden = heads * num('attention_head_dim', 72);
  // The caption is projected to the model width before cross-attention.
  only('cross_attention_dim', hidden);
  const extra = json.use_additional_conditions;
  if (extra != null && typeof extra !== 'boolean') throw bad(`"use_additional_conditions" must be a boolean, got ${JSON.stringify(extra)}`);
  return validatePixArtConfig({
    sampleSize,
    patchSize: num('patch_size'),
    inChannels,
    outChannels: json.out_channels === null ? inChannels : num('out_channels', 8),
    hidden,
    depth: num('num_layers', 28),
    heads,
    mlpRatio: 4,
    captionChannels: num('caption_channels'),
    maxTokens,
    interpolationScale: json.interpolation_scale == null ? Math.max(Math.floor(sampleSize / 64), 1) : num('interpolation_scale'),
    useAdditionalConditions: extra ?? sampleSize === 128,
    normEps: num('norm_eps', 1e-6),
  });
}

const gridSide = (cfg: PixArtConfig) => cfg.sampleSize / cfg.patchSize;
const tokenCount = (cfg: PixArtConfig) => gridSide(cfg) ** 2;

/** Gated sublayers in router order: entry 3i = block i self-attention, 3i+1 cross-attention, 3i+2 MLP. */
export function pixartSlots(cfg: PixArtConfig): SlotInfo[] {
  const t = tokenCount(cfg);
  const d = cfg.hidden;
  return Array.from({ length: cfg.depth }, (_, i) => [
    { name: `blocks.${i}.attn`, block: i, kind: 'attn' as const, macs: macs.selfAttention(t, d) },
    // Keys and values come from the caption after its projection to the model width.
    { name: `blocks.${i}.cross`, block: i, kind: 'cross' as const, macs: macs.crossAttention(t, d, cfg.maxTokens, d) },
    { name: `blocks.${i}.mlp`, block: i, kind: 'mlp' as const, macs: macs.mlp(t, d, cfg.mlpRatio * d) },
  ]).flat();
}

/** MACs per sample outside the gated sublayers (embeddings, adaLN-single, caption projection, final layer). */
export function pixartOtherMacs(cfg: PixArtConfig): number {
  const t = tokenCount(cfg);
  const d = cfg.hidden;
  const p = cfg.patchSize;
  const embedder = (width: number) => macs.linear(1, TIMESTEP_FEATURES, width) + macs.linear(1, width, width);
  // Three micro-condition scalars per sample: height, width, aspect ratio.
  const extra = cfg.useAdditionalConditions ? 3 * embedder(d / 3) : 0;
  return macs.linear(t, cfg.inChannels * p * p, d) + embedder(d) + extra + macs.linear(1, d, 6 * d)
    + macs.linear(cfg.maxTokens, cfg.captionChannels, d) + macs.linear(cfg.maxTokens, d, d)
    + macs.linear(t, d, p * p * cfg.outChannels);
}

interface BlockParams {
  /** [6, D]: added to the shared timestep modulation (shift, scale, gate for attention, then MLP). */
  table: Value;
  attn: AttentionParams;
  cross: AttentionParams;
  mlp: MlpParams;
}

interface PixArtParams {
  patch: LinearParams;
  timestep: MlpParams;
  resolution: MlpParams | null;
  aspectRatio: MlpParams | null;
  /** adaln_single.linear: SiLU(embedded timestep) -> the [B, 6D] modulation shared by all blocks. */
  modulation: LinearParams;
  caption: MlpParams;
  blocks: BlockParams[];
  /** [2, D]: shift and scale of the final layer, added to the embedded timestep. */
  finalTable: Value;
  out: LinearParams;
}

function loadPixArt(b: GraphBuilder, w: Weights, cfg: PixArtConfig): PixArtParams {
  const d = cfg.hidden;
  const p = cfg.patchSize;
  const lin = (prefix: string, i: number, o: number) => loadLinear(b, w, prefix, i, o);
  // diffusers' TimestepEmbedding: linear_1, SiLU, linear_2.
  const embedder = (prefix: string, width: number): MlpParams =>
    ({ fc1: lin(`${prefix}.linear_1`, TIMESTEP_FEATURES, width), fc2: lin(`${prefix}.linear_2`, width, width) });
  const attn = (prefix: string): AttentionParams =>
    ({ q: lin(`${prefix}.to_q`, d, d), k: lin(`${prefix}.to_k`, d, d), v: lin(`${prefix}.to_v`, d, d), out: lin(`${prefix}.to_out.0`, d, d) });
  return {
    patch: loadPatchEmbedding(b, w, 'pos_embed.proj', cfg.inChannels, p, d),
    timestep: embedder('adaln_single.emb.timestep_embedder', d),
    resolution: cfg.useAdditionalConditions ? embedder('adaln_single.emb.resolution_embedder', d / 3) : null,
    aspectRatio: cfg.useAdditionalConditions ? embedder('adaln_single.emb.aspect_ratio_embedder', d / 3) : null,
    modulation: lin('adaln_single.linear', d, 6 * d),
    caption: { fc1: lin('caption_projection.linear_1', cfg.captionChannels, d), fc2: lin('caption_projection.linear_2', d, d) },
    blocks: Array.from({ length: cfg.depth }, (_, i) => b.scope(`blocks.${i}`, () => {
      const k = `transformer_blocks.${i}`;
      return {
        table: loadParam(b, w, `${k}.scale_shift_table`, [6, d]),
        attn: attn(`${k}.attn1`),
        cross: attn(`${k}.attn2`),
        mlp: { fc1: lin(`${k}.ff.net.0.proj`, d, cfg.mlpRatio * d), fc2: lin(`${k}.ff.net.2`, cfg.mlpRatio * d, d) },
      };
    })),
    finalTable: loadParam(b, w, 'scale_shift_table', [2, d]),
    out: lin('proj_out', d, p * p * cfg.outChannels),
  };
}

/** A TimestepEmbedding on sinusoidal features (flip_sin_to_cos, downscale_freq_shift 0) of each scalar of `v`. */
function embedScalars(b: GraphBuilder, v: Value, p: MlpParams): Value {
  const features = timestepFeatures(b, v, TIMESTEP_FEATURES, 0);
  return linear(b, b.silu(linear(b, features, p.fc1)), p.fc2);
}

/**
 * adaLN-single's per-layer modulation: the layer's learned table [n, D] plus the shared
 * per-sample vector [B, n*D], as n vectors [B, D].
 */
function tableModulation(b: GraphBuilder, table: Value, shared: Value): Value[] {
  const [n, d] = table.shape as [number, number];
  return b.split(b.add(shared, b.reshape(table, [1, n * d])), new Array<number>(n).fill(d), 1);
}

export interface PixArtInputs {
  /** [B, C, H, W] latents */
  x: Value;
  /** [B] float32 timesteps in [0, 1000) */
  t: Value;
  /** [B, L, captionChannels] T5 encoder output */
  encoderHiddenStates: Value;
  /** [B, L] float32: 1 for real caption tokens, 0 for padding */
  encoderAttentionMask: Value;
  /** [B, 2] float32 (height, width) in pixels; with additional conditions only */
  resolution?: Value;
  /** [B, 1] float32 height / width; with additional conditions only */
  aspectRatio?: Value;
}

/** Additive attention bias of padded caption tokens, as diffusers uses it. */
const MASKED_BIAS = -10000;
/** diffusers' `norm_out` has a fixed eps, whatever `norm_eps` says. */
const FINAL_NORM_EPS = 1e-6;

function checkInputs(cfg: PixArtConfig, io: PixArtInputs): void {
  const batch = io.x.shape[0]!;
  const tokens = io.encoderHiddenStates.shape[1]!;
  const expected: [string, Value | undefined, number[]][] = [
    ['x', io.x, [batch, cfg.inChannels, cfg.sampleSize, cfg.sampleSize]],
    ['t', io.t, [batch]],
    ['encoderHiddenStates', io.encoderHiddenStates, [batch, tokens, cfg.captionChannels]],
    ['encoderAttentionMask', io.encoderAttentionMask, [batch, tokens]],
  ];
  if (cfg.useAdditionalConditions) expected.push(['resolution', io.resolution, [batch, 2]], ['aspectRatio', io.aspectRatio, [batch, 1]]);
  for (const [name, v, shape] of expected) {
    if (!v) throw new HarmonicaError('BAD_INPUT', `PixArt input ${name} [${shape}] is required with additional conditions`);
    if (v.shape.length !== shape.length || v.shape.some((dim, i) => dim !== shape[i])) {
      throw new HarmonicaError('BAD_INPUT', `PixArt input ${name} must be [${shape}], got [${v.shape}]`);
    }
  }
}

/** Builds the PixArt-alpha forward pass; returns the raw model output [B, outChannels, H, W]. */
export function buildPixArt(b: GraphBuilder, w: Weights, cfg: PixArtConfig, io: PixArtInputs, hooks: SublayerHooks): Value {
  validatePixArtConfig(cfg);
  checkInputs(cfg, io);
  const batch = io.x.shape[0]!;
  const d = cfg.hidden;
  const p = cfg.patchSize;
  const grid = gridSide(cfg);
  const params = loadPixArt(b, w, cfg);

  // Patch embedding plus fixed sin-cos positions, scaled to the base resolution.
  let h = b.scope('patch_embed', () => b.add(linear(b, patchify(b, io.x, p), params.patch),
    b.constant(sincos2d(d, grid, grid, grid, cfg.interpolationScale), 'pos_embed')));

  // adaLN-single: one embedding of the timestep (plus micro-conditions) for the whole model.
  const { embedded, shared } = b.scope('adaln_single', () => {
    let emb = embedScalars(b, io.t, params.timestep);
    if (params.resolution && params.aspectRatio) {
      const size = embedScalars(b, b.reshape(io.resolution!, [2 * batch]), params.resolution);
      const ratio = embedScalars(b, b.reshape(io.aspectRatio!, [batch]), params.aspectRatio);
      emb = b.add(emb, b.concat([b.reshape(size, [batch, (2 * d) / 3]), ratio], 1));
    }
    return { embedded: emb, shared: linear(b, b.silu(emb), params.modulation) };
  });

  // The caption projection is an MLP with tanh-GELU, like the blocks' feed-forward.
  const caption = b.scope('caption_projection', () => mlp(b, io.encoderHiddenStates, params.caption));
  const maskBias = b.scope('caption_mask', () => {
    const tokens = io.encoderAttentionMask.shape[1]!;
    return b.reshape(b.mul(b.sub(1, io.encoderAttentionMask), MASKED_BIAS), [batch, 1, 1, tokens]);
  });

  const norm = (bb: GraphBuilder, x: Value) => bb.layerNorm(x, null, null, { epsilon: cfg.normEps });
  const slots = pixartSlots(cfg);
  params.blocks.forEach((block, i) => b.scope(`blocks.${i}`, () => {
    const [shiftMsa, scaleMsa, gateMsa, shiftMlp, scaleMlp, gateMlp] = tableModulation(b, block.table, shared) as [Value, Value, Value, Value, Value, Value];
    const blockInput = h;
    const attnInput = (bb: GraphBuilder) => modulate(bb, norm(bb, blockInput), shiftMsa, scaleMsa);
    let probedInput: Value | undefined;
    if (i === 0) hooks.probe('firstBlock.modulatedInput', (probedInput = attnInput(b)));
    h = hooks.gated(slots[3 * i]!, h, b.unsqueeze(gateMsa, [1]), (bb) =>
      bb.scope('attn', () => {
        const input = probedInput ?? attnInput(bb);
        return attention(bb, input, input, block.attn, cfg.heads);
      }));
    // PixArt attends to the caption from the residual stream itself: no norm, no gate.
    const afterAttn = h;
    h = hooks.gated(slots[3 * i + 1]!, h, null, (bb) =>
      bb.scope('cross', () => attention(bb, afterAttn, caption, block.cross, cfg.heads, maskBias)));
    const afterCross = h;
    h = hooks.gated(slots[3 * i + 2]!, h, b.unsqueeze(gateMlp, [1]), (bb) =>
      bb.scope('mlp', () => mlp(bb, modulate(bb, norm(bb, afterCross), shiftMlp, scaleMlp), block.mlp)));
    if (i === 0) hooks.probe('firstBlock.residual', b.sub(h, blockInput));
  }));

  return b.scope('final', () => {
    // The final layer modulates with the embedded timestep itself (no SiLU, no linear).
    const [shift, scale] = tableModulation(b, params.finalTable, b.concat([embedded, embedded], 1)) as [Value, Value];
    const tokens = linear(b, modulate(b, b.layerNorm(h, null, null, { epsilon: FINAL_NORM_EPS }), shift, scale), params.out);
    return unpatchify(b, tokens, p, cfg.outChannels, grid, grid);
  });
}
