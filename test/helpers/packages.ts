import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DitConfig } from '../../src/models/dit.js';
import { initDitWeights } from '../../src/models/dit-init.js';
import { writeModelPackage, type ModelPackage } from '../../src/engine/package.js';
import { TINY_DIT } from './dit-checkpoint.js';

/** A pixel-space DiT like dit-mnist, tiny: 8x8x1 images, 10 classes, random weights. */
export const TINY_PIXEL_DIT: DitConfig = { ...TINY_DIT, inChannels: 1 };

export async function tinyDitPackage(seed = 3, id = 'tiny-dit'): Promise<ModelPackage> {
  const dir = await mkdtemp(join(tmpdir(), `${id}-`));
  return writeModelPackage(dir, {
    id, family: 'dit', layout: 'diffusers', config: { ...TINY_PIXEL_DIT },
    defaults: { sampler: 'ddim', steps: 6, cfg: 1.5 },
    classes: Array.from({ length: 10 }, (_, i) => String(i)),
    provenance: { note: 'random weights for tests' },
  }, initDitWeights(TINY_PIXEL_DIT, seed, 0.8));
}
