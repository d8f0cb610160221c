import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { splitMnist } from '../../src/data/mnist.js';
import {
  CLASSIFIER_WEIGHTS, DigitClassifier, digitAccuracy, digitImages, initClassifierWeights, saveClassifier, trainClassifier, type TrainedClassifier,
} from '../../src/eval/classifier.js';

// A tiny run: one epoch over 1,000 digits in 20 steps of 50.
const TINY = { epochs: 1, trainDigits: 1000, batch: 50, warmupSteps: 5, seed: 7, threads: 1 } as const;

describe('digit classifier', () => {
  let trained: TrainedClassifier;
  beforeAll(async () => {
    trained = await trainClassifier(TINY);
  });

  it('a tiny training run beats chance on the held-out digits by far', async () => {
    const untrained = await DigitClassifier.fromWeights(initClassifierWeights(TINY.seed), { threads: 1 });
    const before = await digitAccuracy(untrained, splitMnist().heldOut);
    await untrained.release();
    expect(trained.epochs).toHaveLength(1);
    expect(trained.heldOutAccuracy).toBeGreaterThan(0.3);
    expect(trained.heldOutAccuracy).toBeGreaterThan(before + 0.1);
    expect(trained.epochs[0]!.meanLoss).toBeLessThan(Math.log(10));
  });

  it('is deterministic from the seed', async () => {
    const again = await trainClassifier(TINY);
    for (const [name, t] of trained.weights) expect(again.weights.get(name)!.data).toEqual(t.data);
    const other = await trainClassifier({ ...TINY, seed: 8 });
    expect(other.weights.get('fc2.weight')!.data).not.toEqual(trained.weights.get('fc2.weight')!.data);
  });

  it('classifies in padded batches: outputs do not depend on the batch a digit lands in', async () => {
    const c = await DigitClassifier.fromWeights(trained.weights, { threads: 1 }, 8);
    const digits = splitMnist().heldOut.slice(0, 13);
    const { images } = digitImages(digits);
    const all = await c.classify(images, 13);
    const first = await c.classify(images.subarray(0, 3 * 32 * 32), 3);
    await c.release();
    expect(all.logits).toHaveLength(13 * 10);
    expect(all.features).toHaveLength(13 * 128);
    for (let i = 0; i < 3 * 10; i++) expect(first.logits[i]).toBeCloseTo(all.logits[i]!, 5);
    for (let i = 0; i < 3 * 128; i++) expect(first.features[i]).toBeCloseTo(all.features[i]!, 5);
    for (let i = 0; i < 13; i++) {
      const row = all.probs.subarray(i * 10, (i + 1) * 10);
      expect(row.reduce((s, v) => s + v, 0)).toBeCloseTo(1, 5);
      expect(all.labels[i]).toBe(row.indexOf(Math.max(...row)));
    }
    await expect(c.classify(images, 12)).rejects.toThrow(/expected 12 images/);
  });

  it('saves float16 weights with a manifest, loads them back and refuses a tampered file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'classifier-'));
    const saved = await saveClassifier(dir, trained, 1);
    expect(Math.abs(saved.heldOutAccuracy - trained.heldOutAccuracy)).toBeLessThan(0.02);
    const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as { files: Record<string, string>; provenance: Record<string, unknown> };
    expect(manifest.files[CLASSIFIER_WEIGHTS]).toBe(saved.sha256);
    expect(manifest.provenance).toMatchObject({ seed: 7, epochs: 1, batch: 50, trainDigits: 1000, heldOutAccuracy: saved.heldOutAccuracy, weightsDtype: 'float16' });
    expect(manifest.provenance).not.toHaveProperty('threads');
    const loaded = await DigitClassifier.load(dir, { threads: 1 });
    expect(await digitAccuracy(loaded, splitMnist().heldOut)).toBe(saved.heldOutAccuracy);
    await loaded.release();

    const bytes = await readFile(join(dir, CLASSIFIER_WEIGHTS));
    bytes[bytes.length - 1]! ^= 0xff;
    await writeFile(join(dir, CLASSIFIER_WEIGHTS), bytes);
    await expect(DigitClassifier.load(dir, { threads: 1 })).rejects.toThrow(/sha256/);
  });
});
