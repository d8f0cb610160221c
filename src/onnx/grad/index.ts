import { GraphBuilder } from '../builder.js';
import { nodeReads, type Node, type Value } from '../ir.js';
import { sameShape } from '../shapes.js';
import { DTYPES } from '../../tensor/dtype.js';
import { NON_DIFFERENTIABLE, RULES } from './rules.js';

export { NON_DIFFERENTIABLE, RULES };

/** Raised when a loss depends on `wrt` through an op that has no backward rule. */
export class GradientError extends Error {
  readonly code = 'NO_GRADIENT';
}

const isFloat = (v: Value) => DTYPES[v.dtype].float;

/**
 * Sums a gradient over the axes along which `target` was broadcast, so it gets the
 * operand's own shape back.
 */
export function unbroadcast(b: GraphBuilder, grad: Value, target: Value): Value {
  if (sameShape(grad.shape, target.shape)) return grad;
  const lead = grad.rank - target.rank;
  if (target.rank === 1 && grad.shape.at(-1) === target.shape[0] && grad.rank >= 2) {
    // A bias: summing the rows as ones @ grad (a GEMV) is ~8x faster than ORT's ReduceSum
    // over leading axes; the ones row is constant-folded at session creation.
    const width = target.shape[0]!;
    const rows = grad.shape.slice(0, -1).reduce((x, y) => x * y, 1);
    return b.reshape(b.matmul(b.fill(1, grad.dtype, [1, rows]), b.reshape(grad, [rows, width])), [width]);
  }
  const axes: number[] = [];
  grad.shape.forEach((d, i) => {
    if (i < lead || (target.shape[i - lead] === 1 && d !== 1)) axes.push(i);
  });
  const reduced = axes.length ? b.reduceSum(grad, axes, true) : grad;
  return b.reshape(reduced, target.shape);
}

/**
 * Appends to `b` the backward pass of `loss` (a scalar, or any shape with an implied
 * all-ones seed) and returns d loss / d wrt in the same order. Only nodes that lie on a path
 * from some `wrt` to `loss` get backward nodes; gradients reaching a value from several
 * consumers are summed once with a single Sum node.
 */
export function gradients(b: GraphBuilder, loss: Value, wrt: readonly Value[], seed?: Value): Value[] {
  const nodes = b.graph.nodes;

  // Values that depend on some wrt (forward sweep) ...
  const dependsOnWrt = new Set<Value>(wrt.filter(isFloat));
  for (const node of nodes) {
    if (nodeReads(node).some((v) => dependsOnWrt.has(v))) for (const o of node.outputs) if (isFloat(o)) dependsOnWrt.add(o);
  }
  // ... and nodes through which such a value reaches the loss (backward sweep).
  const reachesLoss = new Set<Value>([loss]);
  const active: Node[] = [];
  for (let i = nodes.length - 1; i >= 0; i--) {
    const node = nodes[i]!;
    if (!node.outputs.some((o) => reachesLoss.has(o) && dependsOnWrt.has(o))) continue;
    active.push(node);
    for (const v of nodeReads(node)) if (dependsOnWrt.has(v)) reachesLoss.add(v);
  }

  const pending = new Map<Value, Value[]>();
  const contribute = (v: Value, g: Value) => {
    const list = pending.get(v);
    if (list) list.push(g);
    else pending.set(v, [g]);
  };
  const collect = (v: Value): Value | undefined => {
    const list = pending.get(v);
    if (!list) return undefined;
    const total = b.sum(list);
    pending.set(v, [total]);
    return total;
  };

  contribute(loss, seed ?? b.fill(1, loss.dtype, loss.shape));
  for (const node of active) {
    const rule = RULES[node.op];
    if (!rule) {
      const why = NON_DIFFERENTIABLE[node.op] ?? 'it has no backward rule yet';
      throw new GradientError(`cannot differentiate through ${node.op} node ${node.name}: ${why}`);
    }
    const gys = node.outputs.map(collect);
    const needs = node.inputs.map((v) => !!v && dependsOnWrt.has(v) && reachesLoss.has(v));
    const gxs = b.scope(`grad/${node.name}`, () => rule({ b, node, inputs: node.inputs, outputs: node.outputs, gys, needs }));
    node.inputs.forEach((v, i) => {
      const g = gxs[i];
      if (v && needs[i] && g) contribute(v, b.scope(`grad/${node.name}`, () => unbroadcast(b, g, v)));
    });
  }
  return wrt.map((v) => collect(v) ?? b.fill(0, v.dtype, v.shape));
}

/**
 * Builds a graph that outputs the loss and its gradients: `build` makes the forward pass in
 * a fresh builder and returns the loss and the values to differentiate.
 */
export function gradientGraph(
  name: string,
  build: (b: GraphBuilder) => { loss: Value; wrt: Value[]; extraOutputs?: Record<string, Value> },
  options: ConstructorParameters<typeof GraphBuilder>[1] = {},
): { builder: GraphBuilder; gradNames: string[] } {
  const b = new GraphBuilder(name, options);
  const { loss, wrt, extraOutputs } = build(b);
  const grads = gradients(b, loss, wrt);
  b.output(loss, 'loss');
  for (const [k, v] of Object.entries(extraOutputs ?? {})) b.output(v, k);
  const gradNames = grads.map((g, i) => b.output(g, `grad/${wrt[i]!.name}`).name);
  return { builder: b, gradNames };
}
