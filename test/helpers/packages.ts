import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DitConfig } from '../../src/models/dit.js';
import { initDitWeights } from '../../src/models/dit-init.js';
import { writeModelPackage, type ModelPackage } from '../../src/engine/package.js';
import { TINY_DIT } from './dit-checkpoint.js';
import type { PixArtConfig } from '../../src/models/pixart.js';
import { initPixArtWeights } from '../../src/models/pixart-init.js';
import type { T5Config } from '../../src/models/t5.js';
import { initT5Weights } from '../../src/models/t5-init.js';
import { writeWordLevelTokenizer } from '../../src/models/tokenizer.js';

/** A pixel-space DiT like dit-mnist, tiny: 8x8x1 images, 10 classes, random weights. */
export const TINY_PIXEL_DIT: DitConfig = { ...TINY_DIT, inChannels: 1 };

export async function tinyDitPackage(seed = 3, id = 'tiny-dit', config: DitConfig = TINY_PIXEL_DIT): Promise<ModelPackage> {
  const dir = await mkdtemp(join(tmpdir(), `${id}-`));
  return writeModelPackage(dir, {
    id, family: 'dit', layout: 'diffusers', config: { ...config },
    defaults: { sampler: 'ddim', steps: 6, cfg: 1.5 },
    classes: Array.from({ length: 10 }, (_, i) => String(i)),
    provenance: { note: 'random weights for tests' },
  }, initDitWeights(config, seed, 0.8));
}

/** Words of the tiny caption vocabulary (like pixart-mnist's). */
export const TINY_WORDS = ['a', 'small', 'large', 'seven', 'one', 'digit', 'in', 'the', 'top', 'left', 'corner', 'center'];

/** A pixel-space PixArt-alpha like pixart-mnist, tiny, with a tiny T5 and a word-level tokenizer. */
export async function tinyPixArtPackage(seed = 5, id = 'tiny-pixart', shape: { sampleSize: number; patchSize: number; words: string[] } = { sampleSize: 8, patchSize: 2, words: TINY_WORDS }): Promise<ModelPackage> {
  const dir = await mkdtemp(join(tmpdir(), `${id}-`));
  const tokenizer = writeWordLevelTokenizer(shape.words);
  const t5: T5Config = {
    vocabSize: shape.words.length + 3, dModel: 16, dKv: 4, dFf: 32, numLayers: 1, numHeads: 4,
    relativeAttentionNumBuckets: 8, relativeAttentionMaxDistance: 16, layerNormEpsilon: 1e-6, feedForwardProj: 'gated-gelu', maxLength: 8,
  };
  const config: PixArtConfig = {
    sampleSize: shape.sampleSize, patchSize: shape.patchSize, inChannels: 1, outChannels: 2, hidden: 32, depth: 2, heads: 4, mlpRatio: 4,
    captionChannels: t5.dModel, maxTokens: t5.maxLength, interpolationScale: 1, useAdditionalConditions: false, normEps: 1e-6,
  };
  const t5Json = {
    model_type: 't5', vocab_size: t5.vocabSize, d_model: t5.dModel, d_kv: t5.dKv, d_ff: t5.dFf, num_layers: t5.numLayers, num_heads: t5.numHeads,
    relative_attention_num_buckets: t5.relativeAttentionNumBuckets, relative_attention_max_distance: t5.relativeAttentionMaxDistance,
    layer_norm_epsilon: t5.layerNormEpsilon, feed_forward_proj: 'gated-gelu',
  };
  return writeModelPackage(dir, {
    id, family: 'pixart', layout: 'diffusers', config: { ...config },
    textEncoder: { config: t5Json, weights: 'text_encoder.safetensors', tokenizer: 'tokenizer.json', maxLength: t5.maxLength },
    defaults: { sampler: 'dpmpp', steps: 5, cfg: 2 },
    provenance: { note: 'random weights for tests' },
  }, initPixArtWeights(config, seed, 0.8), { 'text_encoder.safetensors': initT5Weights(t5, seed + 1), 'tokenizer.json': tokenizer });
}
