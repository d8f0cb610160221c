import { describe, expect, it } from 'vitest';
import { loadMnist, splitMnist, toModelImage } from '../../src/data/mnist.js';

describe('MNIST data', () => {
  it('has 10,000 digits of every class', () => {
    const all = loadMnist();
    expect(all).toHaveLength(10_000);
    const counts = new Array<number>(10).fill(0);
    for (const d of all) counts[d.label]!++;
    expect(counts.every((c) => c > 800)).toBe(true);
    expect(all[0]!.pixels).toHaveLength(784);
  });

  it('splits 9,000 / 1,000 the same way every time, without overlap', () => {
    const a = splitMnist();
    const b = splitMnist();
    expect(a.train).toHaveLength(9000);
    expect(a.heldOut).toHaveLength(1000);
    expect(a.heldOut.map((d) => d.label)).toEqual(b.heldOut.map((d) => d.label));
    const train = new Set(a.train.map((d) => d.pixels));
    expect(a.heldOut.some((d) => train.has(d.pixels))).toBe(false);
    expect(new Set(a.heldOut.map((d) => d.label)).size).toBe(10);
    expect(splitMnist(1).heldOut.map((d) => d.label)).not.toEqual(a.heldOut.map((d) => d.label));
  });

  it('pads to 32x32 in [-1, 1]', () => {
    const img = toModelImage(loadMnist()[5]!.pixels);
    expect(img).toHaveLength(1024);
    expect(img[0]).toBe(-1);
    expect(Math.max(...img)).toBeLessThanOrEqual(1);
    expect(Math.max(...img)).toBeGreaterThan(0.5);
  });
});
