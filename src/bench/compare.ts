import type { Engine, GenerateRequest, GenerateResult } from '../engine/engine.js';
import { imageGrid } from '../engine/grid.js';
import { psnr } from '../eval/metrics.js';
import { median } from './timing.js';

export interface Comparison {
  model: string;
  cache: string;
  steps: number;
  /** Median uncached time / median cached time of the same request, interleaved rounds. */
  measuredSpeedup: number;
  /** Lowest and highest per-round ratio. */
  measuredRange: [number, number];
  uncachedMs: number;
  cachedMs: number;
  macSpeedup: number;
  cur: number;
  /** Cached image against the uncached image of the same seed (dB; Infinity when identical). */
  psnr: number;
  /** Uncached | cached, side by side. */
  png: Buffer;
}

/**
 * The same request cached and uncached: `runs` interleaved rounds after a warm-up round (each
 * round alternates which goes first), the images of the same seed side by side, and the
 * measured speedup beside the theoretical one.
 */
export async function compareCached(engine: Engine, request: GenerateRequest, runs = 3): Promise<Comparison> {
  const cached = engine.resolve(request);
  const uncached = { ...cached, cache: 'none' };
  const times: { none: number[]; cached: number[] } = { none: [], cached: [] };
  let last: { none?: GenerateResult; cached?: GenerateResult } = {};
  for (let r = 0; r <= runs; r++) {
    const order = r % 2 === 0 ? (['none', 'cached'] as const) : (['cached', 'none'] as const);
    for (const which of order) {
      const t0 = performance.now();
      const result = await engine.generate(which === 'none' ? uncached : cached);
      if (r > 0) times[which].push(performance.now() - t0); // round 0 warms the sessions up
      last = { ...last, [which]: result };
    }
  }
  const base = last.none!;
  const fast = last.cached!;
  const ratios = times.none.map((ms, i) => ms / times.cached[i]!);
  return {
    model: engine.id, cache: fast.report.policy, steps: cached.steps,
    measuredSpeedup: median(times.none) / median(times.cached), measuredRange: [Math.min(...ratios), Math.max(...ratios)],
    uncachedMs: median(times.none), cachedMs: median(times.cached),
    macSpeedup: fast.report.macSpeedup, cur: fast.report.cur,
    psnr: psnr(fast.images[0]!.data as Float32Array, base.images[0]!.data as Float32Array, 2),
    png: await imageGrid([[base.images[0]!, fast.images[0]!]], 4),
  };
}
