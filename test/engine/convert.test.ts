import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { convertCheckpoint } from '../../src/engine/convert.js';
import { Engine } from '../../src/engine/engine.js';
import type { PixArtConfig } from '../../src/models/pixart.js';
import { initPixArtWeights } from '../../src/models/pixart-init.js';
import { initT5Weights } from '../../src/models/t5-init.js';
import { writeWordLevelTokenizer } from '../../src/models/tokenizer.js';
import { writeSafetensors } from '../../src/tensor/safetensors.js';
import { initVaeWeights, vaeConfigToDiffusers } from '../../src/models/vae-init.js';
import type { VaeConfig } from '../../src/models/vae.js';
import { randomDitCheckpoints, TINY_DIT } from '../helpers/dit-checkpoint.js';
import { TINY_WORDS } from '../helpers/packages.js';

describe('convert a diffusers PixArt-alpha folder', () => {
  it.each([
    ['PixArtTransformer2DModel', {}],
    // Hub folders (PixArt-alpha/PixArt-XL-2-*) name the generic class, which diffusers remaps by norm_type.
    ['Transformer2DModel', { norm_type: 'ada_norm_single' }],
  ])('reads transformer (%s), sharded text_encoder and tokenizer.json into a package that generates', async (className, extraConfig) => {
    const root = await mkdtemp(join(tmpdir(), 'pixart-diffusers-'));
    const t5 = { vocabSize: TINY_WORDS.length + 3, dModel: 16, dKv: 4, dFf: 32, numLayers: 1, numHeads: 4, relativeAttentionNumBuckets: 8, relativeAttentionMaxDistance: 16, layerNormEpsilon: 1e-6, feedForwardProj: 'gated-gelu' as const, maxLength: 120 };
    const cfg: PixArtConfig = { sampleSize: 8, patchSize: 2, inChannels: 1, outChannels: 2, hidden: 32, depth: 1, heads: 4, mlpRatio: 4, captionChannels: 16, maxTokens: 120, interpolationScale: 1, useAdditionalConditions: false, normEps: 1e-6 };
    for (const d of ['transformer', 'text_encoder', 'tokenizer']) await mkdir(join(root, d));
    await writeFile(join(root, 'transformer', 'config.json'), JSON.stringify({
      _class_name: className, ...extraConfig, sample_size: 8, patch_size: 2, in_channels: 1, out_channels: 2, num_layers: 1,
      num_attention_heads: 4, attention_head_dim: 8, caption_channels: 16,
    }));
    await writeSafetensors(join(root, 'transformer', 'diffusion_pytorch_model.safetensors'), initPixArtWeights(cfg, 1));
    await writeFile(join(root, 'text_encoder', 'config.json'), JSON.stringify({
      model_type: 't5', vocab_size: t5.vocabSize, d_model: 16, d_kv: 4, d_ff: 32, num_layers: 1, num_heads: 4,
      relative_attention_num_buckets: 8, relative_attention_max_distance: 16, feed_forward_proj: 'gated-gelu',
    }));
    const weights = [...initT5Weights(t5, 2)];
    const shards = [new Map(weights.slice(0, 3)), new Map(weights.slice(3))];
    const weightMap: Record<string, string> = {};
    for (const [i, shard] of shards.entries()) {
      const file = `model-0000${i + 1}-of-00002.safetensors`;
      await writeSafetensors(join(root, 'text_encoder', file), shard);
      for (const k of shard.keys()) weightMap[k] = file;
    }
    await writeFile(join(root, 'text_encoder', 'model.safetensors.index.json'), JSON.stringify({ weight_map: weightMap }));
    await writeFile(join(root, 'tokenizer', 'tokenizer.json'), JSON.stringify(writeWordLevelTokenizer(TINY_WORDS)));

    const pkg = await convertCheckpoint({ from: root, out: join(root, 'package'), id: 'tiny-pixart-converted' });
    expect(pkg.manifest).toMatchObject({ id: 'tiny-pixart-converted', family: 'pixart', defaults: { sampler: 'dpmpp', steps: 20, cfg: 4.5 }, textEncoder: { maxLength: 120 } });
    const engine = await Engine.open(pkg.dir, { threads: 1 });
    const r = await engine.generate({ prompt: 'a small seven', steps: 3, seed: 1 });
    expect(r.images[0]!.shape).toEqual([1, 8, 8]);
    expect(r.report.notes).toEqual({ promptTokens: 4, promptTruncated: false });
  });

  it('asks for tokenizer.json when the folder only has a sentencepiece model', async () => {
    const root = await mkdtemp(join(tmpdir(), 'pixart-notok-'));
    await mkdir(join(root, 'transformer'));
    await writeFile(join(root, 'transformer', 'config.json'), JSON.stringify({ _class_name: 'PixArtTransformer2DModel', sample_size: 8, patch_size: 2, in_channels: 1, out_channels: 2, num_layers: 1, num_attention_heads: 4, attention_head_dim: 8, caption_channels: 16 }));
    await expect(convertCheckpoint({ from: root, out: join(root, 'p'), id: 'x' })).rejects.toThrow(/tokenizer.json is missing/);
  });
});

