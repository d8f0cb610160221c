import sharp from 'sharp';
import type { HostTensor } from '../tensor/tensor.js';

/** Rows of [C, H, W] images in [-1, 1] as one PNG, each pixel drawn `scale` x `scale`. */
export async function imageGrid(rows: HostTensor[][], scale = 2): Promise<Buffer> {
  const [c, h, w] = rows[0]![0]!.shape as [number, number, number];
  const cols = Math.max(...rows.map((r) => r.length));
  const pad = 2;
  const width = cols * (w + pad) + pad;
  const height = rows.length * (h + pad) + pad;
  const pixels = Buffer.alloc(width * height * c, 40);
  rows.forEach((row, r) => row.forEach((img, k) => {
    const src = img.data as Float32Array;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        for (let ch = 0; ch < c; ch++) {
          const v = Math.round(Math.min(255, Math.max(0, (src[ch * h * w + y * w + x]! + 1) * 127.5)));
          pixels[((pad + r * (h + pad) + y) * width + pad + k * (w + pad) + x) * c + ch] = v;
        }
      }
    }
  }));
  return sharp(pixels, { raw: { width, height, channels: c as 1 | 3 } }).resize(width * scale, height * scale, { kernel: 'nearest' }).png().toBuffer();
}
