import { expect } from 'vitest';
import { GraphBuilder } from '../../src/onnx/builder.js';
import { gradients } from '../../src/onnx/grad/index.js';
import type { Value } from '../../src/onnx/ir.js';
import { Session } from '../../src/onnx/session.js';
import type { DType } from '../../src/tensor/dtype.js';
import { Rng } from '../../src/tensor/rng.js';
import { numel, tensor, type HostTensor } from '../../src/tensor/tensor.js';

export interface GradInput {
  shape: number[];
  /** Values, or a generator; default: standard normal. */
  init?: number[] | ((rng: Rng, n: number) => number[]);
  dtype?: DType;
  /** Inputs like indices or conditions: fed but not differentiated. */
  constant?: boolean;
}

export interface GradCheckOptions {
  /** Finite-difference step; 1e-5 in float64. */
  eps?: number;
  /** Relative tolerance on each directional derivative. */
  rtol?: number;
  /** Absolute tolerance per unit of |loss| (finite differences lose ~1e-16 * |loss| / eps). */
  atol?: number;
  seed?: number;
}

/** Tolerances for ops that ORT runs only in float32 (inputs cast to float32 around the op). */
export const FLOAT32_OPTIONS: GradCheckOptions = { eps: 1e-3, rtol: 2e-3, atol: 1e-5 };

/**
 * Central finite-difference check of `gradients`: loss = sum(f(inputs) * R) with a fixed
 * random R, compared along every coordinate of small inputs and along random directions of
 * larger ones. The graph runs in float64, so analytic and numeric derivatives agree to ~1e-8.
 * Weights that `f` creates with `b.param` are graph inputs and are checked too.
 */
export async function gradCheck(
  inputs: Record<string, GradInput>,
  f: (b: GraphBuilder, x: Record<string, Value>) => Value | Value[],
  options: GradCheckOptions = {},
): Promise<{ maxError: number; checks: number; checked: string[] }> {
  const { eps = 1e-5, rtol = 1e-6, atol = 1e-9, seed = 1 } = options;
  const rng = new Rng(seed);
  const b = new GraphBuilder('gradcheck', { weights: 'inputs' });
  const values: Record<string, Value> = {};
  const feeds: Record<string, HostTensor> = {};
  for (const [name, spec] of Object.entries(inputs)) {
    const dtype = spec.dtype ?? 'float64';
    const n = numel(spec.shape);
    const data = typeof spec.init === 'function' ? spec.init(rng, n) : spec.init ?? Array.from({ length: n }, () => rng.normal());
    values[name] = b.input(name, dtype, spec.shape);
    feeds[name] = tensor(dtype, spec.shape, data);
  }
  const outs = [f(b, values)].flat();
  const terms = outs.map((y) => {
    const weights = tensor('float64', y.shape, Array.from({ length: numel(y.shape) }, () => rng.normal()));
    const y64 = b.cast(y, 'float64');
    return b.reduceSum(b.mul(y64, b.constant(weights)), y.shape.map((_, i) => i), false);
  });
  const loss = b.sum(terms);
  for (const [v, t] of b.graph.paramValues) {
    values[v.name] = v;
    feeds[v.name] = t;
    inputs[v.name] = { shape: [...t.shape] };
  }
  const wrtNames = Object.keys(inputs).filter((k) => !inputs[k]!.constant);
  const grads = gradients(b, loss, wrtNames.map((k) => values[k]!));
  b.output(loss, 'loss');
  grads.forEach((g, i) => b.output(g, `grad_${wrtNames[i]}`));

  const session = await Session.create(b.graph, { threads: 1 });
  const analytic = await session.run(feeds);
  const lossScale = Math.max(1, Math.abs((analytic.loss!.data as Float64Array)[0]!));
  const lossAt = async (name: string, direction: Float64Array, scale: number) => {
    const base = feeds[name]!;
    const moved = Float64Array.from(base.data as Float64Array, (v, i) => v + scale * direction[i]!);
    const out = await session.run({ ...feeds, [name]: tensor(base.dtype, base.shape, moved) }, ['loss']);
    return (out.loss!.data as Float64Array)[0]!;
  };

  let maxError = 0;
  let checks = 0;
  for (const name of wrtNames) {
    const grad = analytic[`grad_${name}`]!;
    expect(grad.shape).toEqual(inputs[name]!.shape);
    const n = numel(inputs[name]!.shape);
    const directions: Float64Array[] = [];
    if (n <= 48) {
      for (let i = 0; i < n; i++) directions.push(Float64Array.from({ length: n }, (_, k) => (k === i ? 1 : 0)));
    } else {
      for (let i = 0; i < 6; i++) directions.push(Float64Array.from({ length: n }, () => rng.normal()));
    }
    for (const d of directions) {
      const numeric = ((await lossAt(name, d, eps)) - (await lossAt(name, d, -eps))) / (2 * eps);
      let exact = 0;
      for (let i = 0; i < n; i++) exact += Number(grad.data[i]) * d[i]!;
      const error = Math.abs(exact - numeric);
      maxError = Math.max(maxError, error / Math.max(Math.abs(numeric), Math.abs(exact), 1e-12));
      checks++;
      if (error > atol * lossScale + rtol * Math.max(Math.abs(numeric), Math.abs(exact))) {
        throw new Error(`gradient of ${name} wrong: analytic ${exact}, numeric ${numeric} (direction ${checks})`);
      }
    }
  }
  await session.release();
  return { maxError, checks, checked: wrtNames };
}

/** Runs `op` in float32 inside a float64 graph, for ops without float64 kernels in ORT. */
export function inFloat32(b: GraphBuilder, op: (x: Value[]) => Value, ...xs: Value[]): Value {
  return b.cast(op(xs.map((x) => b.cast(x, 'float32'))), 'float64');
}

export const positive = (rng: Rng, n: number) => Array.from({ length: n }, () => 0.5 + rng.uniform() * 2);
