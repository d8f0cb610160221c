import type { Command } from 'commander';
import { benchOptimizer } from '../bench/optimizer.js';
import { benchOrt } from '../bench/ort.js';
import { benchRealSize } from '../bench/real-size.js';
import { parsePrecision, PRECISIONS, type Precision } from '../models/precision.js';
import { registerBenchPrecision } from './bench-precision.js';
import { benchRuntime } from '../bench/runtime.js';
import { registerBenchCache } from './bench-cache.js';
import { registerBenchService } from './bench-service.js';
import { HarmonicaError } from '../util/errors.js';
import { int, printReport } from './report.js';

export function registerBench(program: Command): void {
  const bench = program.command('bench').description('measure the runtime');
  bench
    .command('ort')
    .description('ORT micro-benchmark: run overhead, MatMul GFLOP/s, DiT-like block forward vs forward+backward')
    .option('--runs <n>', 'timed runs per figure (medians are reported)', int, 20)
    .option('--json', 'print one JSON object')
    .action(async (o: { runs: number; json?: boolean }) => printReport({ ...(await benchOrt({ runs: o.runs })) }, !!o.json));
  bench
    .command('optimizer')
    .description('AdamW step: JS loop over Float32Array vs an ONNX update graph')
    .option('--params <n>', 'parameter count', Number, 4e6)
    .option('--runs <n>', 'timed steps per variant (medians are reported)', int, 7)
    .option('--json', 'print one JSON object')
    .action(async (o: { params: number; runs: number; json?: boolean }) =>
      printReport({ ...(await benchOptimizer({ params: o.params, runs: o.runs })) }, !!o.json));
  bench
    .command('runtime')
    .description('cached executor on a DiT-S/2-sized random model: no cache, FORA(2), FORA(3) vs the plain graph')
    .option('--runs <n>', 'interleaved rounds (medians are reported)', int, 5)
    .option('--steps <n>', 'steps per trajectory', int, 12)
    .option('--precision <p>', `transformer weights: ${PRECISIONS.join(' | ')}`, (v) => parsePrecision(v, '--precision'), 'fp32')
    .option('--json', 'print one JSON object')
    .action(async (o: { runs: number; steps: number; precision: Precision; json?: boolean }) => {
      const result = await benchRuntime({ runs: o.runs, steps: o.steps, precision: o.precision });
      if (o.json) return printReport({ ...result }, true);
      printReport({ model: result.model, batch: result.batch, steps: result.steps, plainStepMs: result.plainStepMs, executorOverhead: result.executorOverhead }, false);
      console.table(result.rows);
    });
  bench
    .command('real-size')
    .description('a real-size model with random weights in the real layout: convert, then generate cold, from the compiled cache and with fora:2 (peak RSS and times per phase; heavy: GBs of disk and RAM, minutes)')
    .requiredOption('--dir <dir>', 'working folder (checkpoints, packages, cache; kept for reruns)')
    .option('--model <name>', 'dit-xl-2-256 | pixart-xl-2-512', 'dit-xl-2-256')
    .option('--layout <layout>', 'DiT: diffusers (Hub folder with vae/) | original (state dict, converted with --vae)', 'diffusers')
    .option('--t5-layers <n>', 'PixArt: layers of the T5-XXL-wide encoder (24 = the real one, ~19 GB fp32)', int, 24)
    .option('--steps <n>', 'denoising steps per generate', int, 6)
    .option('--seed <n>', 'seed of the random weights and of sampling', int, 0)
    .option('--threads <n>', 'ORT intra-op threads', int)
    .option('--json', 'print one JSON object')
    .action(async (o: { dir: string; model: string; layout: string; t5Layers: number; steps: number; seed: number; threads?: number; json?: boolean }) => {
      if (o.model !== 'dit-xl-2-256' && o.model !== 'pixart-xl-2-512') throw new HarmonicaError('BAD_INPUT', `--model must be dit-xl-2-256 or pixart-xl-2-512, got "${o.model}"`);
      if (o.layout !== 'diffusers' && o.layout !== 'original') throw new HarmonicaError('BAD_INPUT', `--layout must be diffusers or original, got "${o.layout}"`);
      const result = await benchRealSize({ dir: o.dir, model: o.model, layout: o.layout, t5Layers: o.t5Layers, steps: o.steps, seed: o.seed, threads: o.threads });
      if (o.json) return printReport({ ...result }, true);
      printReport({ machine: result.machine, model: result.model, steps: result.steps, fora2Speedup: result.fora2Speedup.toFixed(2) }, false);
      console.table(result.phases.map((p) => Object.fromEntries(Object.entries(p).map(([k, v]) => [k, typeof v === 'number' ? Number(v.toFixed(k === 'peakRssGb' ? 2 : 1)) : v]))));
    });
  registerBenchCache(bench);
  registerBenchPrecision(bench);
  registerBenchService(bench);
}
