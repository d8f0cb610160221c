import { CAPTION_WORDS, randomCaptionedSample } from '../data/captions.js';
import { PADDED_SIDE, toModelImage, type Digit } from '../data/mnist.js';
import { createDenoiser, type Denoiser } from '../models/denoiser.js';
import type { DitConfig } from '../models/dit.js';
import { initDitWeights } from '../models/dit-init.js';
import type { PixArtConfig } from '../models/pixart.js';
import { initPixArtWeights } from '../models/pixart-init.js';
import { plainHooks } from '../models/sublayer.js';
import { buildT5Encoder, type T5Config } from '../models/t5.js';
import { initT5Weights } from '../models/t5-init.js';
import { TextTokenizer, writeWordLevelTokenizer } from '../models/tokenizer.js';
import { Weights } from '../models/weights.js';
import type { GraphBuilder } from '../onnx/builder.js';
import type { Value } from '../onnx/ir.js';
import type { Rng } from '../tensor/rng.js';
import { tensor, type HostTensor } from '../tensor/tensor.js';
import type { ModelManifest } from '../engine/package.js';
import { join } from 'node:path';
import { castTensor } from '../tensor/half.js';
import { readSafetensors } from '../tensor/safetensors.js';
import { HarmonicaError } from '../util/errors.js';

/** What shapes a batch's images and conditions. */
export interface SampleSettings {
  batch: number;
  /** Probability of the null condition (for guidance). */
  conditionDropout: number;
  /** Text models: probability of a caption that names only the digit (default 0). */
  digitOnlyCaptions?: number;
}

/** What a base-model training run needs to know about its model and data. */
export interface TrainTask {
  model: Denoiser;
  /** Checkpoint-layout weights of every trained component, by file name in the package. */
  components: Record<string, Map<string, HostTensor>>;
  /** Builds the forward pass (condition inputs included) in a builder with weights as inputs. */
  build(b: GraphBuilder, batch: number): Value;
  /** A clean batch: images x0 [B*32*32] and their condition feeds. */
  sample(data: readonly Digit[], settings: SampleSettings, rng: Rng): { x0: Float32Array; feeds: Record<string, HostTensor> };
  /** Manifest fields beyond the denoiser's (classes, text encoder) and extra package files. */
  packaging(): { manifest: Partial<ModelManifest>; files: Record<string, object> };
}

export interface DitTaskConfig {
  family: 'dit';
  model: DitConfig;
}

export interface PixArtTaskConfig {
  family: 'pixart';
  model: PixArtConfig;
  textEncoder: T5Config;
}

export type TaskConfig = DitTaskConfig | PixArtTaskConfig;

export const WEIGHTS = 'weights.safetensors';
export const TEXT_ENCODER = 'text_encoder.safetensors';

/** Initial weights by package file name (to continue from a model package instead of from scratch). */
export type InitialWeights = Record<string, Map<string, HostTensor>>;

function ditTask(cfg: DitConfig, seed: number, initial?: InitialWeights): TrainTask {
  const model = createDenoiser('dit', cfg);
  const weights = initial?.[WEIGHTS] ?? initDitWeights(cfg, seed, 1, true);
  return {
    model,
    components: { [WEIGHTS]: weights },
    build: (b, batch) => model.build(b, new Weights(weights), batch, plainHooks(b)).out,
    sample(data, { batch, conditionDropout }, rng) {
      const size = PADDED_SIDE * PADDED_SIDE;
      const x0 = new Float32Array(batch * size);
      const y: number[] = [];
      for (let i = 0; i < batch; i++) {
        const d = data[rng.int(data.length)]!;
        toModelImage(d.pixels, x0, i * size);
        y.push(rng.uniform() < conditionDropout ? cfg.numClasses : d.label);
      }
      return { x0, feeds: { y: tensor('int64', [batch], y) } };
    },
    packaging: () => ({ manifest: { classes: Array.from({ length: cfg.numClasses }, (_, i) => String(i)) }, files: {} }),
  };
}

