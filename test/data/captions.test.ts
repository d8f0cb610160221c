import { describe, expect, it } from 'vitest';
import { CAPTION_WORDS, captionFor, digitCaption, measureLayout, PLACES, randomCaptionedSample, randomCondition, renderDigit } from '../../src/data/captions.js';
import { splitMnist } from '../../src/data/mnist.js';
import { writeWordLevelTokenizer, TextTokenizer } from '../../src/models/tokenizer.js';
import { Rng } from '../../src/tensor/rng.js';

const { train } = splitMnist();

describe('caption generator', () => {
  it('says the digit, the size and the place, with synonyms, deterministically per seed', () => {
    const rng = new Rng(1);
    const captions = Array.from({ length: 200 }, () => captionFor({ label: 7, size: 'small', place: 0 }, rng));
    expect(captions.every((c) => /(7|seven)/.test(c) && /(small|tiny|little)/.test(c) && /(top|upper) left/.test(c))).toBe(true);
    expect(new Set(captions).size).toBeGreaterThan(6);
    expect(captionFor({ label: 3, size: 'large', place: 4 }, new Rng(5))).toBe(captionFor({ label: 3, size: 'large', place: 4 }, new Rng(5)));
  });

  it('every caption word is in the vocabulary (no unknown tokens)', () => {
    const tok = TextTokenizer.fromJSON(writeWordLevelTokenizer(CAPTION_WORDS));
    const rng = new Rng(2);
    for (let i = 0; i < 300; i++) {
      const s = randomCaptionedSample(train, rng);
      expect(tok.tokenIds(s.caption)).not.toContain(2); // [UNK]
    }
  });

  it('digit-only captions name just the digit, in vocabulary words, in the share asked for', () => {
    const tok = TextTokenizer.fromJSON(writeWordLevelTokenizer(CAPTION_WORDS));
    const rng = new Rng(6);
    const only = Array.from({ length: 100 }, () => digitCaption(4, rng));
    expect(only.every((c) => /^(a|the digit|the number) (4|four)$/.test(c))).toBe(true);
    expect(new Set(only).size).toBe(6);
    for (const c of only) expect(tok.tokenIds(c)).not.toContain(2);
    const mixed = Array.from({ length: 400 }, () => randomCaptionedSample(train, rng, 0.25));
    const digitOnly = mixed.filter((s) => !/ (in|at) the /.test(s.caption));
    expect(digitOnly.length / 400).toBeGreaterThan(0.18);
    expect(digitOnly.length / 400).toBeLessThan(0.32);
    // Without digit-only captions the random stream is the one it always was.
    expect(randomCaptionedSample(train, new Rng(9), 0)).toEqual(randomCaptionedSample(train, new Rng(9)));
  });

  it('random conditions for image-free work: a class for class models, a varied caption for text models', () => {
    const rng = new Rng(3);
    const classes = Array.from({ length: 100 }, () => randomCondition(10, rng));
    expect(new Set(classes.map((c) => ('classLabel' in c ? c.classLabel : -1)))).toEqual(new Set([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]));
    const tok = TextTokenizer.fromJSON(writeWordLevelTokenizer(CAPTION_WORDS));
    const prompts = Array.from({ length: 100 }, () => randomCondition(0, rng)).map((c) => ('prompt' in c ? c.prompt : ''));
    expect(new Set(prompts).size).toBeGreaterThan(50);
    for (const p of prompts) expect(tok.tokenIds(p)).not.toContain(2);
    for (const digit of ['0', 'zero', '9', 'nine']) expect(prompts.some((p) => p.split(' ').includes(digit))).toBe(true);
  });

  it('renders the digit where the caption says, and measureLayout reads it back', () => {
    const rng = new Rng(3);
    let right = 0;
    for (let i = 0; i < 300; i++) {
      const s = randomCaptionedSample(train, rng);
      const m = measureLayout(s.image);
      if (m.size === s.size && m.place === s.place) right++;
    }
    expect(right / 300).toBeGreaterThan(0.97);
    const img = renderDigit(train[0]!, 'small', PLACES.indexOf('bottom right'));
    expect(measureLayout(img)).toMatchObject({ size: 'small', place: 8 });
    expect(img[0]).toBe(-1);
  });
});
