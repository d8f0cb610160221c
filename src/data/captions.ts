import { Rng } from '../tensor/rng.js';
import { DIGIT_CLASSES, MNIST_SIDE, PADDED_SIDE, type Digit } from './mnist.js';

/**
 * Captioned digits for the text-to-image model: a digit drawn at a stated size and place on
 * a 32x32 canvas, with a caption that says so in a few words ("a small 7 in the top left
 * corner", "a large seven in the center").
 */
export const CANVAS = PADDED_SIDE;

export type DigitSize = 'small' | 'large';
/** Scale of the 28x28 MNIST image: its ~20 px of ink become ~9 px (small) or ~16 px (large). */
export const SIZE_SCALE: Record<DigitSize, number> = { small: 0.45, large: 0.8 };

/** Places on a 3x3 grid, row-major: 0 = top left ... 4 = center ... 8 = bottom right. */
export const PLACES = ['top left', 'top', 'top right', 'left', 'center', 'right', 'bottom left', 'bottom', 'bottom right'] as const;

const DIGIT_WORDS = ['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine'];
const SIZE_WORDS: Record<DigitSize, string[]> = { small: ['small', 'tiny', 'little'], large: ['large', 'big', 'huge'] };
/** Ways to say each place; corners also as "upper"/"lower". */
const PLACE_WORDS: string[][] = [
  ['top left corner', 'upper left corner', 'top left'],
  ['top', 'top middle', 'upper middle'],
  ['top right corner', 'upper right corner', 'top right'],
  ['left', 'middle left', 'left side'],
  ['center', 'middle'],
  ['right', 'middle right', 'right side'],
  ['bottom left corner', 'lower left corner', 'bottom left'],
  ['bottom', 'bottom middle', 'lower middle'],
  ['bottom right corner', 'lower right corner', 'bottom right'],
];

/** Every word a caption can use (the word-level tokenizer's vocabulary). */
export const CAPTION_WORDS: string[] = [...new Set([
  'a', 'an', 'the', 'in', 'at', 'on', 'digit', 'number',
  ...DIGIT_WORDS, ...DIGIT_WORDS.map((_, i) => String(i)),
  ...Object.values(SIZE_WORDS).flat(),
  ...PLACE_WORDS.flat().flatMap((p) => p.split(' ')),
])];

export interface Layout {
  label: number;
  size: DigitSize;
  place: number;
}

export function captionFor(layout: Layout, rng: Rng): string {
  const pick = <T>(xs: readonly T[]) => xs[rng.int(xs.length)]!;
  const digit = rng.uniform() < 0.5 ? String(layout.label) : DIGIT_WORDS[layout.label]!;
  const size = pick(SIZE_WORDS[layout.size]);
  const place = pick(PLACE_WORDS[layout.place]!);
  const article = /^[aeiou8]/.test(size) ? 'an' : 'a';
  return rng.uniform() < 0.8 ? `${article} ${size} ${digit} in the ${place}` : `${article} ${size} ${digit} at the ${place}`;
}

/**
 * A caption that names only the digit ("a 7", "the number seven"): the image is still drawn
 * at a random size and place. Mixed into training, these make the digit word one of two or
 * three tokens, so cross-attention cannot learn the layout words and ignore it.
 */
export function digitCaption(label: number, rng: Rng): string {
  const digit = rng.uniform() < 0.5 ? String(label) : DIGIT_WORDS[label]!;
  const lead = ['a', 'the digit', 'the number'][rng.int(3)]!;
  return `${lead} ${digit}`;
}

/** Top-left corner of the scaled digit box for a place. */
export function boxOrigin(size: DigitSize, place: number): { x: number; y: number; side: number } {
  const side = MNIST_SIDE * SIZE_SCALE[size];
  const offsets = [0, (CANVAS - side) / 2, CANVAS - side];
  return { x: offsets[place % 3]!, y: offsets[Math.floor(place / 3)]!, side };
}

/** Renders a digit (bilinear) into a 32x32 canvas in [-1, 1]. */
export function renderDigit(digit: Digit, size: DigitSize, place: number, out = new Float32Array(CANVAS * CANVAS), offset = 0): Float32Array {
  const { x: ox, y: oy, side } = boxOrigin(size, place);
  const scale = MNIST_SIDE / side;
  const at = (x: number, y: number) => (x < 0 || y < 0 || x >= MNIST_SIDE || y >= MNIST_SIDE ? 0 : digit.pixels[y * MNIST_SIDE + x]!);
  for (let y = 0; y < CANVAS; y++) {
    for (let x = 0; x < CANVAS; x++) {
      // Centre of the canvas pixel, in source coordinates.
      const sx = (x + 0.5 - ox) * scale - 0.5;
      const sy = (y + 0.5 - oy) * scale - 0.5;
      const x0 = Math.floor(sx);
      const y0 = Math.floor(sy);
      const fx = sx - x0;
      const fy = sy - y0;
      const v = (1 - fy) * ((1 - fx) * at(x0, y0) + fx * at(x0 + 1, y0)) + fy * ((1 - fx) * at(x0, y0 + 1) + fx * at(x0 + 1, y0 + 1));
      out[offset + y * CANVAS + x] = Math.min(1, v) * 2 - 1;
    }
  }
  return out;
}

