import { mkdtemp } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { benchRealSize } from '../../src/bench/real-size.js';
import type { PixArtConfig } from '../../src/models/pixart.js';
import type { T5Config } from '../../src/models/t5.js';
import { initT5Weights } from '../../src/models/t5-init.js';
import { readSafetensors } from '../../src/tensor/safetensors.js';
import { TINY_DIT } from '../helpers/dit-checkpoint.js';

const TINY_VAE = { latentChannels: 4, outChannels: 3, blockOutChannels: [8, 16], layersPerBlock: 1, normNumGroups: 4, scalingFactor: 0.18215, midBlockAddAttention: true };

describe('bench real-size, at tiny widths', () => {
  it('writes an original checkpoint, converts it with --vae, generates cold, from the compiled cache and with fora:2', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'real-size-'));
    const r = await benchRealSize({ dir, model: 'dit-xl-2-256', layout: 'original', steps: 4, seed: 1, threads: 1, sizes: { dit: TINY_DIT, vae: TINY_VAE } });
    expect(r.phases.map((p) => [p.phase, p.compiledCache])).toEqual([
      ['write random checkpoint (or reuse)', undefined], ['convert', undefined],
      ['generate, cold (empty compiled cache)', 'miss'], ['generate, second start', 'hit'], ['generate fora:2, second start', 'hit'],
    ]);
    for (const p of r.phases) expect(p.peakRssGb).toBeGreaterThan(0.01);
    expect(r.fora2Speedup).toBeGreaterThan(0);
    expect(existsSync(join(dir, 'dit-original-generate-second-start.png'))).toBe(true);
  }, 120_000);
});

describe('bench real-size for PixArt-alpha, at tiny widths', () => {
  it('writes a Hub folder with T5 shards (the weights initT5Weights draws), converts and generates from the cache', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'real-size-pixart-'));
    const t5: T5Config = { vocabSize: 20, dModel: 16, dKv: 4, dFf: 32, numLayers: 5, numHeads: 4, relativeAttentionNumBuckets: 8, relativeAttentionMaxDistance: 16, layerNormEpsilon: 1e-6, feedForwardProj: 'gated-gelu', maxLength: 120 };
    const pixart: PixArtConfig = { sampleSize: 8, patchSize: 2, inChannels: 4, outChannels: 8, hidden: 32, depth: 1, heads: 4, mlpRatio: 4, captionChannels: 16, maxTokens: 120, interpolationScale: 1, useAdditionalConditions: false, normEps: 1e-6 };
    const r = await benchRealSize({ dir, model: 'pixart-xl-2-512', layout: 'diffusers', steps: 3, seed: 1, threads: 1, sizes: { pixart, t5, vae: TINY_VAE } });
    expect(r.phases.slice(2).map((p) => p.compiledCache)).toEqual(['miss', 'hit', 'hit']);
    const shards = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'].map((f) => join(dir, 'pixart-t5x5', 'text_encoder', f));
    const written = new Map([...await readSafetensors(shards[0]!), ...await readSafetensors(shards[1]!)]);
    const expected = initT5Weights(t5, 1 + 2);
    expect([...written.keys()].sort()).toEqual([...expected.keys()].sort());
    for (const [k, t] of expected) expect(Array.from(written.get(k)!.data as Float32Array), k).toEqual(Array.from(t.data as Float32Array));
  }, 120_000);
});
