import type { HostTensor } from '../tensor/tensor.js';
import { HarmonicaError } from '../util/errors.js';
import { registerPolicy, relativeL1, type CachePolicy, type PolicyContext } from './policy.js';

export const FIRST_BLOCK_PROBE = 'firstBlock.residual';

/**
 * First-Block-Cache: block 0 always computes; when its residual changed by less than
 * `threshold` (relative L1) since the last step that computed everything, all other blocks
 * reuse their cache. One decision for the whole batch.
 */
export class FirstBlockPolicy implements CachePolicy {
  readonly name = 'first-block';
  readonly probes = [FIRST_BLOCK_PROBE];
  readonly static = false;
  private blocks: number[] = [];
  private reference: HostTensor | null = null;

  constructor(readonly threshold: number) {
    if (!(threshold > 0)) throw new HarmonicaError('UNKNOWN_POLICY', `first-block needs a threshold > 0 (first-block:0.1), got "${threshold}"`);
  }

  get spec(): string {
    return `first-block:${this.threshold}`;
  }

  start(ctx: PolicyContext): void {
    this.blocks = ctx.slots.map((s) => s.block);
    this.reference = null;
  }

  decide(step: number, probes: Readonly<Record<string, HostTensor>>): boolean[] {
    const residual = probes[FIRST_BLOCK_PROBE];
    if (!residual) throw new Error(`first-block needs the ${FIRST_BLOCK_PROBE} probe`);
    if (step > 0 && this.reference && relativeL1(residual, this.reference) < this.threshold) {
      return this.blocks.map((b) => b === 0);
    }
    this.reference = residual;
    return this.blocks.map(() => true);
  }
}

registerPolicy('first-block', (args) => new FirstBlockPolicy(args === '' ? NaN : Number(args)));
