import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { HarmonicaError } from '../util/errors.js';
import { registerPolicy, type CachePolicy, type PolicyContext } from './policy.js';

export const ROUTER_FORMAT = 'harmonica-router/1';
/** Inference threshold of the HarmoniCa reference README: compute a slot iff sigmoid(P) > tau. */
export const DEFAULT_TAU = 0.1;

/** A trained router: one logit per (step, sublayer), checked against the model it was trained on. */
export interface RouterArtifact {
  format: typeof ROUTER_FORMAT;
  method: 'harmonica' | 'ltc';
  model: { id: string; sha256: string };
  sampler: string;
  steps: number;
  cfgScale: number;
  sublayers: string[];
  logits: number[][];
  tau: number;
  /**
   * A reused cache entry may be at most this many steps old: older ones compute (the router
   * was trained under the same rule). Absent: no cap.
   */
  maxCacheAge?: number;
  training?: Record<string, unknown>;
  eval?: Record<string, unknown>;
}

const mismatch = (msg: string) => new HarmonicaError('ROUTER_MISMATCH', msg);

export function parseRouterArtifact(json: unknown, source: string): RouterArtifact {
  const a = json as Partial<RouterArtifact>;
  if (!a || typeof a !== 'object' || a.format !== ROUTER_FORMAT) throw mismatch(`${source}: not a router artifact (format must be "${ROUTER_FORMAT}")`);
  if (a.method !== 'harmonica' && a.method !== 'ltc') throw mismatch(`${source}: unknown router method "${a.method}"`);
  if (!Array.isArray(a.logits) || !Array.isArray(a.sublayers) || typeof a.steps !== 'number' || a.logits.length !== a.steps) {
    throw mismatch(`${source}: logits must be a [steps][sublayers] array matching "steps"`);
  }
  if (a.logits.some((row) => !Array.isArray(row) || row.length !== a.sublayers!.length || row.some((v) => typeof v !== 'number'))) {
    throw mismatch(`${source}: every logits row needs ${a.sublayers.length} numbers`);
  }
  if (!a.model || typeof a.model.sha256 !== 'string') throw mismatch(`${source}: missing model.sha256`);
  if (a.maxCacheAge !== undefined && !(Number.isInteger(a.maxCacheAge) && a.maxCacheAge >= 1)) throw mismatch(`${source}: maxCacheAge must be an integer >= 1, got ${a.maxCacheAge}`);
  return a as RouterArtifact;
}

/** A router logit's mix weight r; a slot computes at inference iff r > tau. */
export const sigmoid = (logit: number): number => 1 / (1 + Math.exp(-logit));

/**
 * Learning-to-Cache resets the cache (computes everything) when the diffusion index is odd;
 * the index counts down from T - 1 at the first sampling step (horseee/learning-to-cache,
 * `DiT/models/dynamic_models.py`), so for an even T these are sampling steps 0, 2, 4, ...
 */
export function ltcComputesAll(step: number, steps: number): boolean {
  return (steps - 1 - step) % 2 === 1;
}

/**
 * Tracks how old each slot's cached output is and forces a slot to compute when reusing it
 * would exceed the cap: one rule for training and inference.
 */
export class CacheAges {
  private readonly ages: number[];

  constructor(
    slots: number,
    readonly maxAge = Infinity,
  ) {
    this.ages = new Array<number>(slots).fill(0);
  }

  /** Slots that must compute at the next step (their cache would be older than the cap). */
  forced(): boolean[] {
    return this.ages.map((age) => age + 1 > this.maxAge);
  }

  /** After a step: a refreshed slot is 0 steps old, a reused one a step older. */
  advance(refreshed: readonly boolean[]): void {
    refreshed.forEach((r, s) => (this.ages[s] = r ? 0 : this.ages[s]! + 1));
  }

  clone(): CacheAges {
    const c = new CacheAges(this.ages.length, this.maxAge);
    c.ages.splice(0, this.ages.length, ...this.ages);
    return c;
  }
}

