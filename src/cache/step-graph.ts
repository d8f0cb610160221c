import { GraphBuilder } from '../onnx/builder.js';
import type { Value } from '../onnx/ir.js';
import type { Denoiser } from '../models/denoiser.js';
import { plainHooks, type SlotInfo, type SublayerHooks } from '../models/sublayer.js';
import type { Weights } from '../models/weights.js';

/** Graph input and output names of the cached step graph, per slot. */
export const stepNames = {
  compute: (slot: string) => `compute/${slot}`,
  cache: (slot: string) => `cache/${slot}`,
  fresh: (slot: string) => `fresh/${slot}`,
  probe: (name: string) => `probe/${name}`,
  out: 'out',
};

/**
 * One denoising step as one graph: every gated sublayer sits in an `If` on its boolean
 * `compute/<slot>` input. The computing branch returns gate * raw and the raw output (the
 * new cache entry, `fresh/<slot>`); the reusing branch applies the current gate to
 * `cache/<slot>` and returns an empty tensor, so a skipped slot copies nothing out.
 */
export function buildCachedStep(model: Denoiser, weights: Weights, batch: number, probes: readonly string[] = []): GraphBuilder {
  const b = new GraphBuilder(`${model.family}_cached_step`);
  const hooks: SublayerHooks = {
    gated(slot: SlotInfo, x: Value, gate: Value | null, compute) {
      const compute_ = b.input(stepNames.compute(slot.name), 'bool', [1]);
      const cache = b.input(stepNames.cache(slot.name), x.dtype, x.shape);
      const [delta, fresh] = b.ifElse(compute_,
        (s) => {
          const raw = compute(s);
          return [gate ? s.mul(gate, raw) : raw, raw];
        },
        (s) => [gate ? s.mul(gate, cache) : s.identity(cache), s.slice(cache, [0], [0], [0])],
        `${slot.name}/If`);
      b.output(fresh!, stepNames.fresh(slot.name));
      return b.add(x, delta!);
    },
    probe(name, value) {
      if (probes.includes(name)) b.output(value, stepNames.probe(name));
    },
  };
  const { out } = model.build(b, weights, batch, hooks);
  b.output(out, stepNames.out);
  return b;
}

/** The same model without any gating: the reference forward (and the `none` fast path). */
export function buildPlainStep(model: Denoiser, weights: Weights, batch: number): GraphBuilder {
  const b = new GraphBuilder(`${model.family}_step`);
  const { out } = model.build(b, weights, batch, plainHooks(b));
  b.output(out, stepNames.out);
  return b;
}

/** Only the named probes (ORT prunes everything else): what input-adaptive policies look at before a step. */
export function buildProbeStep(model: Denoiser, weights: Weights, batch: number, probes: readonly string[]): GraphBuilder {
  const b = new GraphBuilder(`${model.family}_probe`);
  const hooks = plainHooks(b);
  hooks.probe = (name, value) => {
    if (probes.includes(name)) b.output(value, stepNames.probe(name));
  };
  model.build(b, weights, batch, hooks);
  const missing = probes.filter((p) => !b.graph.outputs.some((o) => o.name === stepNames.probe(p)));
  if (missing.length) throw new Error(`model ${model.family} has no probe ${missing.join(', ')}`);
  return b;
}
