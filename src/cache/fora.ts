import { HarmonicaError } from '../util/errors.js';
import { registerPolicy, type CachePolicy, type PolicyContext } from './policy.js';

/** FORA(N) (Selvaraju et al., 2024): compute every sublayer every N steps, reuse all in between. */
export class ForaPolicy implements CachePolicy {
  readonly name = 'fora';
  readonly probes = [];
  readonly static = true;
  private slots = 0;

  constructor(readonly interval: number) {
    if (!Number.isInteger(interval) || interval < 1) throw new HarmonicaError('UNKNOWN_POLICY', `fora needs an integer interval >= 1, got "${interval}"`);
  }

  get spec(): string {
    return `fora:${this.interval}`;
  }

  start(ctx: PolicyContext): void {
    this.slots = ctx.slots.length;
  }

  decide(step: number): boolean[] {
    return new Array<boolean>(this.slots).fill(step % this.interval === 0);
  }
}

registerPolicy('fora', (args) => new ForaPolicy(args === '' ? NaN : Number(args)));
