import type { DType } from '../tensor/dtype.js';
import type { HostTensor } from '../tensor/tensor.js';

/** Static shape; every dimension is known when the graph is built. */
export type Shape = readonly number[];

/** A weight's checkpoint tensor and the inverse of the layout change applied when loading it. */
export interface ParamOrigin {
  from: HostTensor;
  toCheckpoint: (graphLayout: HostTensor) => HostTensor;
}

/** The operator set domain of ONNX Runtime's contrib operators (quantized MatMuls). */
export const CONTRIB_DOMAIN = 'com.microsoft';

export type ValueKind = 'input' | 'initializer' | 'constant' | 'node';

/**
 * A tensor-valued edge of the graph. Values are referenced by identity while building and
 * named only when the graph is written, so renaming a value is just setting `name`.
 */
export class Value {
  constructor(
    public name: string,
    readonly dtype: DType,
    readonly shape: Shape,
    readonly kind: ValueKind,
    /** The node that computes this value (for kind 'node' and 'constant'). */
    public producer?: Node,
  ) {}

  get rank(): number {
    return this.shape.length;
  }

  toString(): string {
    return `${this.name}: ${this.dtype}[${this.shape.join(',')}]`;
  }
}

export type Attr =
  | { type: 'int'; value: number }
  | { type: 'float'; value: number }
  | { type: 'string'; value: string }
  | { type: 'ints'; value: readonly number[] }
  | { type: 'floats'; value: readonly number[] }
  | { type: 'tensor'; value: HostTensor }
  | { type: 'graph'; value: Graph };

export const attr = {
  int: (value: number): Attr => ({ type: 'int', value }),
  float: (value: number): Attr => ({ type: 'float', value }),
  string: (value: string): Attr => ({ type: 'string', value }),
  ints: (value: readonly number[]): Attr => ({ type: 'ints', value }),
  floats: (value: readonly number[]): Attr => ({ type: 'floats', value }),
  tensor: (value: HostTensor): Attr => ({ type: 'tensor', value }),
  graph: (value: Graph): Attr => ({ type: 'graph', value }),
};

export interface Node {
  op: string;
  /** Operator set domain; absent is the default ONNX domain (e.g. 'com.microsoft' for ORT's contrib ops). */
  domain?: string;
  name: string;
  /** `null` marks an omitted optional input. */
  inputs: (Value | null)[];
  outputs: Value[];
  attrs: Record<string, Attr>;
}

/** A graph or an `If` branch (a branch has no inputs and may read outer values). */
export class Graph {
  readonly inputs: Value[] = [];
  readonly outputs: Value[] = [];
  readonly initializers = new Map<Value, HostTensor>();
  /** Values of weights that are graph inputs (weight mode 'inputs'), to feed at run time. */
  readonly paramValues = new Map<Value, HostTensor>();
  /** Where each weight came from in its checkpoint, to write trained values back. */
  readonly paramOrigins = new Map<Value, ParamOrigin>();
  readonly nodes: Node[] = [];

  constructor(public name: string) {}
}

function readAttr(node: Node, name: string, type: Attr['type']): Attr | undefined {
  const a = node.attrs[name];
  if (a && a.type !== type) throw new Error(`attribute ${name} of ${node.name} is ${a.type}, expected ${type}`);
  return a;
}

export function intAttr(node: Node, name: string, fallback: number): number {
  return (readAttr(node, name, 'int')?.value as number | undefined) ?? fallback;
}

export function floatAttr(node: Node, name: string, fallback: number): number {
  return (readAttr(node, name, 'float')?.value as number | undefined) ?? fallback;
}

export function stringAttr(node: Node, name: string, fallback: string): string {
  return (readAttr(node, name, 'string')?.value as string | undefined) ?? fallback;
}

export function intsAttr(node: Node, name: string, fallback: readonly number[]): readonly number[] {
  return (readAttr(node, name, 'ints')?.value as readonly number[] | undefined) ?? fallback;
}

/**
 * Every value a node reads: its inputs and the outer values its subgraphs (If branches)
 * refer to, which ONNX passes implicitly.
 */
export function nodeReads(node: Node): Value[] {
  const reads = node.inputs.filter((v): v is Value => v !== null);
  for (const a of Object.values(node.attrs)) {
    if (a.type !== 'graph') continue;
    const inner = new Set(a.value.nodes.flatMap((n) => n.outputs));
    for (const n of a.value.nodes) for (const v of nodeReads(n)) if (!inner.has(v) && !reads.includes(v)) reads.push(v);
  }
  return reads;
}
