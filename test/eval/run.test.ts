import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { writeModelPackage } from '../../src/engine/package.js';
import { saveClassifier, trainClassifier } from '../../src/eval/classifier.js';
import { CAPTION_WORDS, measureLayout, PLACES, randomCaptionedSample } from '../../src/data/captions.js';
import { splitMnist } from '../../src/data/mnist.js';
import { DigitClassifier } from '../../src/eval/classifier.js';
import { accuracy } from '../../src/eval/metrics.js';
import { evaluate, planRequests, readCanvases } from '../../src/eval/run.js';
import { Rng } from '../../src/tensor/rng.js';
import { tinyPixArtPackage } from '../helpers/packages.js';
import { initDitWeights } from '../../src/models/dit-init.js';
import { TINY_DIT } from '../helpers/dit-checkpoint.js';
import { tinyMnistDitPackage } from './helpers.js';

describe('planRequests', () => {
  it('balances the classes, respects the batch and derives seeds deterministically', () => {
    const plan = planRequests(23, 2, 5);
    expect(plan.reduce((s, r) => s + r.n, 0)).toBe(23);
    expect(plan.every((r) => r.n >= 1 && r.n <= 2)).toBe(true);
    const perClass = Array.from({ length: 10 }, (_, c) => plan.filter((r) => r.classLabel === c).reduce((s, r) => s + r.n, 0));
    expect(perClass).toEqual([3, 3, 3, 2, 2, 2, 2, 2, 2, 2]);
    expect(plan.slice(0, 10).map((r) => r.classLabel)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(new Set(plan.map((r) => r.seed)).size).toBe(plan.length);
    expect(planRequests(23, 2, 5)).toEqual(plan);
    expect(planRequests(23, 2, 6)[0]!.seed).not.toBe(plan[0]!.seed);
    expect(() => planRequests(20, 9, 0)).toThrow(/batch/);
  });

  it('gives text models captions that state the digit, a size and a place, covering every layout', () => {
    const plan = planRequests(360, 2, 5, true);
    expect(plan.map((r) => r.classLabel)).toEqual(planRequests(360, 2, 5).map((r) => r.classLabel));
    for (const r of plan) {
      expect(r.layout!.label).toBe(r.classLabel);
      expect(r.prompt).toMatch(new RegExp(`(${r.classLabel}|${['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine'][r.classLabel]})`));
      expect(r.prompt).toMatch(r.layout!.size === 'small' ? /small|tiny|little/ : /large|big|huge/);
    }
    expect(new Set(plan.map((r) => `${r.layout!.size}/${r.layout!.place}`)).size).toBe(2 * PLACES.length);
  });
});

describe('reading text-model canvases', () => {
  it('finds real digits drawn at any size and place, and the classifier reads them cropped back', async () => {
    const { heldOut } = splitMnist();
    const rng = new Rng(4);
    const samples = Array.from({ length: 300 }, () => randomCaptionedSample(heldOut, rng));
    const canvases = new Float32Array(samples.length * 1024);
    samples.forEach((s, i) => canvases.set(s.image, i * 1024));
    const { layouts, digits } = readCanvases(canvases, samples.length);
    expect(layouts.filter((l, i) => l.place === samples[i]!.place && l.size === samples[i]!.size).length / samples.length).toBeGreaterThan(0.97);
    expect(layouts[0]).toEqual((({ size, place }) => ({ size, place }))(measureLayout(samples[0]!.image)));
    const classifier = await DigitClassifier.load(undefined, { threads: 1 });
    const labels = (await classifier.classify(digits, samples.length)).labels;
    await classifier.release();
    // Small digits lose detail at 9 px; the read-back still keeps most of them legible.
    expect(accuracy(labels, samples.map((s) => s.label))).toBeGreaterThan(0.9);
  });
});

describe('evaluate', () => {
  let model: string;
  let classifier: string;
  beforeAll(async () => {
    classifier = await mkdtemp(join(tmpdir(), 'eval-classifier-'));
    await saveClassifier(classifier, await trainClassifier({ epochs: 1, trainDigits: 1000, batch: 50, warmupSteps: 5, seed: 1, threads: 1 }), 1);
    model = await tinyMnistDitPackage();
  });

  it('scores samples and compares cached with uncached generation', async () => {
    const r = await evaluate({ model, n: 20, batch: 4, cache: 'fora:2', seed: 3, classifier, threads: 1 });
    expect(r).toMatchObject({ model: 'tiny-mnist-dit', n: 20, steps: 2, sampler: 'ddim', cfg: 1, cache: 'fora:2', seed: 3 });
    expect(r.accuracy).toBeGreaterThanOrEqual(0);
    expect(r.accuracy).toBeLessThanOrEqual(1);
    // Noise from random weights is far from real digits; real train digits are not.
    expect(r.fidFloor).toBeGreaterThan(0);
    expect(r.fid).toBeGreaterThan(r.fidFloor);
    expect(r.isScore).toBeGreaterThanOrEqual(1);
    expect(r.isScore).toBeLessThanOrEqual(10);
    // FORA(2) over 2 steps reuses everything at the second step.
    expect(r.cur).toBeCloseTo(0.5, 12);
    expect(Number.isFinite(r.psnr)).toBe(true);
    expect(r.ssim).toBeLessThan(1);
    expect(r.seconds).toBeGreaterThan(0);

    const uncached = await evaluate({ model, n: 20, batch: 4, seed: 3, classifier, threads: 1 });
    expect(uncached.cache).toBe('none');
    expect(uncached.psnr).toBeUndefined();
    expect(uncached.cur).toBeUndefined();
    // Same seeds, same samples: the uncached run is reproducible, and its floor is the same.
    expect((await evaluate({ model, n: 20, batch: 4, seed: 3, classifier, threads: 1 })).fid).toBe(uncached.fid);
    expect(uncached.fidFloor).toBe(r.fidFloor);
  });

  it('refuses models whose images the classifier cannot read', async () => {
    const small = (await writeModelPackage(await mkdtemp(join(tmpdir(), 'eval-small-')), {
      id: 'tiny-8px', family: 'dit', layout: 'diffusers', config: { ...TINY_DIT, inChannels: 1 },
      defaults: { sampler: 'ddim', steps: 2, cfg: 1 },
    }, initDitWeights({ ...TINY_DIT, inChannels: 1 }, 2, 0.8))).dir;
    await expect(evaluate({ model: small, n: 10, classifier, threads: 1 })).rejects.toThrow(/1x32x32/);
  });

  it('scores a text model for digit, position and size against its captions', async () => {
    const text = (await tinyPixArtPackage(5, 'tiny-mnist-pixart', { sampleSize: 32, patchSize: 8, words: CAPTION_WORDS })).dir;
    const r = await evaluate({ model: text, n: 20, batch: 4, steps: 2, seed: 1, classifier, threads: 1 });
    expect(r).toMatchObject({ model: 'tiny-mnist-pixart', n: 20, steps: 2, sampler: 'dpmpp' });
    for (const key of ['accuracy', 'positionAccuracy', 'sizeAccuracy'] as const) {
      expect(r[key]).toBeGreaterThanOrEqual(0);
      expect(r[key]).toBeLessThanOrEqual(1);
    }
    expect(r.fid).toBeGreaterThan(r.fidFloor);
  });
});
