import { HarmonicaError } from '../util/errors.js';
import { registerPolicy, type CachePolicy, type PolicyContext } from './policy.js';

/**
 * Delta-DiT (Chen et al., 2024), as a static schedule over our per-sublayer cache: every
 * `interval` steps everything computes; in between, before the boundary step b (the outline
 * stage) the rear k blocks reuse their cached output, from b on (the detail stage) the front
 * k blocks do. Delta-DiT caches the block range's output-minus-input; reusing each sublayer's
 * cached output with the current gate is the same residual for a range of whole blocks.
 */
export class DeltaDitPolicy implements CachePolicy {
  readonly name = 'delta-dit';
  readonly probes = [];
  readonly static = true;
  private blocks: number[] = [];
  private depth = 0;

  constructor(
    readonly boundary: number,
    readonly range: number,
    readonly interval: number,
  ) {
    for (const [k, v] of Object.entries({ boundary, range, interval })) {
      if (!Number.isInteger(v) || v < (k === 'boundary' ? 0 : 1)) throw new HarmonicaError('UNKNOWN_POLICY', `delta-dit: ${k} must be a whole number (delta-dit:b,k[,N]), got "${v}"`);
    }
  }

  get spec(): string {
    return `delta-dit:${this.boundary},${this.range},${this.interval}`;
  }

  start(ctx: PolicyContext): void {
    this.blocks = ctx.slots.map((s) => s.block);
    this.depth = Math.max(...this.blocks) + 1;
    if (this.range > this.depth) throw new HarmonicaError('UNKNOWN_POLICY', `delta-dit: range ${this.range} is more than the model's ${this.depth} blocks`);
  }

  decide(step: number): boolean[] {
    if (step % this.interval === 0) return this.blocks.map(() => true);
    const reused = (block: number) => (step < this.boundary ? block >= this.depth - this.range : block < this.range);
    return this.blocks.map((block) => !reused(block));
  }
}

registerPolicy('delta-dit', (args) => {
  const [b, k, n] = args.split(',').map(Number);
  return new DeltaDitPolicy(b ?? NaN, k ?? NaN, n ?? 2);
});
