import type { GraphBuilder } from '../onnx/builder.js';
import type { Value } from '../onnx/ir.js';
import { tensor, type HostTensor } from '../tensor/tensor.js';
import { HarmonicaError } from '../util/errors.js';
import { linear, outFeatures, type LinearParams } from './layers.js';
import { loadEmbedding, loadLinear, loadParam, type Weights } from './weights.js';

/**
 * The T5 encoder (transformers' `T5EncoderModel`), PixArt-alpha's text encoder, built from a
 * checkpoint in the transformers key layout (`shared.weight`, `encoder.block.{i}.*`).
 */
export interface T5Config {
  vocabSize: number;
  dModel: number;
  /** Width of one attention head; heads * dKv need not equal dModel. */
  dKv: number;
  dFf: number;
  numLayers: number;
  numHeads: number;
  relativeAttentionNumBuckets: number;
  relativeAttentionMaxDistance: number;
  layerNormEpsilon: number;
  /** 'gated-gelu' is T5 v1.1 (PixArt's T5-XXL): gelu_new(wi_0 x) * wi_1 x; 'relu' is T5 v1.0. */
  feedForwardProj: 'gated-gelu' | 'relu';
  /** Tokens per prompt: the static sequence length of the graph. */
  maxLength: number;
}

/** PixArt-alpha encodes prompts to 120 T5 tokens. */
export const PIXART_T5_MAX_LENGTH = 120;

/** transformers builds the additive mask from torch.finfo(float32).min, not -inf (no NaN rows). */
const MASK_MIN = -3.4028234663852886e38;

function bad(message: string): HarmonicaError {
  return new HarmonicaError('BAD_CONFIG', `T5 config: ${message}`);
}

