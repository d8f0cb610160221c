import sharp from 'sharp';
import type { HostTensor } from '../tensor/tensor.js';

/** One image [C, H, W] in [-1, 1] (C = 1 or 3) -> 8-bit PNG (or WebP). */
export async function encodeImage(img: HostTensor, format: 'png' | 'webp' = 'png'): Promise<Buffer> {
  const [c, h, w] = img.shape as [number, number, number];
  if (c !== 1 && c !== 3) throw new Error(`cannot encode an image with ${c} channels`);
  const src = img.data as Float32Array;
  const pixels = Buffer.alloc(h * w * c);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      for (let k = 0; k < c; k++) {
        const v = (src[k * h * w + y * w + x]! + 1) * 127.5;
        pixels[(y * w + x) * c + k] = Math.round(Math.min(255, Math.max(0, v)));
      }
    }
  }
  const image = sharp(pixels, { raw: { width: w, height: h, channels: c } });
  return format === 'png' ? image.png().toBuffer() : image.webp({ lossless: true }).toBuffer();
}