/**
 * The whole schedule of a router at threshold tau: slot s computes at step i iff
 * sigmoid(logits[i][s]) > tau, or its cache would be older than `maxCacheAge`; the first step
 * always computes. LTC routers also compute everything at the steps where LTC resets the
 * cache (ltcComputesAll), as Learning-to-Cache does at inference.
 */
export function routerSchedule(a: Pick<RouterArtifact, 'method' | 'steps' | 'sublayers' | 'logits' | 'maxCacheAge'>, tau: number): boolean[][] {
  const ages = new CacheAges(a.sublayers.length, a.maxCacheAge);
  return a.logits.map((row, step) => {
    const all = step === 0 || (a.method === 'ltc' && ltcComputesAll(step, a.steps));
    const forced = ages.forced();
    const computes = row.map((logit, s) => all || forced[s]! || sigmoid(logit) > tau);
    ages.advance(computes);
    return computes;
  });
}

/** A static router: its routerSchedule at the request's tau. */
export class RouterPolicy implements CachePolicy {
  readonly name = 'router';
  readonly probes = [];
  readonly static = true;

  private readonly schedule: boolean[][];

  constructor(
    readonly artifact: RouterArtifact,
    readonly source: string,
    readonly tau = artifact.tau ?? DEFAULT_TAU,
  ) {
    this.schedule = routerSchedule(artifact, this.tau);
  }

  get spec(): string {
    return `router:${this.source}@${this.tau}`;
  }

  start(ctx: PolicyContext): void {
    const a = this.artifact;
    if (a.model.sha256 !== ctx.model.sha256) {
      throw mismatch(`router ${this.source} was trained for model ${a.model.id} (sha256 ${a.model.sha256.slice(0, 12)}), not ${ctx.model.id} (sha256 ${ctx.model.sha256.slice(0, 12)})`);
    }
    if (a.steps !== ctx.steps) throw mismatch(`router ${this.source} was trained for ${a.steps} steps, the request has ${ctx.steps}`);
    const names = ctx.slots.map((s) => s.name);
    if (a.sublayers.length !== names.length || a.sublayers.some((n, i) => n !== names[i])) {
      throw mismatch(`router ${this.source} gates sublayers [${a.sublayers.slice(0, 3).join(', ')}, ...] (${a.sublayers.length}), the model has [${names.slice(0, 3).join(', ')}, ...] (${names.length})`);
    }
  }

  decide(step: number): boolean[] {
    const row = this.schedule[step];
    if (!row) throw mismatch(`router ${this.source} has no row for step ${step}`);
    return [...row];
  }
}

/** Routers a model package ships: `<package>/routers/<name>.json`. */
export function packageRouterPath(modelDir: string, name: string): string {
  return join(modelDir, 'routers', `${name}.json`);
}

/**
 * `router:<name>[@tau]` names one of the package's routers; a spec that names a file (a path
 * or a .json name) or another policy is returned as it is.
 */
export function resolveRouterSpec(spec: string, modelDir: string): string {
  const m = /^router:([\w][\w.-]*?)(@[^@]*)?$/.exec(spec);
  if (!m || m[1]!.endsWith('.json')) return spec;
  const path = packageRouterPath(modelDir, m[1]!);
  return existsSync(path) ? `router:${path}${m[2] ?? ''}` : spec;
}

export function loadRouter(path: string, tau?: number): RouterPolicy {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new HarmonicaError('UNKNOWN_POLICY', `cannot read router ${path}: ${(err as Error).message}`);
  }
  return new RouterPolicy(parseRouterArtifact(json, path), path, tau);
}

registerPolicy('router', (args) => {
  const at = args.lastIndexOf('@');
  const path = at < 0 ? args : args.slice(0, at);
  if (!path) throw new HarmonicaError('UNKNOWN_POLICY', 'router policy needs a router: router:<name or file>[@tau]');
  const tau = at < 0 ? undefined : Number(args.slice(at + 1));
  if (tau !== undefined && !(tau > 0 && tau < 1)) throw new HarmonicaError('UNKNOWN_POLICY', `router tau must be in (0, 1), got "${args.slice(at + 1)}"`);
  return loadRouter(path, tau);
});
