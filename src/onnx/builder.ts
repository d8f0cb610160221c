import { DTYPES, type DType } from '../tensor/dtype.js';
import { sliceTensor, tensor, type HostTensor } from '../tensor/tensor.js';
import { attr, CONTRIB_DOMAIN, Graph, Value, type Attr, type Node, type ParamOrigin, type Shape } from './ir.js';
import { broadcastShapes, normalizeAxes, normalizeAxis, reshapeTarget, sameShape, ShapeError } from './shapes.js';

/** The cubic coefficient of GELU's tanh approximation (Hendrycks & Gimpel, 2016). */
export const GELU_TANH_CUBIC = 0.044715;

/** Where model weights go: initializers (inference, prepacked) or graph inputs (training). */
export type WeightMode = 'initializers' | 'inputs';

export interface BuilderOptions {
  weights?: WeightMode;
}

/** A number operand becomes a scalar constant of the other operand's dtype. */
export type Operand = Value | number;

export interface ConvOptions {
  strides?: number[];
  pads?: number[];
  dilations?: number[];
  group?: number;
}

/** Naming state shared by a graph and its `If` branches, so every name is unique. */
class Names {
  private readonly used = new Set<string>();
  private readonly counts = new Map<string, number>();

  unique(base: string): string {
    let name = base;
    let n = this.counts.get(base) ?? 0;
    while (this.used.has(name)) name = `${base}_${++n}`;
    this.counts.set(base, n);
    this.used.add(name);
    return name;
  }
}

/**
 * Builds an ONNX graph with static shapes. Each op method checks its operands, infers the
 * output shape and returns the output Value(s). Models, backward rules and benchmarks all
 * use this one API.
 */
export class GraphBuilder {
  readonly graph: Graph;
  readonly weights: WeightMode;
  private readonly names: Names;
  private readonly scopes: string[] = [];
  private readonly constants = new Map<string, Value>();
  /** The builder of the main graph: `If` branches keep their initializers there. */
  private readonly root: GraphBuilder;
  private readonly slices = new Map<string, Value>();

  constructor(name = 'graph', options: BuilderOptions = {}, names?: Names, root?: GraphBuilder) {
    this.graph = new Graph(name);
    this.weights = options.weights ?? 'initializers';
    this.names = names ?? new Names();
    this.root = root ?? this;
  }

  // ---- graph boundary ----------------------------------------------------------------

  input(name: string, dtype: DType, shape: Shape): Value {
    const v = new Value(this.names.unique(name), dtype, [...shape], 'input');
    this.graph.inputs.push(v);
    return v;
  }

  initializer(name: string, t: HostTensor): Value {
    if (this.root !== this) return this.root.initializer(name, t);
    const v = new Value(this.names.unique(name), t.dtype, [...t.shape], 'initializer');
    this.graph.initializers.set(v, t);
    return v;
  }

  /**
   * A model weight: an initializer or a graph input, as the builder's weight mode says.
   * `origin` (default: `t` itself, unchanged) lets trainers write the value back.
   */
  param(name: string, t: HostTensor, origin: ParamOrigin = { from: t, toCheckpoint: (x) => x }): Value {
    const v = this.weights === 'initializers' ? this.initializer(name, t) : this.input(name, t.dtype, t.shape);
    if (this.weights === 'inputs') this.graph.paramValues.set(v, t);
    this.graph.paramOrigins.set(v, origin);
    return v;
  }

  /** Marks a value as a graph output, named `name` (an Identity is added where needed). */
  output(v: Value, name?: string): Value {
    let out = v;
    if (v.kind !== 'node' || this.graph.outputs.includes(v) || !this.graph.nodes.includes(v.producer!)) {
      out = this.identity(v);
    }
    if (name) this.rename(out, name);
    this.graph.outputs.push(out);
    return out;
  }

  rename(v: Value, name: string): Value {
    v.name = this.names.unique(name);
    return v;
  }

  /** Runs `fn` with `name` appended to the scope used to name nodes and values. */
  scope<T>(name: string, fn: () => T): T {
    this.scopes.push(name);
    try {
      return fn();
    } finally {
      this.scopes.pop();
    }
  }