const TINY_VAE: VaeConfig = { latentChannels: 4, outChannels: 3, blockOutChannels: [8, 16], layersPerBlock: 1, normNumGroups: 4, scalingFactor: 0.18215, midBlockAddAttention: true };

describe('convert an original DiT checkpoint', () => {
  it('--vae adds the VAE it lacks; classes are written; the id defaults to the folder name; it generates images', async () => {
    const root = await mkdtemp(join(tmpdir(), 'dit-original-'));
    await writeSafetensors(join(root, 'DiT-tiny.safetensors'), randomDitCheckpoints(TINY_DIT, 2).original);
    const vaeDir = join(root, 'sd-vae');
    await mkdir(vaeDir);
    await writeFile(join(vaeDir, 'config.json'), JSON.stringify(vaeConfigToDiffusers(TINY_VAE)));
    await writeSafetensors(join(vaeDir, 'diffusion_pytorch_model.safetensors'), initVaeWeights(TINY_VAE, 3));
    const config = { depth: 2, hidden: 32, heads: 4, patchSize: 2, numClasses: 10 };
    const pkg = await convertCheckpoint({ from: join(root, 'DiT-tiny.safetensors'), out: join(root, 'dit-tiny-256'), config, imageSize: 64, vae: vaeDir });
    expect(pkg.manifest).toMatchObject({ id: 'dit-tiny-256', layout: 'original', vae: { weights: 'vae.safetensors' }, classes: ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'] });
    const r = await (await Engine.open(pkg.dir, { threads: 1 })).generate({ classLabel: 4, steps: 2 });
    expect(r.images[0]!.shape).toEqual([3, 16, 16]);

    // Without --vae the package converts (forward works) but generate refuses before any step.
    const bare = await convertCheckpoint({ from: join(root, 'DiT-tiny.safetensors'), out: join(root, 'bare'), config, imageSize: 64 });
    expect(bare.manifest.vae).toBeUndefined();
    await expect((await Engine.open(bare.dir, { threads: 1 })).generate({ classLabel: 4, steps: 2 })).rejects.toMatchObject({ code: 'BAD_CONFIG', message: expect.stringMatching(/--vae DIR/) });
    await expect(convertCheckpoint({ from: join(root, 'DiT-tiny.safetensors'), out: join(root, 'x'), config, vae: join(root, 'nowhere') }))
      .rejects.toMatchObject({ code: 'BAD_CONFIG', message: expect.stringMatching(/--vae .*nowhere: no config.json/) });
  });

  it('a Hub DiT folder (Transformer2DModel, ada_norm_zero) gets classes too', async () => {
    const root = await mkdtemp(join(tmpdir(), 'dit-hub-'));
    await mkdir(join(root, 'transformer'));
    await writeFile(join(root, 'transformer', 'config.json'), JSON.stringify({
      _class_name: 'Transformer2DModel', norm_type: 'ada_norm_zero', sample_size: 8, patch_size: 2, in_channels: 4, out_channels: 8, num_layers: 2,
      num_attention_heads: 4, attention_head_dim: 8, num_embeds_ada_norm: 10,
    }));
    await writeSafetensors(join(root, 'transformer', 'diffusion_pytorch_model.safetensors'), randomDitCheckpoints(TINY_DIT, 2).diffusers);
    const pkg = await convertCheckpoint({ from: root, out: join(root, 'pkg') });
    expect(pkg.manifest).toMatchObject({ id: 'pkg', family: 'dit', classes: Array.from({ length: 10 }, (_, i) => String(i)) });
  });
});
