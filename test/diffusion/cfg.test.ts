import { describe, it, expect } from 'vitest';
import { CFG_BATCH_ORDER, dropLearnedSigma, duplicateForCfg, splitGuided } from '../../src/diffusion/cfg.js';

// batch 2, latentChannels 2, outChannels 4 (learned sigma), spatial 3. Element value encodes its position:
// sign +/- for cond/uncond half, then row, channel, position, so a wrong index shows up in the numbers.
const batch = 2;
const latentC = 2;
const outC = 4;
const spatial = 3;
function modelOut(): Float32Array {
  const out: number[] = [];
  for (const half of [1, -1]) // cond rows first, then uncond (CFG_BATCH_ORDER)
    for (let b = 0; b < batch; b++)
      for (let c = 0; c < outC; c++)
        for (let s = 0; s < spatial; s++) out.push(half * (100 * (b + 1) + 10 * c + s));
  return Float32Array.from(out);
}

describe('CFG helpers', () => {
  it('names the batch order', () => {
    expect(CFG_BATCH_ORDER).toEqual(['cond', 'uncond']);
  });

  it('splitGuided: uncond + scale * (cond - uncond) on the eps channels, variance channels dropped', () => {
    const eps = splitGuided(modelOut(), batch, outC, latentC, spatial, 1.5);
    // cond = v, uncond = -v -> -v + 1.5 * 2v = 2v
    const want: number[] = [];
    for (let b = 0; b < batch; b++)
      for (let c = 0; c < latentC; c++)
        for (let s = 0; s < spatial; s++) want.push(2 * (100 * (b + 1) + 10 * c + s));
    expect(Array.from(eps)).toEqual(want);
    expect(Array.from(eps.slice(0, 6))).toEqual([200, 202, 204, 220, 222, 224]);
  });

  it('splitGuided on a tiny hand-made example (batch 1, 1 latent channel + 1 variance channel, spatial 2)', () => {
    // rows: cond [eps 1, 2 | var 9, 9], uncond [eps 0.5, 4 | var 7, 7]
    const out = Float32Array.from([1, 2, 9, 9, 0.5, 4, 7, 7]);
    expect(Array.from(splitGuided(out, 1, 2, 1, 2, 4))).toEqual([0.5 + 4 * 0.5, 4 + 4 * -2]); // [2.5, -4]
    expect(Array.from(splitGuided(out, 1, 2, 1, 2, 1))).toEqual([1, 2]); // scale 1 = cond
    expect(Array.from(splitGuided(out, 1, 2, 1, 2, 0))).toEqual([0.5, 4]); // scale 0 = uncond
    // Without learned sigma (outChannels == latentChannels).
    expect(Array.from(splitGuided(Float32Array.from([1, 2, 0.5, 4]), 1, 1, 1, 2, 3))).toEqual([2, -2]);
  });

  it('splitGuided with guidedChannels (DiT forward_with_cfg guides only the first 3 channels)', () => {
    const eps = splitGuided(modelOut(), batch, outC, latentC, spatial, 1.5, 1);
    // Channel 0 guided (2v), channel 1 takes the conditional value (v).
    expect(Array.from(eps.slice(0, 6))).toEqual([200, 202, 204, 110, 111, 112]);
    expect(Array.from(eps.slice(6, 12))).toEqual([400, 402, 404, 210, 211, 212]);
  });

  it('computes in float64 and rounds once to float32', () => {
    const out = Float32Array.from([0.1, 0.3]);
    const v = 0.3 + 7.5 * (Math.fround(0.1) - Math.fround(0.3)) + (Math.fround(0.3) - 0.3);
    expect(splitGuided(out, 1, 1, 1, 1, 7.5)[0]).toBe(Math.fround(v));
  });

  it('dropLearnedSigma keeps the first latentChannels of each row', () => {
    const out = modelOut().slice(0, batch * outC * spatial); // just the cond half: a plain batch of 2
    const eps = dropLearnedSigma(out, batch, outC, latentC, spatial);
    expect(Array.from(eps)).toEqual([100, 101, 102, 110, 111, 112, 200, 201, 202, 210, 211, 212]);
    expect(Array.from(dropLearnedSigma(Float32Array.from([1, 2, 3]), 1, 1, 1, 3))).toEqual([1, 2, 3]);
  });

  it('duplicateForCfg concatenates x with itself', () => {
    const x = Float32Array.from([1, -2, 3.5]);
    expect(Array.from(duplicateForCfg(x))).toEqual([1, -2, 3.5, 1, -2, 3.5]);
    expect(duplicateForCfg(new Float32Array(0)).length).toBe(0);
  });

  it('validates shapes', () => {
    const out = modelOut();
    expect(() => splitGuided(out, batch, outC, latentC, spatial + 1, 1.5)).toThrow(/expected 4 x 4 x 4 = 64 elements, got 48/);
    expect(() => splitGuided(out, batch, outC, 5, spatial, 1.5)).toThrow(/latentChannels \(5\) exceeds outChannels/);
    expect(() => splitGuided(out, 0, outC, latentC, spatial, 1.5)).toThrow(/batch must be a positive integer/);
    expect(() => splitGuided(out, batch, outC, latentC, spatial, NaN)).toThrow(/scale/);
    expect(() => splitGuided(out, batch, outC, latentC, spatial, 1, 3)).toThrow(/guidedChannels/);
    expect(() => dropLearnedSigma(out, batch, outC, latentC, spatial)).toThrow(/expected 2 x 4 x 3 = 24 elements, got 48/);
  });
});
