import { CachedExecutor, parsePolicy, type CachePolicy } from '../cache/index.js';
import { trajectoryMacs } from '../cache/macs.js';
import { staticSchedule, storeMask } from '../cache/policy.js';
import { buildPlainStep } from '../cache/step-graph.js';
import { ditDenoiser, type Denoiser } from '../models/denoiser.js';
import type { DitConfig } from '../models/dit.js';
import { initDitWeights } from '../models/dit-init.js';
import { randomTensor } from '../models/init.js';
import type { Precision } from '../models/precision.js';
import { Weights } from '../models/weights.js';
import { Session } from '../onnx/session.js';
import { Rng } from '../tensor/rng.js';
import { tensor, type HostTensor } from '../tensor/tensor.js';
import { Progress } from '../util/progress.js';
import { median } from './timing.js';

/** DiT-S/2 at 256px: depth 12, hidden 384, 6 heads, 256 tokens (32x32x4 latent, patch 2). */
export const DIT_S_2: DitConfig = {
  inputSize: 32, patchSize: 2, inChannels: 4, hidden: 384, depth: 12, heads: 6, mlpRatio: 4,
  numClasses: 1000, learnSigma: true, freqShift: 0, mlpNormEps: 1e-6,
};

export interface RuntimeRow {
  policy: string;
  stepMs: number;
  macSpeedup: number;
  /** No-cache step time / this policy's step time. */
  measuredSpeedup: number;
  /** measured / MAC speedup */
  efficiency: number;
}

export interface RuntimeBenchResult {
  model: string;
  batch: number;
  steps: number;
  /** `none` first: the executor computing every slot. */
  rows: RuntimeRow[];
  /** One ORT run of the same model without any `If`. */
  plainStepMs: number;
  /** Executor with every slot computed vs the plain graph, as a fraction. */
  executorOverhead: number;
}

/** The masks a static policy chooses over `steps` steps. */
function policyMasks(policy: CachePolicy, model: Denoiser, steps: number): boolean[][] {
  policy.start({ steps, sampler: 'ddim', slots: model.slots, model: { id: 'bench', sha256: 'bench' } });
  return staticSchedule(policy, steps, model.slots.length);
}

/**
 * Whole trajectories (same inputs every step: the model cost does not depend on values) of
 * the plain graph, the executor computing everything, and FORA(2)/(3), interleaved run by
 * run; per-step medians.
 */
export async function benchRuntime(options: { runs?: number; steps?: number; config?: DitConfig; precision?: Precision } = {}): Promise<RuntimeBenchResult> {
  const runs = options.runs ?? 5;
  const steps = options.steps ?? 12;
  const cfg = options.config ?? DIT_S_2;
  const batch = 2; // one sample with classifier-free guidance
  const model = ditDenoiser(cfg);
  const weights = new Weights(initDitWeights(cfg, 0), 'random', options.precision);
  const rng = new Rng(1);
  const feeds: Record<string, HostTensor> = {
    x: randomTensor([batch, cfg.inChannels, cfg.inputSize, cfg.inputSize], rng),
    t: tensor('float32', [batch], [500, 500]),
    y: tensor('int64', [batch], [1, cfg.numClasses]),
  };
  const plain = await Session.create(buildPlainStep(model, weights, batch).graph);
  const executor = await CachedExecutor.create(model, weights, batch);
  const specs = ['none', 'fora:2', 'fora:3'];
  const masks = Object.fromEntries(specs.map((s) => [s, policyMasks(parsePolicy(s), model, steps)]));
  const stores = Object.fromEntries(specs.map((s) => [s, storeMask(masks[s]!)]));
  const fullMacs = trajectoryMacs(model, masks.none!);

  const variants: Record<string, () => Promise<unknown>> = {
    plain: async () => {
      for (let i = 0; i < steps; i++) await plain.run(feeds);
    },
  };
  for (const s of specs) {
    variants[`executor ${s}`] = async () => {
      executor.reset();
      for (let i = 0; i < steps; i++) await executor.step(feeds, masks[s]![i]!, stores[s]![i]!);
    };
  }
  const times: Record<string, number[]> = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
  const progress = new Progress('bench runtime', runs + 1, 'rounds');
  for (let r = 0; r <= runs; r++) {
    for (const [name, run] of Object.entries(variants)) {
      const t0 = performance.now();
      await run();
      if (r > 0) times[name]!.push((performance.now() - t0) / steps); // round 0 warms up
    }
    progress.tick();
  }
  await plain.release();
  await executor.release();

  const plainMs = median(times.plain!);
  const noneMs = median(times['executor none']!);
  const round = (v: number, digits = 3) => Number(v.toFixed(digits));
  const rows: RuntimeRow[] = specs.map((s) => {
    const stepMs = median(times[`executor ${s}`]!);
    const macSpeedup = fullMacs / trajectoryMacs(model, masks[s]!);
    const measuredSpeedup = noneMs / stepMs;
    return { policy: s, stepMs: round(stepMs, 2), macSpeedup: round(macSpeedup), measuredSpeedup: round(measuredSpeedup), efficiency: round(measuredSpeedup / macSpeedup) };
  });
  return {
    model: `DiT d${cfg.depth} h${cfg.hidden} ${(cfg.inputSize / cfg.patchSize) ** 2} tokens, random weights, ${weights.precision}`,
    batch,
    steps,
    rows,
    plainStepMs: round(plainMs, 2),
    executorOverhead: round(noneMs / plainMs - 1),
  };
}
