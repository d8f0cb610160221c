import { beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import { randomTensor } from '../../src/models/init.js';
import { Rng } from '../../src/tensor/rng.js';
import { tensor, type HostTensor } from '../../src/tensor/tensor.js';
import { tinyDitPackage, tinyPixArtPackage } from '../helpers/packages.js';

/** The tiny PixArt's captions: 8 tokens of 16 channels. */
const TOKENS = 8;
const CHANNELS = 16;
const ROWS = 2;

let engine: Engine;
beforeAll(async () => {
  engine = await Engine.open((await tinyPixArtPackage()).dir, { threads: 1 });
});

const base = { x: randomTensor([ROWS, 1, 8, 8], new Rng(1)), t: tensor('float32', [ROWS], [500, 20]) };
const states = (length: number) => randomTensor([ROWS, length, CHANNELS], new Rng(2)).data as Float32Array;

/** The first `keep` tokens of a caption of `length` (real in row 0, `keep - 2` real in row 1), the rest zero. */
function caption(length: number, keep: number, maskType: 'float32' | 'int64' | 'int32' | 'bool') {
  const full = states(12);
  const s = new Float32Array(ROWS * length * CHANNELS);
  const mask: number[] = [];
  for (let r = 0; r < ROWS; r++) {
    const real = r === 0 ? keep : keep - 2;
    for (let i = 0; i < Math.min(keep, length); i++) s.set(full.subarray((r * 12 + i) * CHANNELS, (r * 12 + i + 1) * CHANNELS), (r * length + i) * CHANNELS);
    for (let i = 0; i < length; i++) mask.push(i < real ? 1 : 0);
  }
  return { encoder_hidden_states: tensor('float32', [ROWS, length, CHANNELS], s), encoder_attention_mask: tensor(maskType, [ROWS, length], mask) };
}

function maxDiff(a: HostTensor, b: HostTensor): number {
  const x = a.data as Float32Array;
  const y = b.data as Float32Array;
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]! - y[i]!));
  return m;
}

describe('forward takes captions as diffusers does', () => {
  it('any mask dtype (float, int64, int32, bool) gives the same output', async () => {
    const ref = await engine.forward({ ...base, ...caption(TOKENS, 6, 'float32') });
    expect(ref.shape).toEqual([ROWS, 2, 8, 8]);
    for (const type of ['int64', 'int32', 'bool'] as const) {
      expect(maxDiff(await engine.forward({ ...base, ...caption(TOKENS, 6, type) }), ref)).toBe(0);
    }
  });

  it('a shorter caption equals it padded with masked tokens; a longer one with a masked tail agrees too', async () => {
    const padded = await engine.forward({ ...base, ...caption(TOKENS, 5, 'float32') });
    const short = await engine.forward({ ...base, ...caption(5, 5, 'int64') });
    const long = await engine.forward({ ...base, ...caption(12, 5, 'int64') });
    expect(maxDiff(short, padded)).toBe(0);
    expect(long.shape).toEqual(padded.shape);
    expect(maxDiff(long, padded)).toBeLessThan(1e-5);
    // The masked tail matters only through the mask: unmasked, the same tokens change the output.
    const unmasked = caption(12, 5, 'int64');
    unmasked.encoder_attention_mask = tensor('int64', [ROWS, 12], new Array<number>(ROWS * 12).fill(1));
    expect(maxDiff(await engine.forward({ ...base, ...unmasked }), padded)).toBeGreaterThan(1e-4);
  });

  it('refuses a mask that does not match the caption, naming both shapes', async () => {
    const bad = { ...caption(TOKENS, 6, 'int64'), encoder_attention_mask: tensor('int64', [ROWS, 5], new Array<number>(ROWS * 5).fill(1)) };
    await expect(engine.forward({ ...base, ...bad })).rejects.toMatchObject({ code: 'BAD_INPUT', message: expect.stringMatching(/"encoder_attention_mask" must be \[2, 8\] like the caption, got \[2,5\]/) });
    await expect(engine.forward({ ...base })).rejects.toMatchObject({ code: 'BAD_INPUT', message: expect.stringMatching(/"encoder_hidden_states" of shape \[2, L, C\], got none/) });
  });
});

describe('forward on a class model', () => {
  it('takes int32 labels as int64 ones', async () => {
    const dit = await Engine.open((await tinyDitPackage()).dir, { threads: 1 });
    const x = randomTensor([2, 1, 8, 8], new Rng(3));
    const t = tensor('int64', [2], [900, 10]);
    const a = await dit.forward({ x, t, y: tensor('int64', [2], [3, 10]) });
    const b = await dit.forward({ x, t, y: tensor('int32', [2], [3, 10]) });
    expect(maxDiff(a, b)).toBe(0);
  });
});
