/** Peak of 8-bit channels. */
const PEAK = 255;

/**
 * PSNR in dB between two same-sized RGBA images (alpha ignored): the same measure as
 * `psnr` in src/eval/metrics.ts on [-1, 1] images, up to the PNGs' 8-bit rounding.
 * Identical images give Infinity.
 */
export function psnrRgba(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length || a.length % 4 !== 0) throw new Error(`psnr: images differ in size (${a.length} vs ${b.length} values)`);
  let sum = 0;
  for (let i = 0; i < a.length; i += 4) {
    for (let c = 0; c < 3; c++) sum += (a[i + c]! - b[i + c]!) ** 2;
  }
  const mse = sum / ((a.length / 4) * 3);
  return mse === 0 ? Infinity : 10 * Math.log10((PEAK * PEAK) / mse);
}