function positiveInt(json: Record<string, unknown>, key: string, fallback?: number): number {
  const v = json[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw bad(`${key} must be a positive integer, got ${JSON.stringify(v)}`);
  return v;
}

/**
 * Reads a transformers T5 config.json. Missing optional keys take transformers' defaults
 * (the relative attention ones are absent from older configs); sizes have no sensible
 * default and must be present. `maxLength` is not part of config.json: it is the pipeline's
 * tokenizer length (120 for PixArt-alpha).
 */
export function t5ConfigFromHf(json: unknown, maxLength = PIXART_T5_MAX_LENGTH): T5Config {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw bad('expected a JSON object');
  const j = json as Record<string, unknown>;
  // umt5 has a relative attention bias in every layer, which this encoder does not build.
  if (j.model_type !== undefined && j.model_type !== 't5' && j.model_type !== 'mt5') {
    throw bad(`model_type ${JSON.stringify(j.model_type)} is not t5`);
  }
  const ff = j.feed_forward_proj ?? 'relu';
  if (ff !== 'gated-gelu' && ff !== 'relu') throw bad(`feed_forward_proj ${JSON.stringify(ff)} is not supported (only "gated-gelu" and "relu")`);
  const eps = j.layer_norm_epsilon ?? 1e-6;
  if (typeof eps !== 'number' || !(eps > 0)) throw bad(`layer_norm_epsilon must be a positive number, got ${JSON.stringify(eps)}`);
  if (!Number.isInteger(maxLength) || maxLength <= 0) throw bad(`maxLength must be a positive integer, got ${maxLength}`);
  const cfg: T5Config = {
    vocabSize: positiveInt(j, 'vocab_size'),
    dModel: positiveInt(j, 'd_model'),
    dKv: positiveInt(j, 'd_kv'),
    dFf: positiveInt(j, 'd_ff'),
    numLayers: positiveInt(j, 'num_layers'),
    numHeads: positiveInt(j, 'num_heads'),
    relativeAttentionNumBuckets: positiveInt(j, 'relative_attention_num_buckets', 32),
    relativeAttentionMaxDistance: positiveInt(j, 'relative_attention_max_distance', 128),
    layerNormEpsilon: eps,
    feedForwardProj: ff,
    maxLength,
  };
  // Bidirectional buckets split in two halves, each half into exact and log-spaced parts.
  if (cfg.relativeAttentionNumBuckets < 4 || cfg.relativeAttentionNumBuckets % 2 !== 0) {
    throw bad(`relative_attention_num_buckets must be an even number >= 4, got ${cfg.relativeAttentionNumBuckets}`);
  }
  return cfg;
}

/**
 * transformers' `T5Attention._relative_position_bucket` for one relative position
 * (key position - query position). Positive offsets use the upper half of the buckets;
 * |offset| < maxExact maps to itself, larger offsets are log-spaced up to maxDistance and
 * clamped beyond. The log part is rounded to float32 step by step as torch computes it
 * (plain float64 gives the same buckets for the usual 32/128, but could differ at an edge).
 */
export function relativePositionBucket(relativePosition: number, bidirectional: boolean, numBuckets: number, maxDistance: number): number {
  let buckets = numBuckets;
  let bucket = 0;
  let n: number;
  if (bidirectional) {
    buckets = Math.floor(buckets / 2);
    if (relativePosition > 0) bucket += buckets;
    n = Math.abs(relativePosition);
  } else {
    n = -Math.min(relativePosition, 0);
  }
  const maxExact = Math.floor(buckets / 2);
  if (n < maxExact) return bucket + n;
  const f = Math.fround;
  const logRatio = f(f(Math.log(f(n / maxExact))) / f(Math.log(maxDistance / maxExact)));
  const large = maxExact + Math.trunc(f(logRatio * (buckets - maxExact)));
  return bucket + Math.min(large, buckets - 1);
}

/** The bucket of every (query, key) pair of a length-L self-attention: int64 [L, L]. */
export function relativePositionBuckets(length: number, numBuckets: number, maxDistance: number): HostTensor {
  const out: number[] = [];
  for (let q = 0; q < length; q++) {
    for (let k = 0; k < length; k++) out.push(relativePositionBucket(k - q, true, numBuckets, maxDistance));
  }
  return tensor('int64', [length, length], out);
}

/** [B, L, H*D] -> [B, H, L, D] */
function splitHeads(b: GraphBuilder, x: Value, heads: number): Value {
  const [batch, tokens, width] = x.shape as [number, number, number];
  return b.transpose(b.reshape(x, [batch, tokens, heads, width / heads]), [0, 2, 1, 3]);
}

/**
 * T5 self-attention. Unlike layers.attention() the scores are not scaled by 1/sqrt(d)
 * (T5 folds that into its weight initialisation), and `bias` carries both the relative
 * position bias and the padding mask, [B, H, L, L].
 */
function t5SelfAttention(b: GraphBuilder, x: Value, p: { q: LinearParams; k: LinearParams; v: LinearParams; o: LinearParams }, heads: number, bias: Value): Value {
  const [batch, tokens] = x.shape as [number, number, number];
  const q = splitHeads(b, linear(b, x, p.q), heads);
  const k = splitHeads(b, linear(b, x, p.k), heads);
  const v = splitHeads(b, linear(b, x, p.v), heads);
  const scores = b.add(b.matmul(q, b.transposeLast(k)), bias);
  const mixed = b.matmul(b.softmax(scores, -1), v);
  const inner = outFeatures(p.q);
  return linear(b, b.reshape(b.transpose(mixed, [0, 2, 1, 3]), [batch, tokens, inner]), p.o);
}

function t5FeedForward(b: GraphBuilder, w: Weights, cfg: T5Config, prefix: string, x: Value): Value {
  const { dModel, dFf } = cfg;
  const wo = loadLinear(b, w, `${prefix}.wo`, dFf, dModel, false);
  if (cfg.feedForwardProj === 'gated-gelu') {
    // T5 v1.1's "gelu_new" is the tanh approximation.
    const gate = b.gelu(linear(b, x, loadLinear(b, w, `${prefix}.wi_0`, dModel, dFf, false)), 'tanh');
    const up = linear(b, x, loadLinear(b, w, `${prefix}.wi_1`, dModel, dFf, false));
    return linear(b, b.mul(gate, up), wo);
  }
  const h = linear(b, x, loadLinear(b, w, `${prefix}.wi`, dModel, dFf, false));
  return linear(b, b.relu(h), wo);
}

/**
 * The T5 encoder stack as transformers' T5EncoderModel computes it (inference: dropout is
 * the identity). Returns the last hidden state [B, L, dModel] after the final RMS norm; padded
 * positions get values too, which callers ignore through the same mask.
 *
 * `inputIds` int64/int32 [B, L]; `attentionMask` int64 or float [B, L] with 1 for real tokens.
 */
export function buildT5Encoder(b: GraphBuilder, w: Weights, cfg: T5Config, inputIds: Value, attentionMask: Value): Value {
  const { dModel, dKv, numHeads, layerNormEpsilon: eps } = cfg;
  if (inputIds.rank !== 2) throw new HarmonicaError('BAD_INPUT', `T5 encoder: input ids must be [B, L], got [${inputIds.shape}]`);
  if (inputIds.dtype !== 'int64' && inputIds.dtype !== 'int32') throw new HarmonicaError('BAD_INPUT', `T5 encoder: input ids must be int64/int32, got ${inputIds.dtype}`);
  if (attentionMask.rank !== 2 || attentionMask.shape[0] !== inputIds.shape[0] || attentionMask.shape[1] !== inputIds.shape[1]) {
    throw new HarmonicaError('BAD_INPUT', `T5 encoder: attention mask [${attentionMask.shape}] must match input ids [${inputIds.shape}]`);
  }
  const [batch, length] = inputIds.shape as [number, number];
  const inner = numHeads * dKv;

  return b.scope('t5', () => {
    // Checkpoints saved with tied weights keep only one of the two names.
    const embedName = ['shared.weight', 'encoder.embed_tokens.weight'].find((n) => w.has(n));
    if (!embedName) throw new HarmonicaError('MISSING_WEIGHT', `${w.source}: missing weight "shared.weight" (or "encoder.embed_tokens.weight")`);
    let h = loadEmbedding(b, w, embedName, [cfg.vocabSize, dModel], inputIds);

    // Block 0's relative position bias is computed once and reused by every layer, with the
    // padding mask folded in: [1, H, L, L] + [B, 1, 1, L] -> [B, H, L, L].
    const bias = b.scope('position_bias', () => {
      const table = loadParam(b, w, 'encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight', [cfg.relativeAttentionNumBuckets, numHeads]);
      const buckets = b.constant(relativePositionBuckets(length, cfg.relativeAttentionNumBuckets, cfg.relativeAttentionMaxDistance), 'buckets');
      const position = b.unsqueeze(b.transpose(b.gather(table, buckets, 0), [2, 0, 1]), [0]);
      const keep = b.cast(attentionMask, 'float32');
      const mask = b.reshape(b.mul(b.sub(1, keep), MASK_MIN), [batch, 1, 1, length]);
      return b.add(position, mask);
    });

    for (let i = 0; i < cfg.numLayers; i++) {
      const prefix = `encoder.block.${i}.layer`;
      h = b.scope(`encoder.block.${i}`, () => {
        const attnPrefix = `${prefix}.0.SelfAttention`;
        const attn = {
          q: loadLinear(b, w, `${attnPrefix}.q`, dModel, inner, false),
          k: loadLinear(b, w, `${attnPrefix}.k`, dModel, inner, false),
          v: loadLinear(b, w, `${attnPrefix}.v`, dModel, inner, false),
          o: loadLinear(b, w, `${attnPrefix}.o`, inner, dModel, false),
        };
        const norm0 = loadParam(b, w, `${prefix}.0.layer_norm.weight`, [dModel]);
        const x = b.add(h, t5SelfAttention(b, b.rmsNorm(h, norm0, eps), attn, numHeads, bias));
        const norm1 = loadParam(b, w, `${prefix}.1.layer_norm.weight`, [dModel]);
        return b.add(x, t5FeedForward(b, w, cfg, `${prefix}.1.DenseReluDense`, b.rmsNorm(x, norm1, eps)));
      });
    }
    return b.rmsNorm(h, loadParam(b, w, 'encoder.final_layer_norm.weight', [dModel]), eps);
  });
}
