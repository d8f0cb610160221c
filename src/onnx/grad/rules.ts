import { GELU_TANH_CUBIC, type GraphBuilder } from '../builder.js';
import { floatAttr, intAttr, intsAttr, stringAttr, type Node, type Value } from '../ir.js';
import { normalizeAxes } from '../shapes.js';
import { numel } from '../../tensor/tensor.js';

export interface RuleContext {
  b: GraphBuilder;
  node: Node;
  inputs: (Value | null)[];
  outputs: Value[];
  /** Gradient of the loss w.r.t. each output (undefined where none flows back). */
  gys: (Value | undefined)[];
  /** Which inputs need a gradient; rules may skip the others. */
  needs: boolean[];
}

/**
 * Returns the gradient for each input, in the broadcast shape of the op if that is simpler:
 * the engine reduces it back to the input's shape.
 */
export type Rule = (ctx: RuleContext) => (Value | undefined)[];

/** Ops without a rule on purpose, and why (shown in the error if a loss needs one). */
export const NON_DIFFERENTIABLE: Record<string, string> = {
  If: 'branches are for inference-time skipping; training graphs mix cached and fresh values arithmetically',
  Equal: 'comparison (boolean output)',
  Less: 'comparison (boolean output)',
  Greater: 'comparison (boolean output)',
  Sign: 'piecewise constant (zero gradient almost everywhere)',
  Constant: 'no inputs',
  ScatterND: 'only emitted as the gradient of Gather',
  ConvTranspose: 'only emitted as the gradient of Conv',
};

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);
const TWO_OVER_SQRT_PI = 2 / Math.sqrt(Math.PI);
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/** Reads a Constant input (axes, shapes, sizes, pads, scales) made by the builder. */
function constNumbers(v: Value | null): number[] {
  const t = v?.producer?.op === 'Constant' ? v.producer.attrs.value : undefined;
  if (!t || t.type !== 'tensor') throw new Error(`backward rule needs ${v?.name ?? 'input'} to be a Constant`);
  return Array.from(t.value.data as ArrayLike<number | bigint>, Number);
}

/** Mean and inverse std of x over `axes`, recomputed from primitives. */
function normalizationStats(b: GraphBuilder, x: Value, axes: number[], epsilon: number): { mean: Value; invStd: Value } {
  const mean = b.reduceMean(x, axes);
  const centered = b.sub(x, mean);
  const variance = b.reduceMean(b.mul(centered, centered), axes);
  return { mean, invStd: b.reciprocal(b.sqrt(b.add(variance, epsilon))) };
}

/** d loss / dx of xhat = (x - mean) * invStd, from gScaled = d loss / d xhat. */
function normalizeBackward(b: GraphBuilder, xhat: Value, invStd: Value, gScaled: Value, axes: number[]): Value {
  const inner = b.sub(b.sub(gScaled, b.reduceMean(gScaled, axes)), b.mul(xhat, b.reduceMean(b.mul(gScaled, xhat), axes)));
  return b.mul(invStd, inner);
}

/** True for a value made by `fill(value, ...)` (e.g. the ones scale of a non-affine norm). */
function isFill(v: Value | null, value: number): boolean {
  const p = v?.producer;
  const scalar = p?.op === 'Expand' ? p.inputs[0]?.producer : p;
  const t = scalar?.op === 'Constant' ? scalar.attrs.value : undefined;
  return !!t && t.type === 'tensor' && t.value.shape.length === 0 && Number(t.value.data[0]) === value;
}

/** Gradient of a keepdims=false reduction, reshaped so that it broadcasts over the input. */
function keepDims(b: GraphBuilder, node: Node, g: Value, x: Value, axes: number[]): Value {
  if (intAttr(node, 'keepdims', 1)) return g;
  return b.reshape(g, x.shape.map((d, i) => (axes.includes(i) ? 1 : d)));
}

/** d gelu / dx. The tanh form uses 1 - t^2 = (1 - t)(1 + t) to save elementwise passes. */
function geluGrad(b: GraphBuilder, x: Value, approximate: string): Value {
  if (approximate === 'tanh') {
    const x2 = b.mul(x, x);
    const t = b.tanh(b.mul(x, b.add(b.mul(x2, SQRT_2_OVER_PI * GELU_TANH_CUBIC), SQRT_2_OVER_PI)));
    const du = b.add(b.mul(x2, 3 * SQRT_2_OVER_PI * GELU_TANH_CUBIC), SQRT_2_OVER_PI);
    const halfOnePlusT = b.add(b.mul(t, 0.5), 0.5);
    return b.mul(halfOnePlusT, b.add(b.mul(b.mul(x, b.sub(1, t)), du), 1));
  }
  const cdf = b.add(b.mul(b.erf(b.mul(x, Math.SQRT1_2)), 0.5), 0.5);
  const pdf = b.mul(b.exp(b.mul(b.mul(x, x), -0.5)), INV_SQRT_2PI);
  return b.add(cdf, b.mul(x, pdf));
}

