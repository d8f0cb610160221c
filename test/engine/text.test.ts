import { beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import { tinyPixArtPackage } from '../helpers/packages.js';

let engine: Engine;
beforeAll(async () => {
  engine = await Engine.open((await tinyPixArtPackage()).dir, { threads: 1 });
});

describe('engine (tiny pixel-space PixArt-alpha with T5 and a word-level tokenizer)', () => {
  it('generates deterministically from a prompt; the prompt matters', async () => {
    const a = await engine.generate({ prompt: 'a small seven in the top left corner', seed: 4 });
    const b = await engine.generate({ prompt: 'a small seven in the top left corner', seed: 4 });
    const c = await engine.generate({ prompt: 'a large one in the center', seed: 4 });
    expect(a.images[0]!.shape).toEqual([1, 8, 8]);
    expect(Array.from(a.images[0]!.data as Float32Array)).toEqual(Array.from(b.images[0]!.data as Float32Array));
    expect(Array.from(a.images[0]!.data as Float32Array)).not.toEqual(Array.from(c.images[0]!.data as Float32Array));
    expect(a.report.notes).toEqual({ promptTokens: 8, promptTruncated: true });
    expect(c.report.notes).toEqual({ promptTokens: 7, promptTruncated: false });
    expect(a.report.sampler).toBe('dpmpp');
  });

  it('caches self-attention, cross-attention and MLP slots (3 per block)', async () => {
    const r = await engine.generate({ prompt: 'a seven', seed: 1, cache: 'fora:2' });
    expect(engine.model.slots.map((s) => s.name)).toEqual(['blocks.0.attn', 'blocks.0.cross', 'blocks.0.mlp', 'blocks.1.attn', 'blocks.1.cross', 'blocks.1.mlp']);
    expect(r.report.reusedSlots).toBe(2 * 6);
  });

  it('reports an over-long prompt as truncated and rejects absurd lengths and a class label', async () => {
    const long = Array.from({ length: 40 }, () => 'seven').join(' ');
    const r = await engine.generate({ prompt: long, seed: 1 });
    expect(r.report.notes.promptTruncated).toBe(true);
    await expect(engine.generate({ prompt: 'x'.repeat(5000) })).rejects.toThrow(/over the limit of 2000/);
    await expect(engine.generate({ classLabel: 3 })).rejects.toThrow(/text-conditional: give a prompt, not a class/);
    await expect(engine.generate({})).rejects.toThrow(/needs a prompt/);
  });
});
