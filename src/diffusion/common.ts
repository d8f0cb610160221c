/** Helpers shared by the samplers (kept apart from sampler.ts so ddim.ts / dpmpp.ts do not import it at runtime). */
import type { SamplerOptions } from './sampler.js';
import { alphasCumprod, DIT_BETA_END, DIT_BETA_START, DIT_NUM_TRAIN_STEPS, linearBetas, spacedTimesteps } from './schedule.js';

export interface StepSchedule {
  /** Model timestep of each step, descending. */
  timesteps: number[];
  /** alpha_bar at each step's timestep: alphasCumprod[timesteps[i]]. */
  alphaBar: Float64Array;
  /** Validated clamp bound for predicted x0, or undefined when off. */
  clipX0: number | undefined;
}

export function stepSchedule(opts: SamplerOptions): StepSchedule {
  const numTrainSteps = opts.numTrainSteps ?? DIT_NUM_TRAIN_STEPS;
  const timesteps = spacedTimesteps(opts.steps, numTrainSteps);
  const ab = alphasCumprod(linearBetas(numTrainSteps, opts.betaStart ?? DIT_BETA_START, opts.betaEnd ?? DIT_BETA_END));
  // Indexing the full-schedule alphas_cumprod at the kept timesteps. The reference's SpacedDiffusion rebuilds
  // them as cumprod(1 - new_betas), which equals these up to float64 rounding (invisible after float32 storage).
  const alphaBar = Float64Array.from(timesteps, (t) => ab[t]!);
  const clipX0 = opts.clipX0;
  if (clipX0 !== undefined && !(clipX0 > 0 && Number.isFinite(clipX0))) {
    throw new Error(`clipX0 must be a positive finite number when set, got ${clipX0}`);
  }
  return { timesteps, alphaBar, clipX0 };
}

export function checkStepArgs(sampler: string, index: number, steps: number, x: Float32Array, eps: Float32Array): void {
  if (!Number.isInteger(index) || index < 0 || index >= steps) {
    throw new Error(`${sampler}: step index must be an integer in [0, ${steps}), got ${index}`);
  }
  if (x.length !== eps.length) {
    throw new Error(`${sampler}: x and eps must have the same length, got ${x.length} and ${eps.length}`);
  }
}

/** Clamp to [-c, c]; identity when c is undefined. */
export function clip(v: number, c: number | undefined): number {
  if (c === undefined) return v;
  return v < -c ? -c : v > c ? c : v;
}
