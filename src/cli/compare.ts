import type { Command } from 'commander';
import { writeFile } from 'node:fs/promises';
import { compareCached } from '../bench/compare.js';
import { Engine } from '../engine/engine.js';
import { int, printReport } from './report.js';

export function registerCompare(program: Command): void {
  program
    .command('compare')
    .description('the same image cached and uncached, side by side: measured and MAC speedup, PSNR, CUR')
    .requiredOption('--model <package>', 'bundled model name or package directory')
    .requiredOption('--cache <policy>', 'the cache policy to compare with uncached generation, e.g. fora:2 or router:<name>')
    .option('--class <n>', 'class label (class-conditional models)', int)
    .option('--prompt <text>', 'caption (text-conditional models)')
    .option('--steps <n>', 'denoising steps (default: the model\'s)', int)
    .option('--seed <n>', 'random seed', int, 0)
    .option('--runs <n>', 'interleaved timing rounds after a warm-up', int, 3)
    .option('--out <file>', 'PNG: uncached | cached', 'compare.png')
    .option('--threads <n>', 'ORT intra-op threads', int)
    .option('--json', 'print one JSON object')
    .action(async (o: { model: string; cache: string; class?: number; prompt?: string; steps?: number; seed: number; runs: number; out: string; threads?: number; json?: boolean }) => {
      const engine = await Engine.open(o.model, { threads: o.threads });
      const c = await compareCached(engine, { classLabel: o.class, prompt: o.prompt, steps: o.steps, cache: o.cache, seed: o.seed }, o.runs);
      await writeFile(o.out, c.png);
      const r = (x: number) => Number(x.toFixed(2));
      printReport({
        model: c.model, cache: o.cache, steps: c.steps,
        measuredSpeedup: `${r(c.measuredSpeedup)}x (${r(c.measuredRange[0])}-${r(c.measuredRange[1])} over ${o.runs} rounds)`,
        macSpeedup: `${r(c.macSpeedup)}x`, uncachedMs: Math.round(c.uncachedMs), cachedMs: Math.round(c.cachedMs),
        psnr: Number.isFinite(c.psnr) ? `${r(c.psnr)} dB` : 'identical', cur: r(c.cur), out: `${o.out} (left: uncached, right: cached)`,
      }, !!o.json);
    });
}
