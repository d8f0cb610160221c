import type { Command } from 'commander';
import { benchOptimizer } from '../bench/optimizer.js';
import { benchOrt } from '../bench/ort.js';
import { parsePrecision, PRECISIONS, type Precision } from '../models/precision.js';
import { registerBenchPrecision } from './bench-precision.js';
import { benchRuntime } from '../bench/runtime.js';
import { registerBenchCache } from './bench-cache.js';
import { registerBenchService } from './bench-service.js';
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
  registerBenchCache(bench);
  registerBenchPrecision(bench);
  registerBenchService(bench);
}