  // ---- constants ---------------------------------------------------------------------

  /** A `Constant` node: small fixed tensors that are never trained. */
  constant(t: HostTensor, label = 'const'): Value {
    return this.node('Constant', [], [[t.dtype, t.shape]], { value: attr.tensor(t) }, label)[0]!;
  }

  scalar(value: number, dtype: DType): Value {
    const key = `${dtype}:${Object.is(value, -0) ? '-0' : value}`;
    let v = this.constants.get(key);
    if (!v) {
      v = this.constant(tensor(dtype, [], [value]), 'scalar');
      this.constants.set(key, v);
    }
    return v;
  }

  /** A 1-D int64 constant (shapes, axes, pads). */
  ints(values: readonly number[]): Value {
    const key = `ints:${values.join(',')}`;
    let v = this.constants.get(key);
    if (!v) {
      v = this.constant(tensor('int64', [values.length], values), 'ints');
      this.constants.set(key, v);
    }
    return v;
  }

  /** A tensor of `shape` filled with `value`, without storing the full tensor. */
  fill(value: number, dtype: DType, shape: Shape): Value {
    return shape.length === 0 ? this.scalar(value, dtype) : this.expand(this.scalar(value, dtype), shape);
  }

  private operand(x: Operand, like: Value): Value {
    return typeof x === 'number' ? this.scalar(x, like.dtype) : x;
  }

  // ---- node creation -----------------------------------------------------------------

  /** Adds a node; the one place where names are made and dynamic shapes are refused. */
  node(op: string, inputs: (Value | null)[], outputs: [DType, Shape][], attrs: Record<string, Attr> = {}, label?: string): Value[] {
    for (const v of inputs) {
      if (v && v.shape.some((d) => d < 0) && op !== 'Identity') {
        throw new ShapeError(`${op}: input ${v.name} has a dynamic shape [${v.shape}]; only Identity and graph outputs may take it`);
      }
    }
    const prefix = this.scopes.length ? `${this.scopes.join('/')}/` : '';
    const name = this.names.unique(`${prefix}${op}`);
    const node: Node = { op, name, inputs, outputs: [], attrs };
    const base = label ? `${prefix}${label}` : name;
    node.outputs = outputs.map(([dtype, shape], i) =>
      new Value(this.names.unique(outputs.length > 1 ? `${base}:${i}` : base), dtype, [...shape], op === 'Constant' ? 'constant' : 'node', node));
    this.graph.nodes.push(node);
    return node.outputs;
  }

  /**
   * Gives an existing node more outputs (optional ONNX outputs such as LayerNormalization's
   * mean and inverse std, which backward rules reuse).
   */
  extendOutputs(node: Node, outputs: [DType, Shape][]): Value[] {
    const added = outputs.map(([dtype, shape], i) =>
      new Value(this.names.unique(`${node.name}:${node.outputs.length + i}`), dtype, [...shape], 'node', node));
    node.outputs.push(...added);
    return added;
  }

  private unary(op: string, x: Value, attrs: Record<string, Attr> = {}): Value {
    return this.node(op, [x], [[x.dtype, x.shape]], attrs)[0]!;
  }

  private binary(op: string, a: Operand, b: Operand, outDtype?: DType): Value {
    if (typeof a === 'number' && typeof b === 'number') throw new Error(`${op}: at least one operand must be a Value`);
    const va = typeof a === 'number' ? this.operand(a, b as Value) : a;
    const vb = this.operand(b, va);
    if (va.dtype !== vb.dtype) throw new ShapeError(`${op}: dtype ${va.dtype} vs ${vb.dtype} (${va.name}, ${vb.name})`);
    return this.node(op, [va, vb], [[outDtype ?? va.dtype, broadcastShapes(op, va.shape, vb.shape)]])[0]!;
  }

  // ---- elementwise -------------------------------------------------------------------

