import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { HostTensor } from '../tensor/tensor.js';
import { HarmonicaError } from '../util/errors.js';
import { registerPolicy, relativeL1, type CachePolicy, type PolicyContext } from './policy.js';

export const TEACACHE_PROBE = 'firstBlock.modulatedInput';
/** Per-model calibration written by `harmonica calibrate teacache` into the package. */
export const TEACACHE_FILE = 'teacache.json';

export interface TeaCacheCalibration {
  /** Polynomial coefficients, highest power first (numpy.polyfit order). */
  coefficients: number[];
  fittedOn: Record<string, unknown>;
}

export function polyval(coefficients: readonly number[], x: number): number {
  return coefficients.reduce((acc, c) => acc * x + c, 0);
}

/**
 * The package's calibration, refused when missing or fitted on other weights (a retrained
 * model changes the polynomial): both are mended by `harmonica calibrate teacache`.
 */
export function loadTeaCacheCalibration(ctx: Pick<PolicyContext, 'model' | 'modelDir'>): TeaCacheCalibration {
  const path = ctx.modelDir ? join(ctx.modelDir, TEACACHE_FILE) : TEACACHE_FILE;
  const fix = `run "harmonica calibrate teacache --model ${ctx.model.id}"`;
  let calibration: TeaCacheCalibration;
  try {
    calibration = JSON.parse(readFileSync(path, 'utf8')) as TeaCacheCalibration;
  } catch {
    throw new HarmonicaError('UNKNOWN_POLICY', `teacache needs a calibration for ${ctx.model.id}: ${fix} (${path} missing)`);
  }
  const fittedOn = calibration.fittedOn?.sha256;
  if (fittedOn !== ctx.model.sha256) {
    throw new HarmonicaError('UNKNOWN_POLICY', `teacache calibration ${path} was fitted on other weights (sha256 ${String(fittedOn).slice(0, 12)}), not ${ctx.model.id} (sha256 ${ctx.model.sha256.slice(0, 12)}): ${fix}`);
  }
  return calibration;
}

/**
 * TeaCache (Liu et al., 2024): the relative L1 change of the first block's timestep-modulated
 * input, rescaled by a per-model polynomial, is accumulated step by step; while the sum stays
 * under `threshold` every slot reuses, otherwise everything computes and the sum resets.
 * TeaCache reuses the last computed step's whole-stack residual; here each sublayer's cached
 * output is reused with the current gate, through the same executor as every policy.
 */
export class TeaCachePolicy implements CachePolicy {
  readonly name = 'teacache';
  readonly probes = [TEACACHE_PROBE];
  readonly static = false;
  private slots = 0;
  private coefficients: number[] = [];
  private previous: HostTensor | null = null;
  private accumulated = 0;

  constructor(readonly threshold: number) {
    if (!(threshold > 0)) throw new HarmonicaError('UNKNOWN_POLICY', `teacache needs a threshold > 0 (teacache:0.1), got "${threshold}"`);
  }

  get spec(): string {
    return `teacache:${this.threshold}`;
  }

  start(ctx: PolicyContext): void {
    this.slots = ctx.slots.length;
    this.coefficients = loadTeaCacheCalibration(ctx).coefficients;
    this.previous = null;
    this.accumulated = 0;
  }

  decide(step: number, probes: Readonly<Record<string, HostTensor>>): boolean[] {
    const current = probes[TEACACHE_PROBE];
    if (!current) throw new Error(`teacache needs the ${TEACACHE_PROBE} probe`);
    let compute = true;
    if (step > 0 && this.previous) {
      this.accumulated += Math.abs(polyval(this.coefficients, relativeL1(current, this.previous)));
      compute = this.accumulated >= this.threshold;
    }
    if (compute) this.accumulated = 0;
    this.previous = current;
    return new Array<boolean>(this.slots).fill(compute);
  }
}

registerPolicy('teacache', (args) => new TeaCachePolicy(args === '' ? NaN : Number(args)));
