/**
 * Common sampler interface for the DiT / PixArt-alpha inference engine. Samplers are host-side math over
 * Float32Array (the model itself runs elsewhere): every step is a plain JS loop over the flattened latent
 * batch, computed in float64 per element and stored as float32, so the same inputs and seed give the same bytes.
 */
import type { Rng } from '../tensor/rng.js';
import { DdimSampler } from './ddim.js';
import { DpmppSampler } from './dpmpp.js';

export interface Sampler {
  readonly name: 'ddim' | 'dpmpp';
  /** Model timestep for each step, in sampling order (descending). */
  readonly timesteps: readonly number[];
  /**
   * x_{t_i} -> x_{t_{i+1}} (or the final sample after the last step) from the model's epsilon prediction.
   * Same length arrays; batch is flattened. Stateful samplers (DPM++ 2M) remember earlier predictions:
   * call steps in order, reset() for a new trajectory.
   */
  step(index: number, x: Float32Array, eps: Float32Array, rng?: Rng): Float32Array;
  /** x0 predicted from x_t and eps at step index. */
  predictX0(index: number, x: Float32Array, eps: Float32Array): Float32Array;
  reset(): void;
  /** A sampler that continues this trajectory from here independently (branching a trajectory). */
  fork(): Sampler;
}

export interface SamplerOptions {
  steps: number;
  /** DDIM only: 0 = deterministic DDIM (default), 1 = DDPM-like posterior noise. Must lie in [0, 1]. */
  eta?: number;
  numTrainSteps?: number;
  betaStart?: number;
  betaEnd?: number;
  /** Optional clamp of predicted x0 to [-c, c]; off by default (DiT samples with clip_denoised=False). */
  clipX0?: number;
}

export const SAMPLER_NAMES = ['ddim', 'dpmpp'] as const;
export type SamplerName = (typeof SAMPLER_NAMES)[number];

export function createSampler(name: string, opts: SamplerOptions): Sampler {
  switch (name) {
    case 'ddim':
      return new DdimSampler(opts);
    case 'dpmpp':
      return new DpmppSampler(opts);
    default:
      throw new Error(`Unknown sampler "${name}"; valid names: ${SAMPLER_NAMES.join(', ')}`);
  }
}

/** Initial noise x_T of `length` elements from a seeded Rng (standard normal). */
export function initialNoise(length: number, rng: Rng): Float32Array {
  if (!Number.isSafeInteger(length) || length < 0) {
    throw new Error(`initialNoise length must be a non-negative integer, got ${length}`);
  }
  return rng.fillNormal(new Float32Array(length));
}