  add(a: Operand, b: Operand): Value { return this.binary('Add', a, b); }
  sub(a: Operand, b: Operand): Value { return this.binary('Sub', a, b); }
  mul(a: Operand, b: Operand): Value { return this.binary('Mul', a, b); }
  div(a: Operand, b: Operand): Value { return this.binary('Div', a, b); }
  pow(a: Operand, b: Operand): Value { return this.binary('Pow', a, b); }
  equal(a: Operand, b: Operand): Value { return this.binary('Equal', a, b, 'bool'); }
  less(a: Operand, b: Operand): Value { return this.binary('Less', a, b, 'bool'); }
  greater(a: Operand, b: Operand): Value { return this.binary('Greater', a, b, 'bool'); }

  sqrt(x: Value): Value { return this.unary('Sqrt', x); }
  exp(x: Value): Value { return this.unary('Exp', x); }
  log(x: Value): Value { return this.unary('Log', x); }
  neg(x: Value): Value { return this.unary('Neg', x); }
  abs(x: Value): Value { return this.unary('Abs', x); }
  sign(x: Value): Value { return this.unary('Sign', x); }
  reciprocal(x: Value): Value { return this.unary('Reciprocal', x); }
  tanh(x: Value): Value { return this.unary('Tanh', x); }
  sigmoid(x: Value): Value { return this.unary('Sigmoid', x); }
  erf(x: Value): Value { return this.unary('Erf', x); }
  sin(x: Value): Value { return this.unary('Sin', x); }
  cos(x: Value): Value { return this.unary('Cos', x); }
  identity(x: Value): Value { return this.unary('Identity', x); }
  relu(x: Value): Value { return this.unary('Relu', x); }

  /** x * sigmoid(x); ORT fuses the pattern for inference. */
  silu(x: Value): Value { return this.mul(x, this.sigmoid(x)); }

  /**
   * ONNX Gelu (opset 20): exact (erf) or the tanh approximation. In float64 the tanh form is
   * spelled out, because ORT's float64 Gelu body carries float32 constants (errors ~1e-8).
   */
  gelu(x: Value, approximate: 'none' | 'tanh' = 'none'): Value {
    if (approximate === 'tanh' && x.dtype === 'float64') {
      const inner = this.mul(this.add(x, this.mul(this.mul(this.mul(x, x), x), GELU_TANH_CUBIC)), Math.sqrt(2 / Math.PI));
      return this.mul(this.mul(x, 0.5), this.add(this.tanh(inner), 1));
    }
    return this.unary('Gelu', x, { approximate: attr.string(approximate) });
  }

  where(cond: Value, x: Operand, y: Operand): Value {
    const vx = typeof x === 'number' ? this.operand(x, y as Value) : x;
    const vy = this.operand(y, vx);
    if (cond.dtype !== 'bool') throw new ShapeError(`Where: condition ${cond.name} must be bool, got ${cond.dtype}`);
    if (vx.dtype !== vy.dtype) throw new ShapeError(`Where: dtype ${vx.dtype} vs ${vy.dtype}`);
    return this.node('Where', [cond, vx, vy], [[vx.dtype, broadcastShapes('Where', cond.shape, vx.shape, vy.shape)]])[0]!;
  }

  /** Variadic elementwise sum (used to accumulate gradients). */
  sum(xs: Value[]): Value {
    if (xs.length === 1) return xs[0]!;
    return this.node('Sum', xs, [[xs[0]!.dtype, broadcastShapes('Sum', ...xs.map((x) => x.shape))]])[0]!;
  }

  cast(x: Value, to: DType): Value {
    if (x.dtype === to) return x;
    return this.node('Cast', [x], [[to, x.shape]], { to: attr.int(DTYPES[to].onnx) })[0]!;
  }

  // ---- linear algebra ----------------------------------------------------------------

  /** Numpy matmul for operands of rank >= 2 (batch dimensions broadcast). */
  matmul(a: Value, b: Value): Value {
    if (a.rank < 2 || b.rank < 2) throw new ShapeError(`MatMul: operands must have rank >= 2, got [${a.shape}] and [${b.shape}]`);
    const [m, k] = a.shape.slice(-2) as [number, number];
    const [k2, n] = b.shape.slice(-2) as [number, number];
    if (k !== k2) throw new ShapeError(`MatMul: inner dimensions differ: [${a.shape}] x [${b.shape}] (${a.name}, ${b.name})`);
    if (a.dtype !== b.dtype) throw new ShapeError(`MatMul: dtype ${a.dtype} vs ${b.dtype}`);
    const batch = broadcastShapes('MatMul', a.shape.slice(0, -2), b.shape.slice(0, -2));
    return this.node('MatMul', [a, b], [[a.dtype, [...batch, m, n]]])[0]!;
  }

