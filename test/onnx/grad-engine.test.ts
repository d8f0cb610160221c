import { describe, expect, it } from 'vitest';
import { GraphBuilder } from '../../src/onnx/builder.js';
import { gradients, GradientError } from '../../src/onnx/grad/index.js';
import { Session } from '../../src/onnx/session.js';
import { ditBlock } from '../../src/models/layers.js';
import { initDitBlock } from '../../src/models/init.js';
import { Rng } from '../../src/tensor/rng.js';
import { tensor } from '../../src/tensor/tensor.js';
import { gradCheck } from '../helpers/gradcheck.js';

describe('autodiff engine', () => {
  it('a whole adaLN transformer block: gradients w.r.t. input, condition and every weight', async () => {
    const hidden = 8;
    const rng = new Rng(7);
    const r = await gradCheck({ x: { shape: [2, 3, hidden] }, c: { shape: [2, hidden] } }, (b, { x, c }) => {
      const p = initDitBlock(b, 'block', hidden, 2 * hidden, { rng, dtype: 'float64', std: 0.4 });
      return ditBlock(b, x!, c!, p, 2).out;
    });
    expect(r.checked).toHaveLength(2 + 14);
    expect(r.checked).toContain('block.attn.q.weight');
    expect(r.checked).toContain('block.adaLN.bias');
    expect(r.checks).toBeGreaterThan(16 * 6);
  });

  it('prunes: no backward nodes for branches that do not depend on wrt or do not reach the loss', () => {
    const b = new GraphBuilder('prune');
    const x = b.input('x', 'float32', [4]);
    const frozen = b.input('frozen', 'float32', [4]);
    const unrelated = b.exp(b.exp(frozen));
    const dead = b.tanh(x); // computed but not part of the loss
    b.output(dead, 'dead');
    const loss = b.reduceSum(b.mul(b.sin(x), unrelated), [0], false);
    const before = b.graph.nodes.length;
    gradients(b, loss, [x]);
    const backward = b.graph.nodes.slice(before);
    const ops = backward.map((n) => n.op);
    expect(ops).not.toContain('Tanh'); // nothing for the dead branch
    expect(backward.some((n) => n.name.startsWith('grad/Exp'))).toBe(false); // nothing for the frozen branch
    expect(ops).toContain('Cos'); // the sin rule
  });

  it('returns zeros for a wrt the loss does not depend on', async () => {
    const b = new GraphBuilder('zeros');
    const x = b.input('x', 'float32', [3]);
    const y = b.input('y', 'float32', [2]);
    const loss = b.reduceSum(b.mul(x, x), [0], false);
    const [gx, gy] = gradients(b, loss, [x, y]);
    b.output(gx!, 'gx');
    b.output(gy!, 'gy');
    const s = await Session.create(b.graph, { threads: 1 });
    const out = await s.run({ x: tensor('float32', [3], [1, 2, 3]), y: tensor('float32', [2], [5, 6]) });
    expect(Array.from(out.gx!.data as Float32Array)).toEqual([2, 4, 6]);
    expect(Array.from(out.gy!.data as Float32Array)).toEqual([0, 0]);
  });

  it('refuses to differentiate through If with a clear error', () => {
    const b = new GraphBuilder('if');
    const x = b.input('x', 'float32', [2]);
    const cond = b.input('cond', 'bool', [1]);
    const [y] = b.ifElse(cond, (s) => [s.mul(x, 2)], (s) => [s.identity(x)]);
    expect(() => gradients(b, b.reduceSum(y!, [0], false), [x])).toThrow(GradientError);
    expect(() => gradients(b, b.reduceSum(y!, [0], false), [x])).toThrow(/If node .* branches are for inference/);
  });
});
