import type { Command } from 'commander';
import { benchCache, type CacheBenchResult } from '../bench/cache.js';
import { DOMINANCE } from '../bench/frontier.js';
import { int, printReport } from './report.js';

const numbers = (v: string) => v.split(',').map((x) => {
  const n = Number(x);
  if (!(n > 0 && n < 1)) throw new Error(`--tau takes thresholds in (0, 1), got "${x}"`);
  return n;
});

/** The table a person reads: the columns that decide, rounded. */
function printRows(result: CacheBenchResult): void {
  const f = (x: number | null, d: number) => (x === null ? '-' : x.toFixed(d));
  console.table(result.rows.map((r) => ({
    method: r.method, setting: r.setting, CUR: f(r.cur, 2), MAC: f(r.macSpeedup, 2),
    measured: `${f(r.measuredSpeedup, 2)} (${f(r.measuredRange[0], 2)}-${f(r.measuredRange[1], 2)})`,
    PSNR: f(r.psnr, 1), SSIM: f(r.ssim, 3), accuracy: f(r.accuracy, 3), FID: `${f(r.fid, 0)} +-${f(r.fidCi, 0)}`,
  })));
}

export function registerBenchCache(bench: Command): void {
  bench
    .command('cache')
    .description('every cache method side by side on a model: CUR, MAC and measured speedup, FID/IS/accuracy, PSNR/SSIM vs uncached, router training cost')
    .requiredOption('--model <package>', 'bundled model name or package directory')
    .option('--steps <n>', 'denoising steps of the uncached reference (default: the model\'s)', int)
    .option('--n <n>', 'samples per method', int, 500)
    .option('--router <file...>', 'router artifacts (harmonica and ltc, for these or fewer steps) to include (with --frontier, default: every router the package ships for this sampler at these or fewer steps)', [])
    .option('--tau <list>', 'run each router at these thresholds, e.g. 0.1,0.3 (default: its own)', numbers)
    .option('--frontier', 'the frontier: fewer steps at every T\' down to T/4, FORA 2..4, three settings of each policy; says which baseline points a HarmoniCa row dominates')
    .option('--cfg <scale>', 'guidance scale for every row (default: the model\'s)', Number)
    .option('--runs <n>', 'interleaved timing rounds', int, 5)
    .option('--plot <file>', 'PNG of quality vs measured speedup')
    .option('--threads <n>', 'ORT intra-op threads', int)
    .option('--json', 'print one JSON object')
    .action(async (o: { model: string; steps?: number; n: number; router: string[]; tau?: number[]; frontier?: boolean; cfg?: number; runs: number; plot?: string; threads?: number; json?: boolean }) => {
      const result = await benchCache({ model: o.model, steps: o.steps, n: o.n, routers: o.router, taus: o.tau, frontier: o.frontier, cfg: o.cfg, timingRuns: o.runs, plotPath: o.plot, threads: o.threads });
      if (o.json) return printReport({ ...result }, true);
      printReport({ model: result.model, steps: result.steps, sampler: result.sampler, cfg: result.cfg, n: result.n, machine: result.machine }, false);
      printRows(result);
      console.table(result.training);
      if (result.dominance) {
        const [lo, hi] = DOMINANCE.range;
        console.log(`Baseline points from ${lo}x to ${hi}x measured, and the HarmoniCa row that dominates each (>= ${DOMINANCE.speedRatio}x its speed, PSNR >=, accuracy >= its - ${DOMINANCE.accuracySlack}):`);
        console.table(result.dominance.map((d) => ({ method: d.method, setting: d.setting, measured: d.measuredSpeedup.toFixed(2), PSNR: d.psnr?.toFixed(1) ?? '-', accuracy: d.accuracy.toFixed(3), dominatedBy: d.dominatedBy ?? 'none', psnrGap: d.psnrGap ?? '-' })));
      }
    });
}
