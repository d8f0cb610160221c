import type { Command } from 'commander';
import { benchCache } from '../bench/cache.js';
import { int, printReport } from './report.js';

export function registerBenchCache(bench: Command): void {
  bench
    .command('cache')
    .description('every cache method side by side on a model: CUR, MAC and measured speedup, FID/IS/accuracy, PSNR/SSIM vs uncached, router training cost')
    .requiredOption('--model <package>', 'bundled model name or package directory')
    .option('--steps <n>', 'denoising steps (default: the model\'s)', int)
    .option('--n <n>', 'samples per method', int, 500)
    .option('--router <file...>', 'router artifacts (harmonica and ltc) to include', [])
    .option('--runs <n>', 'interleaved timing rounds', int, 5)
    .option('--plot <file>', 'PNG of quality vs measured speedup')
    .option('--threads <n>', 'ORT intra-op threads', int)
    .option('--json', 'print one JSON object')
    .action(async (o: { model: string; steps?: number; n: number; router: string[]; runs: number; plot?: string; threads?: number; json?: boolean }) => {
      const result = await benchCache({ model: o.model, steps: o.steps, n: o.n, routers: o.router, timingRuns: o.runs, plotPath: o.plot, threads: o.threads });
      if (o.json) return printReport({ ...result }, true);
      printReport({ model: result.model, steps: result.steps, sampler: result.sampler, cfg: result.cfg, n: result.n, machine: result.machine }, false);
      console.table(result.rows);
      console.table(result.training);
    });
}
