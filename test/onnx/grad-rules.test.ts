import { describe, expect, it } from 'vitest';
import { FLOAT32_OPTIONS, gradCheck, inFloat32, positive } from '../helpers/gradcheck.js';
import { RULES, NON_DIFFERENTIABLE } from '../../src/onnx/grad/index.js';
import { tensor } from '../../src/tensor/tensor.js';

describe('backward rules match central finite differences (float64)', () => {
  it('Add/Sub/Mul/Div with broadcasting', async () => {
    const r = await gradCheck({ a: { shape: [2, 3, 4] }, v: { shape: [4] }, c: { shape: [3, 1] }, d: { shape: [1, 4], init: positive } }, (b, { a, v, c, d }) =>
      b.div(b.mul(b.sub(b.add(a!, v!), c!), b.add(c!, 2)), d!));
    expect(r.checks).toBeGreaterThan(10);
  });
  it('numbers as operands', async () => {
    await gradCheck({ x: { shape: [3, 2], init: positive } }, (b, { x }) => b.div(1, b.sub(b.mul(2, x!), 0.1)));
  });
  it('Pow with tensor base and exponent (broadcast)', async () => {
    await gradCheck({ x: { shape: [2, 3], init: positive }, e: { shape: [3] } }, (b, { x, e }) => b.pow(x!, e!));
  });
  it('Pow with a constant exponent', async () => {
    await gradCheck({ x: { shape: [5], init: positive } }, (b, { x }) => b.pow(x!, 3));
  });
  const unary = ['sqrt', 'exp', 'log', 'neg', 'abs', 'reciprocal', 'tanh', 'sigmoid', 'sin', 'cos', 'identity', 'silu', 'relu'] as const;
  for (const op of unary) {
    it(op, async () => {
      const init = ['sqrt', 'log', 'reciprocal'].includes(op) ? positive : undefined;
      await gradCheck({ x: { shape: [2, 5], init } }, (b, { x }) => b[op](x!));
    });
  }
  it('Erf (float32)', async () => {
    await gradCheck({ x: { shape: [2, 5] } }, (b, { x }) => inFloat32(b, ([v]) => b.erf(v!), x!), FLOAT32_OPTIONS);
  });
  it('Gelu exact (float32)', async () => {
    await gradCheck({ x: { shape: [2, 5] } }, (b, { x }) => inFloat32(b, ([v]) => b.gelu(v!), x!), FLOAT32_OPTIONS);
  });
  it('Gelu tanh approximation (float32)', async () => {
    await gradCheck({ x: { shape: [2, 5] } }, (b, { x }) => inFloat32(b, ([v]) => b.gelu(v!, 'tanh'), x!), FLOAT32_OPTIONS);
  });
  it('Softmax over the last and a middle axis', async () => {
    await gradCheck({ x: { shape: [2, 3, 4] } }, (b, { x }) => [b.softmax(x!, -1), b.softmax(x!, 1)]);
  });
  it('LayerNormalization with scale and bias, and without affine', async () => {
    await gradCheck({ x: { shape: [2, 3, 4] }, s: { shape: [4] }, t: { shape: [4] } }, (b, { x, s, t }) =>
      [b.layerNorm(x!, s!, t!, { epsilon: 1e-6 }), b.layerNorm(x!, null, null, { axis: 1 })]);
  });
  it('LayerNormalization in float32 (reuses the forward mean and inverse std)', async () => {
    await gradCheck({ x: { shape: [2, 3, 4] }, s: { shape: [4] }, t: { shape: [4] } }, (b, { x, s, t }) => [
      inFloat32(b, ([v, sc, bi]) => b.layerNorm(v!, sc!, bi!), x!, s!, t!),
      inFloat32(b, ([v]) => b.layerNorm(v!, null, null, { axis: 1 }), x!),
    ], FLOAT32_OPTIONS);
  });
  it('RMS norm', async () => {
    await gradCheck({ x: { shape: [2, 3, 6] }, s: { shape: [6] } }, (b, { x, s }) => b.rmsNorm(x!, s!));
  });
  it('GroupNormalization (float32)', async () => {
    await gradCheck({ x: { shape: [2, 4, 3, 2] }, s: { shape: [4] }, t: { shape: [4] } }, (b, { x, s, t }) =>
      inFloat32(b, ([v, sc, bi]) => b.groupNorm(v!, 2, sc!, bi!), x!, s!, t!), FLOAT32_OPTIONS);
  });
  it('ReduceMean / ReduceSum / ReduceMax with and without keepdims', async () => {
    await gradCheck({ x: { shape: [2, 3, 4] } }, (b, { x }) => [
      b.reduceMean(x!, [1], true), b.reduceMean(x!, [0, 2], false), b.reduceSum(x!, [-1], false), b.reduceSum(x!, [0, 1, 2], true),
      b.reduceMax(x!, [2], true), b.reduceMax(x!, [0], false),
    ]);
  });
  it('Reshape, Transpose, Unsqueeze, Squeeze, Expand', async () => {
    await gradCheck({ x: { shape: [2, 3, 4] }, y: { shape: [3, 1] } }, (b, { x, y }) => [
      b.transpose(b.reshape(x!, [6, 4]), [1, 0]), b.squeeze(b.unsqueeze(x!, [0, 3]), [0]), b.expand(y!, [2, 3, 5]),
    ]);
  });
  it('Concat and Split (one part unused)', async () => {
    await gradCheck({ x: { shape: [2, 3] }, y: { shape: [2, 2] } }, (b, { x, y }) => {
      const [p, , r] = b.split(b.concat([x!, y!], 1), [1, 2, 2], 1);
      return [b.mul(p!, 2), r!];
    });
  });
  it('Slice and Pad', async () => {
    await gradCheck({ x: { shape: [3, 5] } }, (b, { x }) => [b.slice(x!, [1, -4], [3, 4], [0, 1]), b.pad(x!, [1, 0, 2, 1])]);
  });
  it('Gather (embedding lookup with repeated indices)', async () => {
    await gradCheck({ table: { shape: [4, 3] }, idx: { shape: [2, 3], dtype: 'int64', init: [0, 2, 2, 3, 0, 0], constant: true } },
      (b, { table, idx }) => b.gather(table!, idx!));
  });
  it('Where with a broadcast condition', async () => {
    await gradCheck({ x: { shape: [2, 3] }, y: { shape: [3] }, c: { shape: [2, 1], dtype: 'bool', init: [1, 0], constant: true } },
      (b, { x, y, c }) => b.where(c!, x!, y!));
  });
  it('Cast (float64 -> float32 -> float64)', async () => {
    await gradCheck({ x: { shape: [2, 3] } }, (b, { x }) => b.cast(b.mul(b.cast(x!, 'float32'), 3), 'float64'), FLOAT32_OPTIONS);
  });
  it('MatMul: plain, batched x 2-D weight, broadcast batches', async () => {
    await gradCheck({ a: { shape: [3, 4] }, w: { shape: [4, 2] }, x: { shape: [2, 3, 4] }, p: { shape: [2, 1, 3, 4] }, q: { shape: [3, 4, 2] } },
      (b, { a, w, x, p, q }) => [b.matmul(a!, w!), b.matmul(x!, w!), b.matmul(p!, q!)]);
  });
  it('Gemm with transposes, alpha, beta and a broadcast C', async () => {
    await gradCheck({ a: { shape: [3, 4] }, at: { shape: [4, 3] }, w: { shape: [4, 2] }, wt: { shape: [2, 4] }, c: { shape: [2] } },
      (b, { a, at, w, wt, c }) => [
        b.gemm(a!, w!, c!, { alpha: 0.5, beta: 2 }), b.gemm(at!, wt!, c!, { transA: true, transB: true }),
        b.gemm(at!, w!, null, { transA: true }), b.gemm(a!, wt!, null, { transB: true, alpha: 3 }),
      ]);
  });
  it('Conv with stride, padding, dilation and bias (float32)', async () => {
    await gradCheck({ x: { shape: [2, 3, 7, 6] }, w: { shape: [4, 3, 3, 2] }, c: { shape: [4] } }, (b, { x, w, c }) => [
      inFloat32(b, ([v, k, bias]) => b.conv(v!, k!, bias!, { strides: [2, 2], pads: [1, 0, 1, 1] }), x!, w!, c!),
      inFloat32(b, ([v, k]) => b.conv(v!, k!, null, { dilations: [2, 1] }), x!, w!),
    ], FLOAT32_OPTIONS);
  });
  it('Conv as patch embedding (kernel = stride, float32)', async () => {
    await gradCheck({ x: { shape: [1, 2, 4, 4] }, w: { shape: [3, 2, 2, 2] } }, (b, { x, w }) =>
      inFloat32(b, ([v, k]) => b.conv(v!, k!, null, { strides: [2, 2] }), x!, w!), FLOAT32_OPTIONS);
  });
  it('Resize nearest with integer scales (float32)', async () => {
    await gradCheck({ x: { shape: [1, 2, 2, 3] } }, (b, { x }) => inFloat32(b, ([v]) => b.resizeNearest(v!, [1, 1, 2, 3]), x!), FLOAT32_OPTIONS);
  });
  it('shared sub-expressions accumulate (x used many times)', async () => {
    await gradCheck({ x: { shape: [3] }, y: { shape: [3] } }, (b, { x, y }) => {
      const s = b.mul(x!, y!);
      return b.add(b.mul(s, s), b.mul(b.exp(s), x!));
    });
  });
});

describe('rule coverage', () => {
  it('every op the builder can emit has a backward rule or a documented reason', () => {
    const emitted = ['MatMul', 'Gemm', 'Add', 'Sub', 'Mul', 'Div', 'Pow', 'Sqrt', 'Exp', 'Log', 'Neg', 'Abs', 'Reciprocal',
      'Tanh', 'Sigmoid', 'Erf', 'Gelu', 'Softmax', 'LayerNormalization', 'GroupNormalization', 'ReduceMean', 'ReduceSum',
      'ReduceMax', 'Reshape', 'Transpose', 'Concat', 'Split', 'Slice', 'Pad', 'Gather', 'Where', 'Cast', 'Expand', 'Unsqueeze',
      'Squeeze', 'Conv', 'Resize', 'Sin', 'Cos', 'Identity', 'Constant', 'Sum', 'If', 'Equal', 'Less', 'Greater', 'Sign',
      'ScatterND', 'ConvTranspose', 'Relu'];
    for (const op of emitted) expect(RULES[op] ?? NON_DIFFERENTIABLE[op], op).toBeDefined();
  });
  it('tensor helper sanity', () => {
    expect(tensor('float64', [2], [1, 2]).data).toEqual(Float64Array.from([1, 2]));
  });
});
