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
  teacher: 'teacher',
  lambda: 'lambda',
  beta: 'beta',
  mixed: (slot: string) => `mixed/${slot}`,
  loss: 'loss',
  dataLoss: 'data_loss',
  grad: 'grad/router_logits',
};

/**
 * One denoising step for router training (HarmoniCa section 3): every gated sublayer outputs
 * r * fresh + (1 - r) * cached with r = sigmoid(P[s]) from the input row `router_logits` [S],
 * and the graph returns the student prediction, the mixed outputs (the next cache), the
 * loss lambda * mean((teacher - student)^2) + beta * sum(r) and its gradient w.r.t. the row
 * only. Model weights stay initializers: nothing but P is trained. Without `withLoss` it is
 * the soft-routed forward alone.
 */
export function buildRouterStep(model: Denoiser, weights: Weights, batch: number, withLoss = true): GraphBuilder {
  const b = new GraphBuilder(`${model.family}_router_step`);
  const S = model.slots.length;
  const logits = b.input(routerNames.logits, 'float32', [S]);
  const r = b.sigmoid(logits);
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
  const { out } = model.build(b, weights, batch, hooks);
  b.output(out, stepNames.out);
  if (!withLoss) return b; // the forward alone: cache filling and IEPO trajectories
  const teacher = b.input(routerNames.teacher, 'float32', out.shape);
  const diff = b.sub(out, teacher);
  const dataLoss = b.reduceMean(b.mul(diff, diff), out.shape.map((_, i) => i), false);
  const lambda = b.input(routerNames.lambda, 'float32', []);
  const beta = b.input(routerNames.beta, 'float32', []);
  const loss: Value = b.add(b.mul(lambda, dataLoss), b.mul(beta, b.reduceSum(r, [0], false)));
  b.output(dataLoss, routerNames.dataLoss);
  b.output(loss, routerNames.loss);
  const [grad] = gradients(b, loss, [logits]);
  b.output(grad!, routerNames.grad);
  return b;
}
