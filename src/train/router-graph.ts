import { GraphBuilder } from '../onnx/builder.js';
import { gradients } from '../onnx/grad/index.js';
import type { Value } from '../onnx/ir.js';
import type { Denoiser } from '../models/denoiser.js';
import type { SublayerHooks } from '../models/sublayer.js';
import type { Weights } from '../models/weights.js';
import { stepNames } from '../cache/step-graph.js';

/** Names of the router training graph's own inputs and outputs. */
export const routerNames = {
  logits: 'router_logits',
  /** Straight-through forward only: hard decision minus sigmoid(P), computed on the host. */
  hardOffset: 'router_hard_offset',
  teacher: 'teacher',
  cfgScale: 'cfg_scale',
  lambda: 'lambda',
  beta: 'beta',
  mixed: (slot: string) => `mixed/${slot}`,
  loss: 'loss',
  dataLoss: 'data_loss',
  grad: 'grad/router_logits',
};

export interface RouterStepOptions {
  /**
   * Noises in the batch when the rows are a classifier-free-guidance pair (cond rows, then
   * uncond rows); absent = no guidance. The loss compares guided predictions.
   */
  guidedBatch?: number;
  /** Add the loss and its gradient w.r.t. the router row (else: the soft-routed forward alone). */
  withLoss?: boolean;
  /**
   * Straight-through hard forward: the mix weight is r + (hard - r) with the offset fed as a
   * constant, so the forward uses the hard decision and the gradient is that of r.
   */
  straightThrough?: boolean;
}

/**
 * One denoising step for router training (HarmoniCa section 3): every gated sublayer outputs
 * r * fresh + (1 - r) * cached with r = sigmoid(P[s]) from the input row `router_logits` [S],
 * and the graph returns the student prediction, the mixed outputs (the next cache), the
 * loss lambda * mean((teacher - student)^2) + beta * sum(r) and its gradient w.r.t. the row
 * only. Model weights stay initializers: nothing but P is trained. The same graph with every
 * logit at +40 (r = 1 exactly in float32) is the full, uncached model: the teacher.
 */
export function buildRouterStep(model: Denoiser, weights: Weights, rows: number, opts: RouterStepOptions = {}): GraphBuilder {
  const b = new GraphBuilder(`${model.family}_router_step`);
  const S = model.slots.length;
  const logits = b.input(routerNames.logits, 'float32', [S]);
  const soft = b.sigmoid(logits);
  const r = opts.straightThrough ? b.add(soft, b.input(routerNames.hardOffset, 'float32', [S])) : soft;
  const hooks: SublayerHooks = {
    gated(slot, x, gate, compute) {
      const s = model.slots.findIndex((info) => info.name === slot.name);
      const rs = b.slice(r, [s], [s + 1], [0]);
      const cached = b.input(stepNames.cache(slot.name), x.dtype, x.shape);
      const mixed = b.add(b.mul(rs, compute(b)), b.mul(b.sub(1, rs), cached));
      b.output(mixed, routerNames.mixed(slot.name));
      return b.add(x, gate ? b.mul(gate, mixed) : mixed);
    },
    probe: () => {},
  };
  const { out } = model.build(b, weights, rows, hooks);
  b.output(out, stepNames.out);
  if (!opts.withLoss) return b;
  const teacher = b.input(routerNames.teacher, 'float32', out.shape);
  const prediction = predictionOf(b, model, opts.guidedBatch);
  const diff = b.sub(prediction(out), prediction(teacher));
  const dataLoss = b.reduceMean(b.mul(diff, diff), diff.shape.map((_, i) => i), false);
  const lambda = b.input(routerNames.lambda, 'float32', []);
  const beta = b.input(routerNames.beta, 'float32', []);
  // The sparsity term is on sigmoid(P) itself, as the reference's sum of router scores.
  const loss: Value = b.add(b.mul(lambda, dataLoss), b.mul(beta, b.reduceSum(soft, [0], false)));
  b.output(dataLoss, routerNames.dataLoss);
  b.output(loss, routerNames.loss);
  const [grad] = gradients(b, loss, [logits]);
  b.output(grad!, routerNames.grad);
  return b;
}

/**
 * What the sampler uses from a model output: the epsilon channels (learned sigma dropped),
 * and with guidance uncond + s * (cond - uncond) over the noises (scale `cfg_scale`).
 */
function predictionOf(b: GraphBuilder, model: Denoiser, guidedBatch: number | undefined): (out: Value) => Value {
  const channels = model.latentShape[0];
  const scale = guidedBatch === undefined ? null : b.input(routerNames.cfgScale, 'float32', []);
  return (out) => {
    const eps = channels === model.outChannels ? out : b.slice(out, [0], [channels], [1]);
    if (scale === null) return eps;
    const n = guidedBatch!;
    const cond = b.slice(eps, [0], [n], [0]);
    const uncond = b.slice(eps, [n], [2 * n], [0]);
    return b.add(uncond, b.mul(scale, b.sub(cond, uncond)));
  };
}
