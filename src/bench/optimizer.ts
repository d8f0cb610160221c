/**
 * Which AdamW is faster for training: the JS loop (src/train/optim.ts) or the ONNX update graph
 * (src/train/adamw-graph.ts)? Both get the same random parameters; the graph's time includes
 * handing params, grads and moments to ORT and reading the results back, which training would pay.
 *
 * The JS number depends on how the process was started: typed-array loops get ~40% slower once V8's
 * "ArrayBuffer detaching" protector is invalidated (e.g. by transferring a buffer), and loading
 * onnxruntime-node through tsx's CommonJS hook (`tsx -e`, `node --require tsx/cjs`) shows the same
 * slowdown; `bin/harmonica.js` (ESM hook only) does not.
 */
import { Rng } from '../tensor/rng.js';
import { createAdamWGraphStep, type Arrays } from '../train/adamw-graph.js';
import { AdamW, type AdamWConfig } from '../train/optim.js';
import { median, timeRuns } from './timing.js';

export interface BenchOptimizerOptions {
  /** Total parameter count (default 4e6). */
  params?: number;
  /** How many tensors the parameters are split into (default 40, like a small DiT). */
  tensors?: number;
  /** Timed steps per implementation; the median is reported (default 7). */
  runs?: number;
  /** ORT intra-op threads (default: all cores). */
  threads?: number;
}

export interface BenchOptimizerResult {
  jsStepMs: number;
  graphStepMs: number;
  faster: 'js' | 'graph';
  params: number;
}

/**
 * Sizes like a transformer's: three of every four tensors are weight matrices, the fourth a small
 * bias/norm vector; the matrices share what the vectors leave.
 */
function tensorSizes(total: number, count: number): number[] {
  const vectors = Math.floor(count / 4);
  const vectorSize = Math.max(1, Math.min(1024, Math.floor(total / (count * 64))));
  const matrices = count - vectors;
  const perMatrix = Math.floor((total - vectors * vectorSize) / matrices);
  const sizes = Array.from({ length: count }, (_, i) => (i % 4 === 3 ? vectorSize : perMatrix));
  sizes[0]! += total - sizes.reduce((a, b) => a + b, 0); // the remainder, so the total is exact
  return sizes;
}

async function timeSteps(runs: number, step: () => unknown): Promise<number> {
  return median(await timeRuns(step, runs, 2));
}

export async function benchOptimizer(opts: BenchOptimizerOptions = {}): Promise<BenchOptimizerResult> {
  const total = Math.round(opts.params ?? 4e6);
  const count = opts.tensors ?? 40;
  const runs = opts.runs ?? 7;
  if (!(total >= count && count >= 1 && runs >= 1)) throw new Error(`benchOptimizer: need params >= tensors >= 1 and runs >= 1, got ${total}, ${count}, ${runs}`);

  const rng = new Rng(0);
  const sizes = tensorSizes(total, count);
  const names = sizes.map((_, i) => `t${i}`);
  const init: Arrays = {};
  const grads: Arrays = {};
  names.forEach((name, i) => {
    init[name] = rng.fillNormal(new Float32Array(sizes[i]!), 0, 0.02);
    grads[name] = rng.fillNormal(new Float32Array(sizes[i]!), 0, 1e-3);
  });
  // Clipping on, as training uses it: both variants then compute the global norm.
  const config: AdamWConfig = { lr: 1e-4, weightDecay: 0.01, maxGradNorm: 1 };

  const jsParams: Arrays = Object.fromEntries(names.map((n) => [n, init[n]!.slice()]));
  const js = new AdamW(jsParams, config);
  const jsStepMs = await timeSteps(runs, () => js.step(grads));

  const shapes = Object.fromEntries(names.map((n, i) => [n, [sizes[i]!]]));
  const graph = await createAdamWGraphStep(shapes, config, opts.threads ? { threads: opts.threads } : {});
  let params: Arrays = Object.fromEntries(names.map((n) => [n, init[n]!.slice()]));
  let m: Arrays = Object.fromEntries(names.map((n, i) => [n, new Float32Array(sizes[i]!)]));
  let v: Arrays = Object.fromEntries(names.map((n, i) => [n, new Float32Array(sizes[i]!)]));
  let t = 0;
  let graphStepMs: number;
  try {
    // Outputs are fresh arrays; training would feed them straight to the next forward/backward,
    // so they replace the old ones rather than being copied back.
    graphStepMs = await timeSteps(runs, async () => {
      ({ params, m, v } = await graph.step(params, grads, m, v, ++t));
    });
  } finally {
    await graph.release();
  }

  const round = (ms: number) => Number(ms.toFixed(2));
  return { jsStepMs: round(jsStepMs), graphStepMs: round(graphStepMs), faster: jsStepMs <= graphStepMs ? 'js' : 'graph', params: total };
}
