import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { BaseTrainConfig } from '../../src/train/base.js';
import type { DitTaskConfig } from '../../src/train/tasks.js';

/** A base-model training run small enough for tests: a 2-block DiT on MNIST, 6 steps of 4 digits. */
export const MICRO_DIT_RUN: BaseTrainConfig & DitTaskConfig = {
  id: 'micro-dit',
  family: 'dit',
  model: { inputSize: 32, patchSize: 8, inChannels: 1, hidden: 32, depth: 2, heads: 2, mlpRatio: 2, numClasses: 10, learnSigma: false, freqShift: 0, mlpNormEps: 1e-6 },
  train: { steps: 6, batch: 4, lr: 1e-3, warmupSteps: 2, weightDecay: 0, maxGradNorm: 1, emaDecay: 0.9, conditionDropout: 0.1, seed: 3, checkpointEvery: 3 },
  sample: { sampler: 'ddim', steps: 4, cfg: 2 },
};

/** The loss of every step of a run, from its log.jsonl. */
export async function lossCurve(runDir: string): Promise<number[]> {
  return (await readFile(join(runDir, 'log.jsonl'), 'utf8')).trim().split('\n').map((l) => (JSON.parse(l) as { loss: number }).loss);
}
