/**
 * The speed/quality frontier: which operating points a cache benchmark measures, and which
 * baseline points a learned router beats at the same measured speed.
 */

export type CacheMethod = 'none' | 'harmonica' | 'ltc' | 'fora' | 'delta-dit' | 'teacache' | 'first-block' | 'fewer-steps';

/** One operating point: a method at one setting, sampled with `steps` steps. */
export interface Variant {
  method: CacheMethod;
  setting: string;
  steps: number;
  cache: string;
}

const variant = (method: CacheMethod, setting: string, cache: string, steps: number): Variant => ({ method, setting, steps, cache });

/** A few points per training-free method, scaled to the model's depth and step count. */
export function baselineVariants(steps: number, depth: number): Variant[] {
  const half = Math.round(steps / 2);
  const k = Math.max(1, Math.round(depth / 2));
  return [
    variant('none', `T=${steps}`, 'none', steps),
    variant('fora', 'N=2', 'fora:2', steps),
    variant('fora', 'N=3', 'fora:3', steps),
    variant('delta-dit', `b=${half},k=${k}`, `delta-dit:${half},${k},2`, steps),
    variant('teacache', 'l1=0.1', 'teacache:0.1', steps),
    variant('teacache', 'l1=0.3', 'teacache:0.3', steps),
    variant('first-block', 'l1=0.1', 'first-block:0.1', steps),
    variant('first-block', 'l1=0.2', 'first-block:0.2', steps),
    variant('fewer-steps', `T=${Math.round(steps * 0.7)}`, 'none', Math.round(steps * 0.7)),
    variant('fewer-steps', `T=${half}`, 'none', half),
  ];
}

/**
 * The frontier's baselines: fewer steps at every T' from T - 1 down to T / 4, FORA N = 2..4,
 * and each training-free policy at three settings, against the uncached T-step reference.
 */
export function frontierVariants(steps: number, depth: number): Variant[] {
  const half = Math.round(steps / 2);
  const rows = [variant('none', `T=${steps}`, 'none', steps)];
  for (let t = steps - 1; t >= Math.ceil(steps / 4); t--) rows.push(variant('fewer-steps', `T=${t}`, 'none', t));
  for (const n of [2, 3, 4]) rows.push(variant('fora', `N=${n}`, `fora:${n}`, steps));
  for (const k of [Math.max(1, Math.round(depth / 4)), Math.max(1, Math.round(depth / 2)), Math.max(1, Math.round((3 * depth) / 4))]) {
    rows.push(variant('delta-dit', `b=${half},k=${k}`, `delta-dit:${half},${k},2`, steps));
  }
  for (const l1 of [0.03, 0.06, 0.1]) rows.push(variant('teacache', `l1=${l1}`, `teacache:${l1}`, steps));
  for (const l1 of [0.05, 0.1, 0.2]) rows.push(variant('first-block', `l1=${l1}`, `first-block:${l1}`, steps));
  return rows;
}

/** What dominance reads of a row. */
export interface FrontierPoint {
  method: CacheMethod;
  setting: string;
  measuredSpeedup: number;
  psnr: number | null;
  accuracy: number;
}

/**
 * The rule a learned router must meet to beat a baseline point: at least 0.97x its measured
 * speed (the spread of one measurement here is larger than 3%), PSNR at least as high, and
 * accuracy at most 0.01 lower (one sample in 100 at n = 200 is noise).
 */
export const DOMINANCE = { speedRatio: 0.97, accuracySlack: 0.01, range: [1.3, 3.0] as const };

export interface DominanceRow {
  method: CacheMethod;
  setting: string;
  measuredSpeedup: number;
  psnr: number | null;
  accuracy: number;
  /** The fastest-quality HarmoniCa row that dominates it, or null. */
  dominatedBy: string | null;
  /** Best HarmoniCa PSNR among rows at >= 0.97x its speed, minus its PSNR (null: none that fast). */
  psnrGap: number | null;
}

/** For every baseline point in the speed range, whether some HarmoniCa row dominates it. */
export function dominance(rows: readonly FrontierPoint[], learned: CacheMethod = 'harmonica'): DominanceRow[] {
  const routers = rows.filter((r) => r.method === learned);
  const [lo, hi] = DOMINANCE.range;
  return rows
    .filter((r) => r.method !== learned && r.method !== 'none' && r.measuredSpeedup >= lo && r.measuredSpeedup <= hi)
    .map((b) => {
      const fastEnough = routers.filter((h) => h.measuredSpeedup >= DOMINANCE.speedRatio * b.measuredSpeedup);
      const psnrOf = (r: FrontierPoint) => r.psnr ?? Infinity;
      const winner = fastEnough.filter((h) => psnrOf(h) >= psnrOf(b) && h.accuracy >= b.accuracy - DOMINANCE.accuracySlack).sort((x, y) => psnrOf(y) - psnrOf(x))[0];
      const best = Math.max(...fastEnough.map(psnrOf));
      return {
        method: b.method, setting: b.setting, measuredSpeedup: b.measuredSpeedup, psnr: b.psnr, accuracy: b.accuracy,
        dominatedBy: winner ? winner.setting : null,
        psnrGap: fastEnough.length && b.psnr !== null ? Number((best - b.psnr).toFixed(2)) : null,
      };
    });
}
