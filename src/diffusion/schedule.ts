/**
 * Noise schedule and timestep spacing of the DiT / ADM (guided-diffusion) reference, reproduced in
 * float64 so that the host-side numbers match the Python reference bit for bit where that is cheap.
 */

/**
 * DiT defaults. Source: DiT `diffusion/__init__.py` `create_diffusion(timestep_respacing, noise_schedule="linear",
 * diffusion_steps=1000)` -> `gaussian_diffusion.get_named_beta_schedule("linear", 1000)`, whose betas are
 * `np.linspace(scale * 0.0001, scale * 0.02, 1000, dtype=np.float64)` with `scale = 1000 / 1000 = 1`.
 * PixArt-alpha trains with the same IDDPM code and the same linear 1000-step schedule.
 */
export const DIT_NUM_TRAIN_STEPS = 1000;
export const DIT_BETA_START = 1e-4;
export const DIT_BETA_END = 0.02;

function checkTrainSteps(numTrainSteps: number): void {
  if (!Number.isSafeInteger(numTrainSteps) || numTrainSteps < 1) {
    throw new Error(`numTrainSteps must be a positive integer, got ${numTrainSteps}`);
  }
}

/**
 * Linear betas exactly as `np.linspace(betaStart, betaEnd, numTrainSteps)` computes them:
 * `i * step + start` with `step = (end - start) / (n - 1)`, and the last element set to `end`.
 */
export function linearBetas(
  numTrainSteps = DIT_NUM_TRAIN_STEPS,
  betaStart = DIT_BETA_START,
  betaEnd = DIT_BETA_END,
): Float64Array {
  checkTrainSteps(numTrainSteps);
  if (!(betaStart > 0 && betaEnd < 1 && betaStart <= betaEnd)) {
    throw new Error(`betas need 0 < betaStart <= betaEnd < 1, got ${betaStart}, ${betaEnd}`);
  }
  const betas = new Float64Array(numTrainSteps);
  if (numTrainSteps === 1) {
    betas[0] = betaStart; // np.linspace(a, b, 1) == [a]
    return betas;
  }
  const step = (betaEnd - betaStart) / (numTrainSteps - 1);
  for (let i = 0; i < numTrainSteps; i++) betas[i] = i * step + betaStart;
  betas[numTrainSteps - 1] = betaEnd;
  return betas;
}

/** `np.cumprod(1 - betas)`: a sequential float64 product, like numpy's multiply.accumulate. */
export function alphasCumprod(betas: ArrayLike<number>): Float64Array {
  const out = new Float64Array(betas.length);
  let acc = 1;
  for (let i = 0; i < betas.length; i++) {
    acc *= 1 - betas[i]!;
    out[i] = acc;
  }
  return out;
}

/** Python 3 `round(x)` for a float: nearest integer, exact halves to even (banker's rounding). */
export function pyRound(x: number): number {
  const f = Math.floor(x);
  const diff = x - f; // exact for |x| < 2^52
  if (diff < 0.5) return f;
  if (diff > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * The model timesteps of a `steps`-step sampler, in sampling order (descending), as DiT's
 * `space_timesteps(numTrainSteps, str(steps))` picks them (one section, first and last included).
 *
 * The reference accumulates `cur_idx += frac_stride` in float64 and rounds each partial sum with
 * Python's `round`; we do the same. This is NOT always `round(i * (n - 1) / (steps - 1))`: for some
 * step counts (21, 23, 27, 35, ...) an exact .5 of the closed form becomes x.4999... after the repeated
 * additions (e.g. steps = 21 takes 499, not 500), and the reference's choice is the one that matters.
 *
 * steps = 1: the reference gives [0] (its stride falls back to 1 and it takes index 0), which would run
 * the single step from pure noise as if it were the nearly clean t = 0. We return [numTrainSteps - 1]
 * instead, so a one-step sampler denoises from the fully noised end (alpha_bar -> 1 after it).
 */
export function spacedTimesteps(steps: number, numTrainSteps = DIT_NUM_TRAIN_STEPS): number[] {
  checkTrainSteps(numTrainSteps);
  if (!Number.isSafeInteger(steps) || steps < 1 || steps > numTrainSteps) {
    throw new Error(`steps must be an integer in [1, ${numTrainSteps}], got ${steps}`);
  }
  if (steps === 1) return [numTrainSteps - 1];
  const fracStride = (numTrainSteps - 1) / (steps - 1);
  const ascending: number[] = [];
  let cur = 0;
  for (let i = 0; i < steps; i++) {
    ascending.push(pyRound(cur));
    cur += fracStride;
  }
  // fracStride >= 1, so the rounded values are strictly increasing: the reference's set() drops nothing.
  return ascending.reverse();
}
