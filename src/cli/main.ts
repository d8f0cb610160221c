import { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { benchOptimizer } from '../bench/optimizer.js';
import { benchOrt } from '../bench/ort.js';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

/** Prints a result: one JSON object with --json, else an aligned key/value table. */
function report(result: Record<string, unknown>, json: boolean): void {
  if (json) {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return;
  }
  const width = Math.max(...Object.keys(result).map((k) => k.length));
  for (const [k, v] of Object.entries(result)) process.stdout.write(`${k.padEnd(width)}  ${String(v)}\n`);
}

const program = new Command('harmonica')
  .description('Learned feature caching (HarmoniCa) for Diffusion Transformers on onnxruntime-node')
  .version(pkg.version);

const bench = program.command('bench').description('measure the runtime');

bench
  .command('ort')
  .description('ORT micro-benchmark: run overhead, MatMul GFLOP/s, DiT-like block forward vs forward+backward')
  .option('--runs <n>', 'timed runs per figure (medians are reported)', (v) => parseInt(v, 10), 20)
  .option('--json', 'print one JSON object')
  .action(async (opts: { runs: number; json?: boolean }) => {
    report({ ...(await benchOrt({ runs: opts.runs })) }, !!opts.json);
  });

bench
  .command('optimizer')
  .description('AdamW step: JS loop over Float32Array vs an ONNX update graph')
  .option('--params <n>', 'parameter count', (v) => Number(v), 4e6)
  .option('--runs <n>', 'timed steps per variant (medians are reported)', (v) => parseInt(v, 10), 7)
  .option('--json', 'print one JSON object')
  .action(async (opts: { params: number; runs: number; json?: boolean }) => {
    report({ ...(await benchOptimizer({ params: opts.params, runs: opts.runs })) }, !!opts.json);
  });

program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`harmonica: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