  /** alpha * op(A) @ op(B) + beta * C for 2-D A and B. */
  gemm(a: Value, b: Value, c: Value | null = null, opts: { transA?: boolean; transB?: boolean; alpha?: number; beta?: number } = {}): Value {
    if (a.rank !== 2 || b.rank !== 2) throw new ShapeError(`Gemm: operands must be 2-D, got [${a.shape}] and [${b.shape}]`);
    const [m, k] = opts.transA ? [a.shape[1]!, a.shape[0]!] : [a.shape[0]!, a.shape[1]!];
    const [k2, n] = opts.transB ? [b.shape[1]!, b.shape[0]!] : [b.shape[0]!, b.shape[1]!];
    if (k !== k2) throw new ShapeError(`Gemm: inner dimensions differ: [${a.shape}] x [${b.shape}]`);
    if (c) broadcastShapes('Gemm', c.shape, [m, n]);
    const attrs: Record<string, Attr> = {
      transA: attr.int(opts.transA ? 1 : 0),
      transB: attr.int(opts.transB ? 1 : 0),
      alpha: attr.float(opts.alpha ?? 1),
      beta: attr.float(opts.beta ?? 1),
    };
    return this.node('Gemm', c ? [a, b, c] : [a, b], [[a.dtype, [m, n]]], attrs)[0]!;
  }

  /**
   * ORT's contrib DynamicQuantizeMatMul: x (float; quantized to uint8 on every call) times
   * int8 weights [K, N] with per-column scales [N].
   */
  dynamicQuantizeMatMul(x: Value, weight: Value, scales: Value): Value {
    const [k, n] = weight.shape as [number, number];
    if (weight.rank !== 2 || weight.dtype !== 'int8') throw new ShapeError(`DynamicQuantizeMatMul: weight must be int8 [K, N], got ${weight.dtype}[${weight.shape}]`);
    if (x.dtype !== 'float32' || x.shape[x.rank - 1] !== k) throw new ShapeError(`DynamicQuantizeMatMul: x ${x.dtype}[${x.shape}] must be float32 [..., ${k}]`);
    if (scales.dtype !== 'float32' || !sameShape(scales.shape, [n])) throw new ShapeError(`DynamicQuantizeMatMul: scales must be float32 [${n}], got ${scales.dtype}[${scales.shape}]`);
    return this.contrib('DynamicQuantizeMatMul', [x, weight, scales], [[x.dtype, [...x.shape.slice(0, -1), n]]], {});
  }

  /**
   * ORT's contrib MatMulNBits: x (float, [..., K]) times weights quantized in blocks of
   * `blockSize` along K, packed [N, blocks, blockSize * bits / 8], with scales [N * blocks]
   * and packed uint8 zero points [N * ceil(blocks * bits / 8)]. `accuracyLevel` 4 lets ORT
   * quantize x to int8 for the product (faster on CPUs with VNNI).
   */
  matMulNBits(x: Value, weight: Value, scales: Value, zeroPoints: Value, opts: { k: number; n: number; bits: number; blockSize: number; accuracyLevel?: number }): Value {
    const { k, n, bits, blockSize } = opts;
    const blocks = Math.ceil(k / blockSize);
    const expected = [n, blocks, (blockSize * bits) / 8];
    if (weight.dtype !== 'uint8' || !sameShape(weight.shape, expected)) throw new ShapeError(`MatMulNBits: weight must be uint8 [${expected}], got ${weight.dtype}[${weight.shape}]`);
    if (x.dtype !== 'float32' || x.shape[x.rank - 1] !== k) throw new ShapeError(`MatMulNBits: x ${x.dtype}[${x.shape}] must be float32 [..., ${k}]`);
    if (!sameShape(scales.shape, [n * blocks])) throw new ShapeError(`MatMulNBits: scales must be [${n * blocks}], got [${scales.shape}]`);
    if (!sameShape(zeroPoints.shape, [n * Math.ceil((blocks * bits) / 8)])) throw new ShapeError(`MatMulNBits: zero points must be [${n * Math.ceil((blocks * bits) / 8)}], got [${zeroPoints.shape}]`);
    const attrs = { K: attr.int(k), N: attr.int(n), bits: attr.int(bits), block_size: attr.int(blockSize), accuracy_level: attr.int(opts.accuracyLevel ?? 0) };
    return this.contrib('MatMulNBits', [x, weight, scales, zeroPoints], [[x.dtype, [...x.shape.slice(0, -1), n]]], attrs);
  }