/**
 * The inverse of renderDigit: the box of (size, place) resampled back into the 32x32 frame of
 * toModelImage (a 28x28 digit with a 2-pixel border), so the MNIST classifier can read a digit
 * drawn anywhere on the canvas. Pixels outside the canvas are background (-1).
 */
export function cropDigit(image: Float32Array, size: DigitSize, place: number, out = new Float32Array(PADDED_SIDE * PADDED_SIDE), offset = 0): Float32Array {
  const { x: ox, y: oy, side } = boxOrigin(size, place);
  const pad = (PADDED_SIDE - MNIST_SIDE) / 2;
  const step = side / MNIST_SIDE;
  const at = (x: number, y: number) => (x < 0 || y < 0 || x >= CANVAS || y >= CANVAS ? -1 : image[y * CANVAS + x]!);
  for (let y = 0; y < PADDED_SIDE; y++) {
    for (let x = 0; x < PADDED_SIDE; x++) {
      // Centre of the MNIST pixel, in canvas coordinates.
      const cx = (x - pad + 0.5) * step + ox - 0.5;
      const cy = (y - pad + 0.5) * step + oy - 0.5;
      const x0 = Math.floor(cx);
      const y0 = Math.floor(cy);
      const fx = cx - x0;
      const fy = cy - y0;
      out[offset + y * PADDED_SIDE + x] = (1 - fy) * ((1 - fx) * at(x0, y0) + fx * at(x0 + 1, y0)) + fy * ((1 - fx) * at(x0, y0 + 1) + fx * at(x0 + 1, y0 + 1));
    }
  }
  return out;
}

export interface CaptionedSample extends Layout {
  caption: string;
  image: Float32Array;
}

/** A random size and place for a digit of class `label`. */
export function randomLayout(label: number, rng: Rng): Layout {
  return { label, size: rng.uniform() < 0.5 ? 'small' : 'large', place: rng.int(PLACES.length) };
}

/**
 * A random condition for image-free work (router training, TeaCache calibration): a class
 * label, or for a text model (no classes) the caption of a random digit, size and place.
 */
export function randomCondition(numClasses: number, rng: Rng): { classLabel: number } | { prompt: string } {
  if (numClasses) return { classLabel: rng.int(numClasses) };
  return { prompt: captionFor(randomLayout(rng.int(DIGIT_CLASSES), rng), rng) };
}

/**
 * A random digit at a random size and place, with a caption: one that names only the digit
 * with probability `digitOnly` (see digitCaption), else one that states size and place too.
 */
export function randomCaptionedSample(digits: readonly Digit[], rng: Rng, digitOnly = 0): CaptionedSample {
  const digit = digits[rng.int(digits.length)]!;
  const layout = randomLayout(digit.label, rng);
  const caption = digitOnly > 0 && rng.uniform() < digitOnly ? digitCaption(layout.label, rng) : captionFor(layout, rng);
  return { ...layout, caption, image: renderDigit(digit, layout.size, layout.place) };
}

/**
 * Where the ink of a generated image is: its size class (from the ink's extent) and the
 * nearest place (centre of mass vs the expected box centres for that size). The CLIP-score
 * stand-in compares these with what the caption asked for.
 */
export function measureLayout(image: Float32Array): { size: DigitSize; place: number; box: { x0: number; y0: number; x1: number; y1: number } } {
  let mass = 0;
  let cx = 0;
  let cy = 0;
  let x0 = CANVAS, y0 = CANVAS, x1 = -1, y1 = -1;
  for (let y = 0; y < CANVAS; y++) {
    for (let x = 0; x < CANVAS; x++) {
      const ink = Math.max(0, (image[y * CANVAS + x]! + 1) / 2);
      if (ink > 0.3) {
        x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x); y1 = Math.max(y1, y);
      }
      mass += ink;
      cx += ink * (x + 0.5);
      cy += ink * (y + 0.5);
    }
  }
  cx /= Math.max(mass, 1e-9);
  cy /= Math.max(mass, 1e-9);
  // Ink of a small digit spans ~9 px, of a large one ~16 px: split at the midpoint.
  const extent = Math.max(x1 - x0, y1 - y0) + 1;
  const size: DigitSize = extent >= 12.5 ? 'large' : 'small';
  let place = 0;
  let best = Infinity;
  for (let p = 0; p < PLACES.length; p++) {
    const { x, y, side } = boxOrigin(size, p);
    const d = (x + side / 2 - cx) ** 2 + (y + side / 2 - cy) ** 2;
    if (d < best) [best, place] = [d, p];
  }
  return { size, place, box: { x0, y0, x1, y1 } };
}
