import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeModelPackage } from '../../src/engine/package.js';
import type { DitConfig } from '../../src/models/dit.js';
import { initDitWeights } from '../../src/models/dit-init.js';
import { TINY_DIT } from '../helpers/dit-checkpoint.js';

/** A tiny pixel-space DiT that makes 1x32x32 images like dit-mnist (random weights). */
export const TINY_MNIST_DIT: DitConfig = { ...TINY_DIT, inChannels: 1, inputSize: 32, patchSize: 8 };

export async function tinyMnistDitPackage(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'eval-dit-'));
  return (await writeModelPackage(dir, {
    id: 'tiny-mnist-dit', family: 'dit', layout: 'diffusers', config: { ...TINY_MNIST_DIT },
    defaults: { sampler: 'ddim', steps: 2, cfg: 1 }, classes: Array.from({ length: 10 }, (_, i) => String(i)),
  }, initDitWeights(TINY_MNIST_DIT, 2, 0.8))).dir;
}
