import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { GraphBuilder } from '../../src/onnx/builder.js';
import { ShapeError } from '../../src/onnx/shapes.js';
import { Session } from '../../src/onnx/session.js';
import { initializerBytes, saveModel, serializeModel } from '../../src/onnx/writer.js';
import { buildPlainStep } from '../../src/cache/step-graph.js';
import { ditDenoiser } from '../../src/models/denoiser.js';
import { Weights } from '../../src/models/weights.js';
import { randomDitCheckpoints, TINY_DIT } from '../helpers/dit-checkpoint.js';
import { Rng } from '../../src/tensor/rng.js';
import { tensor } from '../../src/tensor/tensor.js';
import { randomTensor } from '../../src/models/init.js';

const dirs: string[] = [];
afterAll(async () => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

function smallModel() {
  const b = new GraphBuilder('small');
  const x = b.input('x', 'float32', [2, 4]);
  const w = b.initializer('w', randomTensor([4, 3], new Rng(3)));
  const y = b.scope('blocks.0', () => b.scope('attn', () => b.softmax(b.matmul(x, w))));
  b.output(y, 'y');
  return { b, y };
}

describe('graph builder', () => {
  it('names nodes and values after their scope', () => {
    const { b, y } = smallModel();
    expect(b.graph.nodes.map((n) => n.name)).toEqual(['blocks.0/attn/MatMul', 'blocks.0/attn/Softmax']);
    expect(y.producer!.name).toBe('blocks.0/attn/Softmax');
    expect(b.graph.outputs[0]!.name).toBe('y');
  });

  it('infers shapes and rejects mismatches with readable errors', () => {
    const b = new GraphBuilder('bad');
    const x = b.input('x', 'float32', [2, 4]);
    expect(b.matmul(x, b.input('w', 'float32', [4, 5])).shape).toEqual([2, 5]);
    expect(b.add(x, b.input('v', 'float32', [4])).shape).toEqual([2, 4]);
    expect(() => b.matmul(x, b.input('w2', 'float32', [3, 5]))).toThrow(/MatMul: inner dimensions differ: \[2,4\] x \[3,5\]/);
    expect(() => b.add(x, b.input('u', 'float32', [3]))).toThrow(ShapeError);
    expect(() => b.reshape(x, [3, -1])).toThrow(/cannot reshape \[2,4\]/);
    expect(() => b.add(x, b.input('d', 'float64', [4]))).toThrow(/dtype float32 vs float64/);
  });

  it('runs If with branches of different shapes (dynamic output dims)', async () => {
    const b = new GraphBuilder('if');
    const x = b.input('x', 'float32', [2, 3]);
    const cond = b.input('compute', 'bool', [1]);
    const [y] = b.ifElse(cond, (s) => [s.mul(x, 2)], (s) => [s.slice(x, [0], [0], [0])]);
    expect(y!.shape).toEqual([-1, 3]);
    expect(() => b.add(y!, 1)).toThrow(/dynamic shape/);
    b.output(y!, 'y');
    const s = await Session.create(b.graph, { threads: 1 });
    const xv = tensor('float32', [2, 3], [1, 2, 3, 4, 5, 6]);
    const on = await s.run({ x: xv, compute: tensor('bool', [1], [1]) });
    expect(Array.from(on.y!.data as Float32Array)).toEqual([2, 4, 6, 8, 10, 12]);
    const off = await s.run({ x: xv, compute: tensor('bool', [1], [0]) });
    expect(off.y!.shape).toEqual([0, 3]);
  });
});

describe('ONNX writer and sessions', () => {
  it('external data: a model saved with its weights beside it runs the same as in memory', async () => {
    const { b } = smallModel();
    const dir = await mkdtemp(join(tmpdir(), 'harmonica-onnx-'));
    dirs.push(dir);
    const path = join(dir, 'model.onnx');
    expect((await saveModel(b.graph, path, 0)).externalData).toBe(true);
    expect((await readdir(dir)).sort()).toEqual(['model.onnx', 'model.onnx.data']);
    const x = tensor('float32', [2, 4], [1, 2, 3, 4, 5, 6, 7, 8]);
    const fromFile = await (await Session.create(path, { threads: 1 })).run({ x });
    const inMemory = await (await Session.create(serializeModel(b.graph), { threads: 1 })).run({ x });
    expect(fromFile.y!.data).toEqual(inMemory.y!.data);
    expect((await saveModel(b.graph, join(dir, 'inline.onnx'))).externalData).toBe(false);
  });

  it('a graph past externalDataBytes opens through a model file with external data and gives identical outputs', async () => {
    const graph = () => buildPlainStep(ditDenoiser(TINY_DIT), new Weights(randomDitCheckpoints(TINY_DIT).diffusers), 2).graph;
    const feeds = { x: randomTensor([2, 4, 8, 8], new Rng(9)), t: tensor('float32', [2], [999, 37]), y: tensor('int64', [2], [3, 10]) };
    const before = new Set(await readdir(tmpdir()));
    const external = await Session.create(graph(), { threads: 1, externalDataBytes: 0 });
    // The temporary model file is gone once the session holds it.
    expect((await readdir(tmpdir())).filter((f) => f.startsWith('harmonica-model-') && !before.has(f))).toEqual([]);
    const inMemory = await Session.create(graph(), { threads: 1 });
    expect([external.weightsMapped, inMemory.weightsMapped]).toEqual([true, false]);
    const a = (await external.run(feeds)).out!;
    const b = (await inMemory.run(feeds)).out!;
    expect(a.shape).toEqual([2, 8, 8, 8]);
    expect(Buffer.from((a.data as Float32Array).buffer).equals(Buffer.from((b.data as Float32Array).buffer))).toBe(true);
    expect(external.inputs.map((i) => `${i.name}:${i.dtype}[${i.shape}]`)).toEqual(['x:float32[2,4,8,8]', 't:float32[2]', 'y:int64[2]']);
  });

  it('counts only the weights the outputs reach toward the size limit', () => {
    const b = new GraphBuilder('dead');
    const x = b.input('x', 'float32', [2]);
    const full = b.initializer('table', tensor('float32', [1000]));
    const part = b.slice(full, [0], [2], [0]); // a slice of an initializer is an initializer of its own
    b.output(b.mul(x, part), 'y');
    expect(initializerBytes(b.graph)).toBe(2 * 4);
  });

  it('falls back to CPU with a clear log line when CUDA cannot load', async () => {
    const { b } = smallModel();
    const lines: string[] = [];
    const logger = pino(new Writable({ write: (chunk, _enc, done) => { lines.push(String(chunk)); done(); } }));
    const s = await Session.create(b.graph, { device: 'cuda', threads: 1, logger });
    expect(s.device).toBe('cpu');
    expect(lines.join('')).toMatch(/CUDA execution provider unavailable, falling back to CPU/);
    const out = await s.run({ x: tensor('float32', [2, 4]) });
    expect(out.y!.shape).toEqual([2, 3]);
  });
});

describe('writer pruning', () => {
  it('writes only the nodes and weights the outputs need', async () => {
    const b = new GraphBuilder('prune');
    const x = b.input('x', 'float32', [2]);
    const unused = b.initializer('unused', tensor('float32', [2], [1, 2]));
    b.exp(b.mul(x, unused)); // dead branch
    b.output(b.add(x, 1), 'y');
    const proto = (await import('onnx-proto')).default.onnx.ModelProto.decode(serializeModel(b.graph));
    expect(proto.graph!.node!.map((n) => n.opType)).toEqual(['Constant', 'Add']);
    expect(proto.graph!.initializer).toHaveLength(0);
    const s = await Session.create(b.graph, { threads: 1 });
    expect(Array.from((await s.run({ x: tensor('float32', [2], [1, 2]) })).y!.data as Float32Array)).toEqual([2, 3]);
  });
});
