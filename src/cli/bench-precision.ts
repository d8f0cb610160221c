import { Option, type Command } from 'commander';
import { benchModelPrecision, benchPrecision, runPrecision, type PrecisionTarget } from '../bench/precision.js';
import { parsePrecision, PRECISIONS, type Precision } from '../models/precision.js';
import { HarmonicaError } from '../util/errors.js';
import { int, printReport } from './report.js';

interface Options {
  model?: string;
  n: number;
  layers: number;
  target: PrecisionTarget;
  only?: Precision[];
  stored: 'float16' | 'float32';
  runs: number;
  threads?: number;
  json?: boolean;
  worker?: string;
  workerOut?: string;
}

export function registerBenchPrecision(bench: Command): void {
  bench
    .command('precision')
    .description('weights at fp32 / int8 / int4: T5-XXL-wide encoder layers or DiT-XL/2 (random weights) for speed, memory and cosine vs fp32; with --model, PSNR of generated images vs fp32, with and without fora:2')
    .option('--model <package>', 'measure generation quality on this model package instead')
    .option('--n <n>', 'samples per setting (with --model)', int, 8)
    .option('--target <model>', 't5-xxl (encoder layers) | dit-xl-2 (the whole cached step graph)', 't5-xxl')
    .option('--layers <n>', 'T5 encoder layers at XXL widths', int, 1)
    .option('--only <precision...>', `precisions to run (${PRECISIONS.join(', ')}; fp32 always runs as the reference)`)
    .option('--stored <dtype>', 'dtype of the random checkpoint: float16 | float32', 'float16')
    .option('--runs <n>', 'timed encoder runs per precision (median reported)', int, 3)
    .option('--threads <n>', 'ORT intra-op threads', int)
    .option('--json', 'print one JSON object')
    // Internal: the parent runs each precision in a fresh process through these.
    .addOption(new Option('--worker <weights>').hideHelp())
    .addOption(new Option('--worker-out <file>').hideHelp())
    .action(async (o: Options) => {
      if (o.stored !== 'float16' && o.stored !== 'float32') throw new Error(`--stored must be float16 or float32, got "${o.stored}"`);
      if (o.target !== 't5-xxl' && o.target !== 'dit-xl-2') throw new Error(`--target must be t5-xxl or dit-xl-2, got "${o.target}"`);
      const only = o.only?.map((p) => parsePrecision(p, '--only'));
      // The benchmark runs on the CPU provider, which has no fp16 MatMul.
      if (only?.includes('fp16')) throw new HarmonicaError('BAD_INPUT', '--only fp16: float16 MatMuls need CUDA; this benchmark runs on the CPU (fp32, int8, int4)');
      if (o.worker) {
        const row = await runPrecision({ target: o.target, weightsFile: o.worker, numLayers: o.layers, precision: only?.[0] ?? 'fp32', runs: o.runs, threads: o.threads ?? 1, outFile: o.workerOut! });
        return printReport({ ...row }, true);
      }
      if (o.model) {
        const result = await benchModelPrecision({ model: o.model, n: o.n, threads: o.threads });
        if (o.json) return printReport({ ...result }, true);
        printReport({ model: result.model, n: result.n, machine: result.machine }, false);
        return console.table(result.rows);
      }
      const result = await benchPrecision({ target: o.target, numLayers: o.layers, precisions: only, runs: o.runs, threads: o.threads, stored: o.stored });
      if (o.json) return printReport({ ...result }, true);
      printReport({ model: result.model, stored: result.stored, threads: result.threads, machine: result.machine }, false);
      console.table(result.rows);
    });
}
