import { createWriteStream } from 'node:fs';
import { basename } from 'node:path';
import { once } from 'node:events';
import protobuf from 'onnx-proto';
import { DTYPES } from '../tensor/dtype.js';
import { bytesOf, type HostTensor } from '../tensor/tensor.js';
import { CONTRIB_DOMAIN, nodeReads, type Attr, type Graph, type Node, type Value } from './ir.js';

const { onnx } = protobuf;

/** Opset 21: Gelu (20), GroupNormalization (21), Reduce* with axes as inputs (18). */
export const OPSET = 21;
const IR_VERSION = 10;

/** Protobuf messages cannot exceed 2 GiB; bigger models keep their weights beside the file. */
export const PROTOBUF_LIMIT = 2 ** 31 - 1;

type Externalize = (name: string, t: HostTensor) => protobuf.onnx.IStringStringEntryProto[] | null;

function tensorProto(name: string, t: HostTensor, externalize?: Externalize): protobuf.onnx.ITensorProto {
  const proto: protobuf.onnx.ITensorProto = { name, dims: [...t.shape], dataType: DTYPES[t.dtype].onnx };
  const external = externalize?.(name, t);
  if (external) {
    proto.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
    proto.externalData = external;
  } else proto.rawData = bytesOf(t);
  return proto;
}

function valueInfo(v: Value): protobuf.onnx.IValueInfoProto {
  const dim = v.shape.map((d, i) => (d >= 0 ? { dimValue: d } : { dimParam: `${v.name}_dim${i}` }));
  return { name: v.name, type: { tensorType: { elemType: DTYPES[v.dtype].onnx, shape: { dim } } } };
}

function attribute(name: string, a: Attr, externalize?: Externalize): protobuf.onnx.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  switch (a.type) {
    case 'int': return { name, type: T.INT, i: a.value };
    case 'float': return { name, type: T.FLOAT, f: a.value };
    case 'string': return { name, type: T.STRING, s: new TextEncoder().encode(a.value) };
    case 'ints': return { name, type: T.INTS, ints: [...a.value] };
    case 'floats': return { name, type: T.FLOATS, floats: [...a.value] };
    case 'tensor': return { name, type: T.TENSOR, t: tensorProto('', a.value) };
    case 'graph': return { name, type: T.GRAPH, g: graphProto(a.value, externalize) };
  }
}

/**
 * The nodes the graph's outputs depend on, and the values they read: a graph built from a
 * whole model for a few outputs (e.g. a probe) is written without the rest.
 */
function live(graph: Graph): { nodes: Node[]; values: Set<Value> } {
  const values = new Set<Value>(graph.outputs);
  const nodes: Node[] = [];
  for (let i = graph.nodes.length - 1; i >= 0; i--) {
    const n = graph.nodes[i]!;
    if (!n.outputs.some((o) => values.has(o))) continue;
    nodes.push(n);
    for (const v of nodeReads(n)) values.add(v);
  }
  return { nodes: nodes.reverse(), values };
}

function graphProto(graph: Graph, externalize?: Externalize): protobuf.onnx.IGraphProto {
  const { nodes, values } = live(graph);
  return {
    name: graph.name,
    input: graph.inputs.map(valueInfo),
    output: graph.outputs.map(valueInfo),
    initializer: [...graph.initializers].filter(([v]) => values.has(v)).map(([v, t]) => tensorProto(v.name, t, externalize)),
    node: nodes.map((n) => ({
      name: n.name,
      opType: n.op,
      domain: n.domain ?? '',
      input: n.inputs.map((v) => (v ? v.name : '')),
      output: n.outputs.map((v) => v.name),
      attribute: Object.entries(n.attrs).map(([k, a]) => attribute(k, a, externalize)),
    })),
  };
}

function modelProto(graph: Graph, externalize?: Externalize): protobuf.onnx.ModelProto {
  return onnx.ModelProto.create({
    irVersion: IR_VERSION,
    producerName: 'harmonica',
    // ORT's contrib ops (weight-only quantized MatMuls) live in com.microsoft, version 1.
    opsetImport: [{ domain: '', version: OPSET }, { domain: CONTRIB_DOMAIN, version: 1 }],
    graph: graphProto(graph, externalize),
  });
}

/**
 * Bytes of the initializers the outputs reach, i.e. what the writer writes: weights a builder
 * left unread (e.g. a full adaLN table beside its sliced copies) do not count.
 */
export function initializerBytes(graph: Graph): number {
  const { values } = live(graph);
  let total = 0;
  for (const [v, t] of graph.initializers) if (values.has(v)) total += bytesOf(t).byteLength;
  return total;
}

/** Serializes a graph whose weights fit in one protobuf message. */
export function serializeModel(graph: Graph): Uint8Array {
  const bytes = initializerBytes(graph);
  if (bytes > PROTOBUF_LIMIT - (64 << 20)) {
    throw new Error(`graph ${graph.name} holds ${(bytes / 2 ** 30).toFixed(2)} GiB of weights: save it with saveModel (external data) instead`);
  }
  return onnx.ModelProto.encode(modelProto(graph)).finish();
}

/**
 * Writes `path` and, when the weights pass `externalThreshold` bytes (default: near the
 * protobuf limit), `path.data` holding every initializer; ORT resolves it relative to the model.
 */
export async function saveModel(graph: Graph, path: string, externalThreshold = PROTOBUF_LIMIT - (64 << 20)): Promise<{ externalData: boolean }> {
  if (initializerBytes(graph) <= externalThreshold) {
    await writeAll(path, [serializeModel(graph)]);
    return { externalData: false };
  }
  const dataPath = `${path}.data`;
  const chunks: Uint8Array[] = [];
  let offset = 0;
  const externalize: Externalize = (_name, t) => {
    const bytes = bytesOf(t);
    const pad = (64 - (offset % 64)) % 64; // aligned so ORT can map tensors in place
    if (pad) chunks.push(new Uint8Array(pad));
    offset += pad;
    const entry = [
      { key: 'location', value: basename(dataPath) },
      { key: 'offset', value: String(offset) },
      { key: 'length', value: String(bytes.byteLength) },
    ];
    chunks.push(bytes);
    offset += bytes.byteLength;
    return entry;
  };
  const model = onnx.ModelProto.encode(modelProto(graph, externalize)).finish();
  await writeAll(dataPath, chunks);
  await writeAll(path, [model]);
  return { externalData: true };
}

async function writeAll(path: string, chunks: Uint8Array[]): Promise<void> {
  const out = createWriteStream(path);
  for (const c of chunks) if (!out.write(c)) await once(out, 'drain');
  out.end();
  await once(out, 'finish');
}