export const RULES: Record<string, Rule> = {
  Identity: ({ gys: [g] }) => [g],
  Relu: ({ b, inputs: [x], gys: [g] }) => [b.where(b.greater(x!, 0), g!, 0)],
  Add: ({ gys: [g] }) => [g, g],
  Sub: ({ b, gys: [g], needs }) => [g, needs[1] ? b.neg(g!) : undefined],
  Mul: ({ b, inputs: [x, y], gys: [g], needs }) => [needs[0] ? b.mul(g!, y!) : undefined, needs[1] ? b.mul(g!, x!) : undefined],
  Div: ({ b, inputs: [, y], outputs: [out], gys: [g], needs }) => [
    needs[0] ? b.div(g!, y!) : undefined,
    needs[1] ? b.neg(b.div(b.mul(g!, out!), y!)) : undefined,
  ],
  Pow: ({ b, inputs: [x, e], outputs: [out], gys: [g], needs }) => [
    needs[0] ? b.mul(g!, b.mul(e!, b.pow(x!, b.sub(e!, 1)))) : undefined,
    needs[1] ? b.mul(g!, b.mul(out!, b.log(x!))) : undefined,
  ],
  Sum: ({ inputs, gys: [g] }) => inputs.map(() => g),
  Neg: ({ b, gys: [g] }) => [b.neg(g!)],
  Sqrt: ({ b, outputs: [y], gys: [g] }) => [b.div(b.mul(g!, 0.5), y!)],
  Exp: ({ b, outputs: [y], gys: [g] }) => [b.mul(g!, y!)],
  Log: ({ b, inputs: [x], gys: [g] }) => [b.div(g!, x!)],
  Reciprocal: ({ b, outputs: [y], gys: [g] }) => [b.neg(b.mul(g!, b.mul(y!, y!)))],
  Abs: ({ b, inputs: [x], gys: [g] }) => [b.mul(g!, b.sign(x!))],
  Tanh: ({ b, outputs: [y], gys: [g] }) => [b.mul(g!, b.sub(1, b.mul(y!, y!)))],
  Sigmoid: ({ b, outputs: [y], gys: [g] }) => [b.mul(g!, b.mul(y!, b.sub(1, y!)))],
  Erf: ({ b, inputs: [x], gys: [g] }) => [b.mul(g!, b.mul(b.exp(b.neg(b.mul(x!, x!))), TWO_OVER_SQRT_PI))],
  Sin: ({ b, inputs: [x], gys: [g] }) => [b.mul(g!, b.cos(x!))],
  Cos: ({ b, inputs: [x], gys: [g] }) => [b.neg(b.mul(g!, b.sin(x!)))],
  Gelu: ({ b, node, inputs: [x], gys: [g] }) => [b.mul(g!, geluGrad(b, x!, stringAttr(node, 'approximate', 'none')))],
  Cast: ({ b, inputs: [x], gys: [g] }) => [b.cast(g!, x!.dtype)],
  Where: ({ b, inputs: [c], gys: [g], needs }) => [
    undefined,
    needs[1] ? b.where(c!, g!, 0) : undefined,
    needs[2] ? b.where(c!, 0, g!) : undefined,
  ],
  Expand: ({ gys: [g] }) => [g],

  MatMul: ({ b, inputs: [x, w], gys: [g], needs }) => {
    let dx: Value | undefined;
    let dw: Value | undefined;
    if (needs[0]) dx = b.matmul(g!, b.transposeLast(w!));
    if (needs[1]) {
      if (w!.rank === 2 && x!.rank > 2) {
        // Fold the batch into the rows: one [K, rows] x [rows, N] product instead of a batch.
        const k = x!.shape.at(-1)!;
        const n = g!.shape.at(-1)!;
        dw = b.matmul(b.transposeLast(b.reshape(x!, [-1, k])), b.reshape(g!, [-1, n]));
      } else dw = b.matmul(b.transposeLast(x!), g!);
    }
    return [dx, dw];
  },
  Gemm: ({ b, node, inputs: [x, w, c], gys: [g], needs }) => {
    const transA = intAttr(node, 'transA', 0) === 1;
    const transB = intAttr(node, 'transB', 0) === 1;
    const alpha = floatAttr(node, 'alpha', 1);
    const beta = floatAttr(node, 'beta', 1);
    const dx = !needs[0] ? undefined : transA
      ? b.gemm(w!, g!, null, { transA: transB, transB: true, alpha })
      : b.gemm(g!, w!, null, { transB: !transB, alpha });
    const dw = !needs[1] ? undefined : transB
      ? b.gemm(g!, x!, null, { transA: true, transB: transA, alpha })
      : b.gemm(x!, g!, null, { transA: !transA, alpha });
    return [dx, dw, c && needs[2] ? (beta === 1 ? g : b.mul(g!, beta)) : undefined];
  },

  Softmax: ({ b, node, outputs: [y], gys: [g] }) => {
    const axis = intAttr(node, 'axis', -1);
    return [b.mul(y!, b.sub(g!, b.reduceSum(b.mul(g!, y!), [axis])))];
  },
  LayerNormalization: ({ b, node, inputs: [x, scale, bias], outputs, gys: [g], needs }) => {
    const axis = normalizeAxes([intAttr(node, 'axis', -1)], x!.rank)[0]!;
    const axes = x!.shape.map((_, i) => i).filter((i) => i >= axis);
    const unitScale = isFill(scale ?? null, 1);
    let mean: Value;
    let invStd: Value;
    if (x!.dtype === 'float32') {
      // Reuse the forward's statistics (ORT types them float32, so only for float32 inputs).
      const statShape = x!.shape.map((d, i) => (i >= axis ? 1 : d));
      [mean, invStd] = (outputs.length === 3 ? outputs.slice(1) : b.extendOutputs(node, [['float32', statShape], ['float32', statShape]])) as [Value, Value];
    } else ({ mean, invStd } = normalizationStats(b, x!, axes, floatAttr(node, 'epsilon', 1e-5)));
    // Without affine parameters the output already is xhat.
    const xhat = unitScale && !bias ? outputs[0]! : b.mul(b.sub(x!, mean), invStd);
    const dx = needs[0] ? normalizeBackward(b, xhat, invStd, unitScale ? g! : b.mul(g!, scale!), axes) : undefined;
    return [dx, needs[1] ? b.mul(g!, xhat) : undefined, bias && needs[2] ? g : undefined];
  },
  GroupNormalization: ({ b, node, inputs: [x, scale], gys: [g], needs }) => {
    const [n, c] = x!.shape as [number, number];
    const groups = intAttr(node, 'num_groups', 1);
    const perChannel = [c, ...x!.shape.slice(2).map(() => 1)];
    const notChannel = x!.shape.map((_, i) => i).filter((i) => i !== 1);
    const gScaled = b.reshape(b.mul(g!, b.reshape(scale!, perChannel)), [n, groups, -1]);
    const grouped = b.reshape(x!, [n, groups, -1]);
    const { mean, invStd } = normalizationStats(b, grouped, [2], floatAttr(node, 'epsilon', 1e-5));
    const xhat = b.mul(b.sub(grouped, mean), invStd);
    return [
      needs[0] ? b.reshape(normalizeBackward(b, xhat, invStd, gScaled, [2]), x!.shape) : undefined,
      needs[1] ? b.reduceSum(b.mul(g!, b.reshape(xhat, x!.shape)), notChannel, false) : undefined,
      needs[2] ? b.reduceSum(g!, notChannel, false) : undefined,
    ];
  },

  ReduceSum: ({ b, node, inputs: [x, axesIn], gys: [g] }) => {
    const axes = normalizeAxes(constNumbers(axesIn!), x!.rank);
    return [b.expand(keepDims(b, node, g!, x!, axes), x!.shape)];
  },
  ReduceMean: ({ b, node, inputs: [x, axesIn], gys: [g] }) => {
    const axes = normalizeAxes(constNumbers(axesIn!), x!.rank);
    const count = axes.reduce((n, a) => n * x!.shape[a]!, 1);
    return [b.expand(b.mul(keepDims(b, node, g!, x!, axes), 1 / count), x!.shape)];
  },
  ReduceMax: ({ b, node, inputs: [x, axesIn], outputs: [y], gys: [g] }) => {
    // Ties share the gradient equally.
    const axes = normalizeAxes(constNumbers(axesIn!), x!.rank);
    const mask = b.cast(b.equal(x!, keepDims(b, node, y!, x!, axes)), x!.dtype);
    return [b.div(b.mul(mask, keepDims(b, node, g!, x!, axes)), b.reduceSum(mask, axes))];
  },

  Reshape: ({ b, inputs: [x], gys: [g] }) => [b.reshape(g!, x!.shape)],
  Squeeze: ({ b, inputs: [x], gys: [g] }) => [b.reshape(g!, x!.shape)],
  Unsqueeze: ({ b, inputs: [x], gys: [g] }) => [b.reshape(g!, x!.shape)],
  Transpose: ({ b, node, gys: [g] }) => {
    const perm = intsAttr(node, 'perm', []);
    const inverse = perm.map((_, i) => perm.indexOf(i));
    return [b.transpose(g!, inverse)];
  },
  Concat: ({ b, node, inputs, gys: [g] }) => {
    const axis = intAttr(node, 'axis', 0);
    return b.split(g!, inputs.map((v) => v!.shape[axis]!), axis);
  },
  Split: ({ b, node, outputs, gys }) => {
    const axis = intAttr(node, 'axis', 0);
    const parts = outputs.map((o, i) => gys[i] ?? b.fill(0, o.dtype, o.shape));
    return [b.concat(parts, axis)];
  },
  Slice: ({ b, inputs: [x, starts, ends, axesIn, steps], gys: [g] }) => {
    if (steps && constNumbers(steps).some((s) => s !== 1)) throw new Error('Slice gradient supports step 1 only');
    const axes = normalizeAxes(constNumbers(axesIn!), x!.rank);
    const s = constNumbers(starts!);
    const e = constNumbers(ends!);
    const pads = new Array<number>(2 * x!.rank).fill(0);
    axes.forEach((a, i) => {
      pads[a] = s[i]!;
      pads[a + x!.rank] = x!.shape[a]! - e[i]!;
    });
    return [b.pad(g!, pads)];
  },
  Pad: ({ b, inputs: [x, padsIn], gys: [g] }) => {
    const pads = constNumbers(padsIn!);
    const axes = x!.shape.map((_, i) => i);
    return [b.slice(g!, pads.slice(0, x!.rank), x!.shape.map((d, i) => pads[i]! + d), axes)];
  },
  Gather: ({ b, node, inputs: [x, indices], gys: [g] }) => {
    if (intAttr(node, 'axis', 0) !== 0) throw new Error('Gather gradient supports axis 0 only (embedding tables)');
    const idx = b.unsqueeze(b.cast(indices!, 'int64'), [-1]);
    return [b.scatterNDAdd(b.fill(0, x!.dtype, x!.shape), idx, g!), undefined];
  },

  Conv: ({ b, node, inputs: [x, w, bias], outputs: [y], gys: [g], needs }) => {
    if (intAttr(node, 'group', 1) !== 1) throw new Error('Conv gradient supports group 1 only');
    const strides = [...intsAttr(node, 'strides', [1, 1])];
    const pads = [...intsAttr(node, 'pads', [0, 0, 0, 0])];
    const dilations = [...intsAttr(node, 'dilations', [1, 1])];
    const kernel = w!.shape.slice(2);
    let dx: Value | undefined;
    let dw: Value | undefined;
    if (needs[0]) {
      const outputPadding = [0, 1].map((i) =>
        x!.shape[2 + i]! - (strides[i]! * (y!.shape[2 + i]! - 1) + (kernel[i]! - 1) * dilations[i]! + 1 - pads[i]! - pads[i + 2]!));
      dx = b.convTranspose(g!, w!, { strides, pads, dilations, outputPadding });
    }
    if (needs[1]) {
      // Correlate the input with the output gradient, batch as channels: strides and
      // dilations swap roles. The result can overhang the kernel by the stride remainder.
      const xt = b.transpose(x!, [1, 0, 2, 3]);
      const gt = b.transpose(g!, [1, 0, 2, 3]);
      const full = b.conv(xt, gt, null, { strides: dilations, dilations: strides, pads });
      dw = b.transpose(b.slice(full, [0, 0], kernel, [2, 3]), [1, 0, 2, 3]);
    }
    return [dx, dw, bias && needs[2] ? b.reduceSum(g!, [0, 2, 3], false) : undefined];
  },
  Resize: ({ b, inputs: [x, , scalesIn], gys: [g] }) => {
    const scales = constNumbers(scalesIn!);
    // Integer nearest upsampling repeats each element: sum the repeats back.
    const split = x!.shape.flatMap((d, i) => [d, scales[i]!]);
    const repeatAxes = x!.shape.map((_, i) => 2 * i + 1);
    if (numel(split) !== numel(g!.shape)) throw new Error('Resize gradient needs integer scales');
    return [b.reshape(b.reduceSum(b.reshape(g!, split), repeatAxes, false), x!.shape)];
  },
};
