/**
 * Classifier-free guidance on host memory.
 *
 * Batch convention (CFG_BATCH_ORDER): the model runs on 2*batch rows, rows [0, batch) conditional and rows
 * [batch, 2*batch) unconditional, as in DiT's sample.py (`y = cat([y, y_null])`, `cond, uncond = split(eps)`).
 * Each output row is [outChannels, spatial]; with learned sigma (DiT, PixArt-alpha) outChannels =
 * 2 * latentChannels and the trailing variance channels are dropped, since DDIM / DPM++ use only eps.
 */

/** Order of the two halves of a CFG batch: conditional rows first, then unconditional. */
export const CFG_BATCH_ORDER = ['cond', 'uncond'] as const;

function checkDims(what: string, dims: Record<string, number>): void {
  for (const [k, v] of Object.entries(dims)) {
    if (!Number.isSafeInteger(v) || v < 1) throw new Error(`${what}: ${k} must be a positive integer, got ${v}`);
  }
}

function checkLayout(what: string, out: Float32Array, rows: number, outChannels: number, latentChannels: number, spatial: number): void {
  if (latentChannels > outChannels) {
    throw new Error(`${what}: latentChannels (${latentChannels}) exceeds outChannels (${outChannels})`);
  }
  const want = rows * outChannels * spatial;
  if (out.length !== want) {
    throw new Error(`${what}: expected ${rows} x ${outChannels} x ${spatial} = ${want} elements, got ${out.length}`);
  }
}

/**
 * eps [batch, latentChannels, spatial] = uncond + scale * (cond - uncond), from a model output of
 * 2*batch rows in CFG_BATCH_ORDER.
 *
 * `guidedChannels` (default: all latent channels) exists for exact reproduction of DiT's
 * `forward_with_cfg`, which guides only the first 3 of 4 channels "for exact reproducibility"; the other
 * channels then take the conditional prediction, as the first half of DiT's output does.
 */
export function splitGuided(
  out: Float32Array,
  batch: number,
  outChannels: number,
  latentChannels: number,
  spatial: number,
  scale: number,
  guidedChannels = latentChannels,
): Float32Array {
  checkDims('splitGuided', { batch, outChannels, latentChannels, spatial });
  checkLayout('splitGuided', out, 2 * batch, outChannels, latentChannels, spatial);
  if (!Number.isFinite(scale)) throw new Error(`splitGuided: scale must be finite, got ${scale}`);
  if (!Number.isInteger(guidedChannels) || guidedChannels < 0 || guidedChannels > latentChannels) {
    throw new Error(`splitGuided: guidedChannels must be an integer in [0, ${latentChannels}], got ${guidedChannels}`);
  }
  const rowIn = outChannels * spatial;
  const uncondBase = batch * rowIn;
  const eps = new Float32Array(batch * latentChannels * spatial);
  let o = 0;
  for (let b = 0; b < batch; b++) {
    for (let c = 0; c < latentChannels; c++) {
      const ci = b * rowIn + c * spatial;
      const ui = uncondBase + ci;
      const guided = c < guidedChannels;
      for (let s = 0; s < spatial; s++) {
        const cond = out[ci + s]!;
        const uncond = out[ui + s]!;
        eps[o++] = guided ? uncond + scale * (cond - uncond) : cond;
      }
    }
  }
  return eps;
}

/** eps [batch, latentChannels, spatial] from an output of `batch` rows [outChannels, spatial] (no CFG / scale 1). */
export function dropLearnedSigma(
  out: Float32Array,
  batch: number,
  outChannels: number,
  latentChannels: number,
  spatial: number,
): Float32Array {
  checkDims('dropLearnedSigma', { batch, outChannels, latentChannels, spatial });
  checkLayout('dropLearnedSigma', out, batch, outChannels, latentChannels, spatial);
  const rowIn = outChannels * spatial;
  const rowOut = latentChannels * spatial;
  const eps = new Float32Array(batch * rowOut);
  for (let b = 0; b < batch; b++) eps.set(out.subarray(b * rowIn, b * rowIn + rowOut), b * rowOut);
  return eps;
}

/** The model input for a CFG pass: x concatenated with itself (both halves see the same latents). */
export function duplicateForCfg(x: Float32Array): Float32Array {
  const out = new Float32Array(2 * x.length);
  out.set(x, 0);
  out.set(x, x.length);
  return out;
}
