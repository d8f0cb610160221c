import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { imageGrid } from '../../src/engine/grid.js';
import { tensor } from '../../src/tensor/tensor.js';

describe('sample grid', () => {
  it('lays rows of images out with a border and scales them', async () => {
    const black = tensor('float32', [1, 4, 4], new Array<number>(16).fill(-1));
    const white = tensor('float32', [1, 4, 4], new Array<number>(16).fill(1));
    const png = await imageGrid([[black, white, black], [white]], 2);
    const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
    expect([info.width, info.height]).toEqual([(3 * 6 + 2) * 2, (2 * 6 + 2) * 2]);
    const at = (x: number, y: number) => data[(y * info.width + x) * info.channels]!;
    expect(at(2 * 2, 2 * 2)).toBe(0); // first image: black
    expect(at((2 + 6) * 2, 2 * 2)).toBe(255); // second: white
    expect(at(0, 0)).toBe(40); // border
  });
});