  /** A node of ORT's com.microsoft operator set. */
  private contrib(op: string, inputs: Value[], outputs: [DType, Shape][], attrs: Record<string, Attr>): Value {
    const [out] = this.node(op, inputs, outputs, attrs);
    out!.producer!.domain = CONTRIB_DOMAIN;
    return out!;
  }

  /** x @ weight + bias, with weight stored [in, out]. */
  linear(x: Value, weight: Value, bias?: Value | null): Value {
    const y = this.matmul(x, weight);
    return bias ? this.add(y, bias) : y;
  }

  // ---- normalization and softmax -----------------------------------------------------

  softmax(x: Value, axis = -1): Value {
    return this.unary('Softmax', x, { axis: attr.int(normalizeAxis(axis, x.rank, 'Softmax')) });
  }

  /** LayerNormalization over the axes from `axis` on; no scale means ones (no affine). */
  layerNorm(x: Value, scale: Value | null, bias: Value | null, opts: { axis?: number; epsilon?: number } = {}): Value {
    const axis = normalizeAxis(opts.axis ?? -1, x.rank, 'LayerNormalization');
    const normShape = x.shape.slice(axis);
    const s = scale ?? this.fill(1, x.dtype, normShape);
    for (const p of [s, bias]) if (p) broadcastShapes('LayerNormalization', p.shape, normShape);
    const attrs = { axis: attr.int(axis), epsilon: attr.float(opts.epsilon ?? 1e-5) };
    return this.node('LayerNormalization', bias ? [x, s, bias] : [x, s], [[x.dtype, x.shape]], attrs)[0]!;
  }

  /** RMS norm over the last axis, as T5 uses it: x / sqrt(mean(x^2) + eps) * scale. */
  rmsNorm(x: Value, scale: Value | null, epsilon = 1e-6): Value {
    const meanSquare = this.reduceMean(this.mul(x, x), [-1]);
    const y = this.mul(x, this.reciprocal(this.sqrt(this.add(meanSquare, epsilon))));
    return scale ? this.mul(y, scale) : y;
  }

  /** GroupNormalization (opset 21) over [N, C, ...] with per-channel scale and bias. */
  groupNorm(x: Value, groups: number, scale: Value, bias: Value, epsilon = 1e-5): Value {
    const c = x.shape[1]!;
    if (c % groups !== 0) throw new ShapeError(`GroupNormalization: ${c} channels not divisible into ${groups} groups`);
    if (!sameShape(scale.shape, [c]) || !sameShape(bias.shape, [c])) throw new ShapeError(`GroupNormalization: scale and bias must be [${c}]`);
    const attrs = { num_groups: attr.int(groups), epsilon: attr.float(epsilon) };
    return this.node('GroupNormalization', [x, scale, bias], [[x.dtype, x.shape]], attrs)[0]!;
  }

  // ---- reductions --------------------------------------------------------------------

  private reduce(op: string, x: Value, axes: readonly number[], keepdims: boolean): Value {
    const ax = normalizeAxes(axes, x.rank, op);
    const shape = x.shape.flatMap((d, i) => (ax.includes(i) ? (keepdims ? [1] : []) : [d]));
    return this.node(op, [x, this.ints(ax)], [[x.dtype, shape]], { keepdims: attr.int(keepdims ? 1 : 0) })[0]!;
  }

