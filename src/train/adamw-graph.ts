/**
 * The same AdamW step as src/train/optim.ts, as one ONNX graph run by onnxruntime. It exists to
 * measure whether ORT's kernels beat the plain JS loop once the cost of moving params, grads and
 * moments in and out of the session is paid (see src/bench/optimizer.ts); training uses AdamW.
 */
import { GraphBuilder } from '../onnx/builder.js';
import type { Value } from '../onnx/ir.js';
import { Session, type SessionConfig } from '../onnx/session.js';
import { numel, tensor, type HostTensor } from '../tensor/tensor.js';
import { adamWFactors, CLIP_EPS, resolveAdamWConfig, type AdamWConfig, type StepResult } from './optim.js';

export type Arrays = Record<string, Float32Array>;

export interface AdamWGraphStep {
  /** Learning rate of the next step (a graph input, so schedules need no rebuild). */
  lr: number;
  /**
   * One AdamW step at step number `t` (1-based, as after AdamW's increment). Inputs are not
   * modified; the updated params and moments come back as new arrays.
   */
  step(params: Arrays, grads: Arrays, m: Arrays, v: Arrays, t: number): Promise<{ params: Arrays; m: Arrays; v: Arrays } & StepResult>;
  release(): Promise<void>;
}

/**
 * Builds and opens the update graph for parameters of the given shapes. Per parameter it takes
 * p, g, m, v and returns new p, m, v; the step-dependent scalars (decay, lr / bc1, 1 / sqrt(bc2))
 * are scalar inputs so one graph serves every step.
 */
export async function createAdamWGraphStep(
  shapes: Record<string, readonly number[]>,
  config: AdamWConfig,
  session: SessionConfig = {},
): Promise<AdamWGraphStep> {
  const c = resolveAdamWConfig(config);
  if (config.lrScales?.size) throw new Error('createAdamWGraphStep: per-parameter lr multipliers are not supported (one step size for all)');
  const names = Object.keys(shapes);
  if (names.length === 0) throw new Error('createAdamWGraphStep: no parameters');
  const b = new GraphBuilder('adamw_step');
  const decay = b.input('decay', 'float32', []);
  const stepSize = b.input('step_size', 'float32', []);
  const invBc2Sqrt = b.input('inv_bc2_sqrt', 'float32', []);

  // Graph values are named by index: parameter names may hold characters ONNX tools dislike.
  const ins = names.map((name, i) => {
    const shape = [...shapes[name]!];
    return {
      name, shape,
      p: b.input(`p${i}`, 'float32', shape), g: b.input(`g${i}`, 'float32', shape),
      m: b.input(`m${i}`, 'float32', shape), v: b.input(`v${i}`, 'float32', shape),
    };
  });

  // Global gradient norm (always reported, as AdamW does), then the clip factor.
  const squares = ins.map(({ g, shape }) => {
    const flat = b.reshape(g, [numel(shape)]);
    return b.reduceSum(b.mul(flat, flat), [0], false);
  });
  const gradNorm = b.sqrt(b.sum(squares));
  b.output(gradNorm, 'grad_norm');
  let scale: Value | undefined;
  if (c.maxGradNorm !== undefined) {
    scale = b.where(b.greater(gradNorm, c.maxGradNorm), b.div(c.maxGradNorm, b.add(gradNorm, CLIP_EPS)), 1);
    b.output(scale, 'clip_scale');
  }

  const outNames = ins.map(({ p, g, m, v }, i) => {
    const gs = scale ? b.mul(g, scale) : g;
    const m1 = b.add(b.mul(m, c.beta1), b.mul(gs, 1 - c.beta1));
    const v1 = b.add(b.mul(v, c.beta2), b.mul(b.mul(gs, gs), 1 - c.beta2));
    const denom = b.add(b.mul(b.sqrt(v1), invBc2Sqrt), c.eps);
    const p1 = b.sub(b.mul(p, decay), b.div(b.mul(m1, stepSize), denom));
    return {
      p: b.output(p1, `p_out${i}`).name,
      m: b.output(m1, `m_out${i}`).name,
      v: b.output(v1, `v_out${i}`).name,
    };
  });

  const sess = await Session.create(b.graph, session);
  const scalar = (x: number): HostTensor => tensor('float32', [], [x]);
  const feed = (name: string, shape: number[], a: Float32Array | undefined, what: string): HostTensor => {
    if (!a) throw new Error(`AdamW graph step: missing ${what} for parameter '${name}'`);
    return tensor('float32', shape, a); // also checks the length against the shape
  };

  const self: AdamWGraphStep = {
    lr: c.lr,
    async step(params, grads, m, v, t) {
      if (!Number.isInteger(t) || t < 1) throw new Error(`AdamW graph step: t must be an integer >= 1, got ${t}`);
      const f = adamWFactors(c, self.lr, t);
      const feeds: Record<string, HostTensor> = {
        decay: scalar(f.decay), step_size: scalar(f.stepSize), inv_bc2_sqrt: scalar(f.invBc2Sqrt),
      };
      ins.forEach(({ name, shape }, i) => {
        feeds[`p${i}`] = feed(name, shape, params[name], 'param');
        feeds[`g${i}`] = feed(name, shape, grads[name], 'gradient');
        feeds[`m${i}`] = feed(name, shape, m[name], 'm');
        feeds[`v${i}`] = feed(name, shape, v[name], 'v');
      });
      const out = await sess.run(feeds);
      const pick = (key: 'p' | 'm' | 'v'): Arrays =>
        Object.fromEntries(ins.map(({ name }, i) => [name, out[outNames[i]![key]]!.data as Float32Array]));
      const norm = out.grad_norm!.data[0] as number;
      const clipped = out.clip_scale ? (out.clip_scale.data[0] as number) !== 1 : false;
      return { params: pick('p'), m: pick('m'), v: pick('v'), gradNorm: norm, clipped };
    },
    release: () => sess.release(),
  };
  return self;
}
