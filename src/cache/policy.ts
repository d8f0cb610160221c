import type { SlotInfo } from '../models/sublayer.js';
import type { HostTensor } from '../tensor/tensor.js';
import { HarmonicaError } from '../util/errors.js';

/** What a policy is told when a trajectory starts. */
export interface PolicyContext {
  steps: number;
  sampler: string;
  slots: readonly SlotInfo[];
  model: { id: string; sha256: string };
  /** The model package directory (policies with per-model calibration read it). */
  modelDir?: string;
}

/** Mean |a - b| / mean |b|: the relative L1 change TeaCache and First-Block-Cache measure. */
export function relativeL1(a: HostTensor, b: HostTensor): number {
  const x = a.data as Float32Array;
  const y = b.data as Float32Array;
  let num = 0;
  let den = 0;
  for (let i = 0; i < x.length; i++) {
    num += Math.abs(x[i]! - y[i]!);
    den += Math.abs(y[i]!);
  }
  return num / Math.max(den, 1e-12);
}

/**
 * Answers one question: which slots compute at this step? The executor owns the cache; a
 * policy only decides, from the step index and (for input-adaptive policies) the probes it
 * asked for. A fresh policy object serves one request.
 */
export interface CachePolicy {
  readonly name: string;
  /** The policy as a `--cache` string. */
  readonly spec: string;
  /** Probe values (see SublayerHooks.probe) this policy reads each step. */
  readonly probes: readonly string[];
  /** True when decisions depend only on the step index, so the whole schedule is known up front. */
  readonly static: boolean;
  /** Validates against the model and request and resets per-trajectory state. */
  start(ctx: PolicyContext): void;
  /** true = compute slot s at step `step` (0 = first denoising step). */
  decide(step: number, probes: Readonly<Record<string, HostTensor>>): boolean[];
}

export type PolicyParser = (args: string) => CachePolicy;

const parsers = new Map<string, PolicyParser>();

/** Registers `name` so that `--cache name:args` parses to a policy. */
export function registerPolicy(name: string, parse: PolicyParser): void {
  parsers.set(name, parse);
}

export function policyNames(): string[] {
  return [...parsers.keys()];
}

/** Parses `name[:args]`, e.g. `none`, `fora:2`, `router:path.json@0.1`. */
export function parsePolicy(spec: string): CachePolicy {
  const colon = spec.indexOf(':');
  const name = colon < 0 ? spec : spec.slice(0, colon);
  const parse = parsers.get(name);
  if (!parse) throw new HarmonicaError('UNKNOWN_POLICY', `unknown cache policy "${name}" (known: ${policyNames().join(', ')})`);
  return parse(colon < 0 ? '' : spec.slice(colon + 1));
}

/** Every slot computes at every step. */
export class NoCachePolicy implements CachePolicy {
  readonly name = 'none';
  readonly spec = 'none';
  readonly probes = [];
  readonly static = true;
  private slots = 0;

  start(ctx: PolicyContext): void {
    this.slots = ctx.slots.length;
  }

  decide(): boolean[] {
    return new Array<boolean>(this.slots).fill(true);
  }
}

registerPolicy('none', (args) => {
  if (args) throw new HarmonicaError('UNKNOWN_POLICY', `policy "none" takes no arguments, got "${args}"`);
  return new NoCachePolicy();
});

/**
 * The whole schedule of a started static policy: which slots compute at each step (the
 * first step always computes everything: the cache is empty).
 */
export function staticSchedule(policy: CachePolicy, steps: number, slots: number): boolean[][] {
  return Array.from({ length: steps }, (_, i) => (i === 0 ? new Array<boolean>(slots).fill(true) : policy.decide(i, {})));
}

/**
 * Which computed outputs must be kept for a static schedule: only those that a later step
 * reuses, i.e. where the next step does not compute the slot again.
 */
export function storeMask(schedule: readonly (readonly boolean[])[]): boolean[][] {
  return schedule.map((row, i) => row.map((computed, s) => computed && i + 1 < schedule.length && !schedule[i + 1]![s]));
}