/**
 * PixArt-alpha trained jointly with its small T5 encoder on captioned digits; a dropped
 * caption is the empty string (as the pipeline's default negative prompt).
 */
function pixartTask(cfg: PixArtConfig, t5: T5Config, seed: number, initial?: InitialWeights): TrainTask {
  const model = createDenoiser('pixart', cfg);
  const weights = initial?.[WEIGHTS] ?? initPixArtWeights(cfg, seed, 1, true);
  const textWeights = initial?.[TEXT_ENCODER] ?? initT5Weights(t5, seed + 1);
  const tokenizerJson = writeWordLevelTokenizer(CAPTION_WORDS);
  const tokenizer = TextTokenizer.fromJSON(tokenizerJson);
  const L = cfg.maxTokens;
  if (t5.vocabSize !== tokenizer.vocabSize) throw new HarmonicaError('BAD_CONFIG', `textEncoder.vocabSize must be ${tokenizer.vocabSize} (the caption vocabulary), got ${t5.vocabSize}`);
  if (t5.maxLength !== L || t5.dModel !== cfg.captionChannels) throw new HarmonicaError('BAD_CONFIG', 'textEncoder.maxLength and dModel must equal the model\'s maxTokens and captionChannels');
  return {
    model,
    components: { [WEIGHTS]: weights, [TEXT_ENCODER]: textWeights },
    build(b, batch) {
      const ids = b.input('input_ids', 'int64', [batch, L]);
      const mask = b.input('attention_mask', 'float32', [batch, L]);
      const hidden = buildT5Encoder(b, new Weights(textWeights, TEXT_ENCODER), t5, ids, mask);
      return model.build(b, new Weights(weights), batch, plainHooks(b), { encoder_hidden_states: hidden, encoder_attention_mask: mask }).out;
    },
    sample(data, { batch, conditionDropout, digitOnlyCaptions = 0 }, rng) {
      const size = PADDED_SIDE * PADDED_SIDE;
      const x0 = new Float32Array(batch * size);
      const ids: number[] = [];
      const mask: number[] = [];
      for (let i = 0; i < batch; i++) {
        const s = randomCaptionedSample(data, rng, digitOnlyCaptions);
        x0.set(s.image, i * size);
        const e = tokenizer.encode(rng.uniform() < conditionDropout ? '' : s.caption, L);
        ids.push(...e.ids);
        mask.push(...e.mask);
      }
      return { x0, feeds: { input_ids: tensor('int64', [batch, L], ids), attention_mask: tensor('float32', [batch, L], mask) } };
    },
    packaging() {
      const config = {
        model_type: 't5', vocab_size: t5.vocabSize, d_model: t5.dModel, d_kv: t5.dKv, d_ff: t5.dFf, num_layers: t5.numLayers, num_heads: t5.numHeads,
        relative_attention_num_buckets: t5.relativeAttentionNumBuckets, relative_attention_max_distance: t5.relativeAttentionMaxDistance,
        layer_norm_epsilon: t5.layerNormEpsilon, feed_forward_proj: t5.feedForwardProj,
      };
      return {
        manifest: { textEncoder: { config, weights: TEXT_ENCODER, tokenizer: 'tokenizer.json', maxLength: L } },
        files: { 'tokenizer.json': tokenizerJson },
      };
    },
  };
}

export function createTask(cfg: TaskConfig, seed: number, initial?: InitialWeights): TrainTask {
  return cfg.family === 'dit' ? ditTask(cfg.model, seed, initial) : pixartTask(cfg.model, cfg.textEncoder, seed, initial);
}

/**
 * The weights of a model package as float32 (one tensor object per key, so that parameters
 * map back to their keys on export): training continues from them with a fresh optimizer.
 */
export async function packageWeights(dir: string, files: string[]): Promise<InitialWeights> {
  const out: InitialWeights = {};
  for (const file of files) {
    const tensors = await readSafetensors(join(dir, file));
    out[file] = new Map([...tensors].map(([k, t]) => [k, t.dtype === 'float32' ? t : castTensor(t, 'float32')]));
  }
  return out;
}