  reduceMean(x: Value, axes: readonly number[], keepdims = true): Value { return this.reduce('ReduceMean', x, axes, keepdims); }
  reduceSum(x: Value, axes: readonly number[], keepdims = true): Value { return this.reduce('ReduceSum', x, axes, keepdims); }
  reduceMax(x: Value, axes: readonly number[], keepdims = true): Value { return this.reduce('ReduceMax', x, axes, keepdims); }

  // ---- shape ops ---------------------------------------------------------------------

  reshape(x: Value, shape: readonly number[]): Value {
    const out = reshapeTarget(x.shape, shape);
    if (sameShape(out, x.shape)) return x;
    return this.node('Reshape', [x, this.ints(out)], [[x.dtype, out]])[0]!;
  }

  transpose(x: Value, perm: readonly number[]): Value {
    if (perm.length !== x.rank || [...perm].sort((a, b) => a - b).some((p, i) => p !== i)) {
      throw new ShapeError(`Transpose: perm [${perm}] is not a permutation of rank ${x.rank}`);
    }
    if (perm.every((p, i) => p === i)) return x;
    return this.node('Transpose', [x], [[x.dtype, perm.map((p) => x.shape[p]!)]], { perm: attr.ints(perm) })[0]!;
  }

  /** Swaps the last two axes. */
  transposeLast(x: Value): Value {
    const perm = x.shape.map((_, i) => i);
    perm[x.rank - 2] = x.rank - 1;
    perm[x.rank - 1] = x.rank - 2;
    return this.transpose(x, perm);
  }

  concat(xs: Value[], axis: number): Value {
    if (xs.length === 1) return xs[0]!;
    const first = xs[0]!;
    const ax = normalizeAxis(axis, first.rank, 'Concat');
    for (const x of xs) {
      if (x.rank !== first.rank || x.dtype !== first.dtype || x.shape.some((d, i) => i !== ax && d !== first.shape[i])) {
        throw new ShapeError(`Concat: [${x.shape}] ${x.dtype} does not match [${first.shape}] ${first.dtype} outside axis ${ax}`);
      }
    }
    const shape = [...first.shape];
    shape[ax] = xs.reduce((s, x) => s + x.shape[ax]!, 0);
    return this.node('Concat', xs, [[first.dtype, shape]], { axis: attr.int(ax) })[0]!;
  }

  split(x: Value, sizes: readonly number[], axis: number): Value[] {
    const ax = normalizeAxis(axis, x.rank, 'Split');
    if (sizes.reduce((a, b) => a + b, 0) !== x.shape[ax]) throw new ShapeError(`Split: sizes [${sizes}] do not add up to ${x.shape[ax]}`);
    const outs = sizes.map((s) => {
      const shape = [...x.shape];
      shape[ax] = s;
      return [x.dtype, shape] as [DType, Shape];
    });
    return this.node('Split', [x, this.ints(sizes)], outs, { axis: attr.int(ax) });
  }

