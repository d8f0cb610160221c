import { cpus } from 'node:os';
import { GraphBuilder } from '../onnx/builder.js';
import { gradients } from '../onnx/grad/index.js';
import { Session } from '../onnx/session.js';
import { ditBlock } from '../models/layers.js';
import { initDitBlock, randomTensor } from '../models/init.js';
import { Rng } from '../tensor/rng.js';
import { tensor, type HostTensor } from '../tensor/tensor.js';
import { Progress } from '../util/progress.js';
import { median, timeRuns } from './timing.js';

/** The DiT-like block of the issue: hidden 256, 64 tokens, batch 8, 4 heads, MLP ratio 4. */
export const BLOCK_BENCH = { hidden: 256, tokens: 64, batch: 8, heads: 4, mlpRatio: 4 };
const MATMUL_N = 512;

export interface OrtBenchResult {
  machine: string;
  runOverheadUs: number;
  matmulGflops1t: number;
  matmulGflops2t: number;
  blockFwdMs: number;
  blockFwdBwdMs: number;
  fwdBwdOverFwd: number;
}

async function runOverheadUs(runs: number): Promise<number> {
  const b = new GraphBuilder('overhead');
  b.output(b.add(b.input('x', 'float32', [1]), 1), 'y');
  const s = await Session.create(b.graph, { threads: 1 });
  const feeds = { x: tensor('float32', [1], [1]) };
  const times = await timeRuns(() => s.run(feeds), runs, 100);
  await s.release();
  return median(times) * 1000;
}

async function matmulGflops(threads: number, runs: number): Promise<number> {
  const b = new GraphBuilder('matmul');
  const n = MATMUL_N;
  b.output(b.matmul(b.input('a', 'float32', [n, n]), b.input('b', 'float32', [n, n])), 'c');
  const s = await Session.create(b.graph, { threads });
  const rng = new Rng(0);
  const feeds = { a: randomTensor([n, n], rng), b: randomTensor([n, n], rng) };
  const ms = median(await timeRuns(() => s.run(feeds), runs, 3));
  await s.release();
  return (2 * n ** 3) / (ms / 1000) / 1e9;
}

/**
 * Forward and forward+backward of one block, both with weights as graph inputs (as in
 * training), gradients w.r.t. the input, the condition and every weight. Runs alternate so
 * that both see the same machine state.
 */
async function blockTimes(runs: number, progress: Progress): Promise<{ fwd: number; fwdBwd: number }> {
  const { hidden, tokens, batch, heads, mlpRatio } = BLOCK_BENCH;
  const build = (withBackward: boolean) => {
    const b = new GraphBuilder(withBackward ? 'block_fwd_bwd' : 'block_fwd', { weights: 'inputs' });
    const x = b.input('x', 'float32', [batch, tokens, hidden]);
    const c = b.input('c', 'float32', [batch, hidden]);
    const params = initDitBlock(b, 'block', hidden, mlpRatio * hidden, { rng: new Rng(1), std: 0.02 });
    const { out } = ditBlock(b, x, c, params, heads);
    const loss = b.reduceMean(b.mul(out, out), [0, 1, 2], false);
    b.output(loss, 'loss');
    if (withBackward) {
      const wrt = [x, c, ...b.graph.paramValues.keys()];
      gradients(b, loss, wrt).forEach((g, i) => b.output(g, `grad/${wrt[i]!.name}`));
    }
    return b;
  };
  const fwd = build(false);
  const fwdBwd = build(true);
  const rng = new Rng(2);
  const feeds: Record<string, HostTensor> = {
    x: randomTensor([batch, tokens, hidden], rng),
    c: randomTensor([batch, hidden], rng),
  };
  for (const [v, t] of fwd.graph.paramValues) feeds[v.name] = t;
  const sFwd = await Session.create(fwd.graph);
  const sFwdBwd = await Session.create(fwdBwd.graph);
  const tf: number[] = [];
  const tb: number[] = [];
  for (let i = 0; i < runs + 2; i++) {
    const [a] = await timeRuns(() => sFwd.run(feeds), 1, 0);
    const [g] = await timeRuns(() => sFwdBwd.run(feeds), 1, 0);
    if (i >= 2) {
      tf.push(a!);
      tb.push(g!);
    }
    progress.tick();
  }
  await sFwd.release();
  await sFwdBwd.release();
  return { fwd: median(tf), fwdBwd: median(tb) };
}

export async function benchOrt(options: { runs?: number } = {}): Promise<OrtBenchResult> {
  const runs = options.runs ?? 20;
  const progress = new Progress('bench ort (block runs)', runs + 2, 'pairs');
  const overhead = await runOverheadUs(2000);
  const g1 = await matmulGflops(1, runs);
  const g2 = await matmulGflops(2, runs);
  const block = await blockTimes(runs, progress);
  return {
    machine: `${cpus().length} x ${cpus()[0]?.model ?? 'unknown CPU'}`,
    runOverheadUs: Number(overhead.toFixed(1)),
    matmulGflops1t: Number(g1.toFixed(1)),
    matmulGflops2t: Number(g2.toFixed(1)),
    blockFwdMs: Number(block.fwd.toFixed(2)),
    blockFwdBwdMs: Number(block.fwdBwd.toFixed(2)),
    fwdBwdOverFwd: Number((block.fwdBwd / block.fwd).toFixed(2)),
  };
}