  /**
   * Static slice with step 1; ends are clamped to the dimension. A slice of an initializer
   * becomes an initializer of its own, so ORT can prepack it like any weight.
   */
  slice(x: Value, starts: readonly number[], ends: readonly number[], axes: readonly number[]): Value {
    const ax = normalizeAxes(axes, x.rank, 'Slice');
    const shape = [...x.shape];
    const s: number[] = [];
    const e: number[] = [];
    ax.forEach((a, i) => {
      const dim = x.shape[a]!;
      const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + dim : v, 0), dim);
      s.push(clamp(starts[i]!));
      e.push(clamp(ends[i]!));
      shape[a] = Math.max(0, e[i]! - s[i]!);
    });
    const weight = this.root.graph.initializers.get(x);
    if (weight) {
      const key = `${x.name}[${ax.map((a, i) => `${a}:${s[i]}:${e[i]}`).join(',')}]`;
      let v = this.root.slices.get(key);
      if (!v) this.root.slices.set(key, (v = this.root.initializer(key, sliceTensor(weight, s, e, ax))));
      return v;
    }
    return this.node('Slice', [x, this.ints(s), this.ints(e), this.ints(ax)], [[x.dtype, shape]])[0]!;
  }

  /** Constant padding; pads = [begin_0..begin_n, end_0..end_n] as in ONNX. */
  pad(x: Value, pads: readonly number[], value = 0): Value {
    if (pads.length !== 2 * x.rank) throw new ShapeError(`Pad: need ${2 * x.rank} pads, got ${pads.length}`);
    const shape = x.shape.map((d, i) => d + pads[i]! + pads[i + x.rank]!);
    return this.node('Pad', [x, this.ints(pads), this.scalar(value, x.dtype)], [[x.dtype, shape]])[0]!;
  }

  gather(x: Value, indices: Value, axis = 0): Value {
    const ax = normalizeAxis(axis, x.rank, 'Gather');
    if (indices.dtype !== 'int64' && indices.dtype !== 'int32') throw new ShapeError(`Gather: indices must be int32/int64, got ${indices.dtype}`);
    const shape = [...x.shape.slice(0, ax), ...indices.shape, ...x.shape.slice(ax + 1)];
    return this.node('Gather', [x, indices], [[x.dtype, shape]], { axis: attr.int(ax) })[0]!;
  }

  /** ScatterND with reduction 'add' (gradient of Gather). */
  scatterNDAdd(data: Value, indices: Value, updates: Value): Value {
    return this.node('ScatterND', [data, indices, updates], [[data.dtype, data.shape]], { reduction: attr.string('add') })[0]!;
  }

  expand(x: Value, shape: Shape): Value {
    const out = broadcastShapes('Expand', x.shape, shape);
    if (sameShape(out, x.shape)) return x;
    return this.node('Expand', [x, this.ints(out)], [[x.dtype, out]])[0]!;
  }

  unsqueeze(x: Value, axes: readonly number[]): Value {
    const rank = x.rank + axes.length;
    const ax = normalizeAxes(axes, rank, 'Unsqueeze');
    const shape: number[] = [];
    let k = 0;
    for (let i = 0; i < rank; i++) shape.push(ax.includes(i) ? 1 : x.shape[k++]!);
    return this.node('Unsqueeze', [x, this.ints(ax)], [[x.dtype, shape]])[0]!;
  }

  squeeze(x: Value, axes: readonly number[]): Value {
    const ax = normalizeAxes(axes, x.rank, 'Squeeze');
    for (const a of ax) if (x.shape[a] !== 1) throw new ShapeError(`Squeeze: axis ${a} of [${x.shape}] is not 1`);
    const shape = x.shape.filter((_, i) => !ax.includes(i));
    return this.node('Squeeze', [x, this.ints(ax)], [[x.dtype, shape]])[0]!;
  }

  // ---- convolution and resampling ----------------------------------------------------

  /** 2-D convolution over [N, C, H, W] with weight [M, C/group, kH, kW]. */
  conv(x: Value, w: Value, bias: Value | null = null, opts: ConvOptions = {}): Value {
    if (x.rank !== 4 || w.rank !== 4) throw new ShapeError(`Conv: expected 4-D input and weight, got [${x.shape}] and [${w.shape}]`);
    const { strides = [1, 1], pads = [0, 0, 0, 0], dilations = [1, 1], group = 1 } = opts;
    if (x.shape[1] !== w.shape[1]! * group) throw new ShapeError(`Conv: input has ${x.shape[1]} channels, weight expects ${w.shape[1]! * group}`);
    const out = [0, 1].map((i) => {
      const k = (w.shape[2 + i]! - 1) * dilations[i]! + 1;
      return Math.floor((x.shape[2 + i]! + pads[i]! + pads[i + 2]! - k) / strides[i]!) + 1;
    });
    const attrs = {
      kernel_shape: attr.ints(w.shape.slice(2)), strides: attr.ints(strides), pads: attr.ints(pads),
      dilations: attr.ints(dilations), group: attr.int(group),
    };
    return this.node('Conv', bias ? [x, w, bias] : [x, w], [[x.dtype, [x.shape[0]!, w.shape[0]!, ...out]]], attrs)[0]!;
  }

  /**
   * Transposed 2-D convolution (gradient of Conv): out = stride * (in - 1) + outputPadding
   * + dilated kernel - pads.
   */
  convTranspose(x: Value, w: Value, opts: ConvOptions & { outputPadding?: number[] } = {}): Value {
    const { strides = [1, 1], pads = [0, 0, 0, 0], dilations = [1, 1], group = 1, outputPadding = [0, 0] } = opts;
    if (x.shape[1] !== w.shape[0]) throw new ShapeError(`ConvTranspose: input has ${x.shape[1]} channels, weight expects ${w.shape[0]}`);
    const out = [0, 1].map((i) =>
      strides[i]! * (x.shape[2 + i]! - 1) + outputPadding[i]! + (w.shape[2 + i]! - 1) * dilations[i]! + 1 - pads[i]! - pads[i + 2]!);
    const attrs = {
      kernel_shape: attr.ints(w.shape.slice(2)), strides: attr.ints(strides), pads: attr.ints(pads),
      dilations: attr.ints(dilations), group: attr.int(group), output_padding: attr.ints(outputPadding),
    };
    return this.node('ConvTranspose', [x, w], [[x.dtype, [x.shape[0]!, w.shape[1]! * group, ...out]]], attrs)[0]!;
  }

  /** Nearest-neighbour upsampling of the spatial axes by integer factors. */
  resizeNearest(x: Value, scales: readonly number[]): Value {
    if (scales.length !== x.rank) throw new ShapeError(`Resize: need ${x.rank} scales, got ${scales.length}`);
    if (scales.some((s) => !Number.isInteger(s) || s < 1)) throw new ShapeError(`Resize: only integer upscaling is supported, got [${scales}]`);
    const s = this.constant(tensor('float32', [scales.length], scales), 'scales');
    const attrs = {
      mode: attr.string('nearest'),
      coordinate_transformation_mode: attr.string('asymmetric'),
      nearest_mode: attr.string('floor'),
    };
    return this.node('Resize', [x, null, s], [[x.dtype, x.shape.map((d, i) => d * scales[i]!)]], attrs)[0]!;
  }

  // ---- control flow ------------------------------------------------------------------

  /**
   * ONNX `If`: each branch builds its outputs in its own sub-builder and may read values of
   * this graph. Dimensions that differ between the branches become dynamic (-1).
   */
  ifElse(cond: Value, thenBranch: (b: GraphBuilder) => Value[], elseBranch: (b: GraphBuilder) => Value[], label = 'If'): Value[] {
    if (cond.dtype !== 'bool' || cond.shape.length > 1 || cond.shape.some((d) => d !== 1)) {
      throw new ShapeError(`If: condition must be a single bool, got ${cond.dtype}[${cond.shape}]`);
    }
    const branch = (name: string, fn: (b: GraphBuilder) => Value[]) => {
      const sub = new GraphBuilder(this.names.unique(`${label}_${name}`), { weights: this.weights }, this.names, this.root);
      sub.scopes.push(...this.scopes, `${label}_${name}`);
      for (const v of fn(sub)) sub.output(v);
      return sub.graph;
    };
    const thenGraph = branch('then', thenBranch);
    const elseGraph = branch('else', elseBranch);
    if (thenGraph.outputs.length !== elseGraph.outputs.length) throw new ShapeError(`If: branches return ${thenGraph.outputs.length} and ${elseGraph.outputs.length} values`);
    const outs = thenGraph.outputs.map((t, i) => {
      const e = elseGraph.outputs[i]!;
      if (t.dtype !== e.dtype) throw new ShapeError(`If: output ${i} is ${t.dtype} in one branch and ${e.dtype} in the other`);
      const shape = t.shape.length === e.shape.length ? t.shape.map((d, k) => (d === e.shape[k] ? d : -1)) : [-1];
      return [t.dtype, shape] as [DType, Shape];
    });
    return this.node('If', [cond], outs, { then_branch: attr.graph(thenGraph), else_branch: attr.graph(elseGraph) }, label);
  }
}
