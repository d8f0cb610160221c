import { describe, expect, it } from 'vitest';
import { CachedExecutor } from '../../src/cache/executor.js';
import { buildPlainStep } from '../../src/cache/step-graph.js';
import { ditDenoiser } from '../../src/models/denoiser.js';
import { Weights } from '../../src/models/weights.js';
import { Session } from '../../src/onnx/session.js';
import { Rng } from '../../src/tensor/rng.js';
import { tensor } from '../../src/tensor/tensor.js';
import { randomTensor } from '../../src/models/init.js';
import { randomDitCheckpoints, TINY_DIT } from '../helpers/dit-checkpoint.js';

const batch = 2;
function inputs(seed: number) {
  const rng = new Rng(seed);
  return {
    x: randomTensor([batch, 4, 8, 8], rng),
    t: tensor('float32', [batch], [999, 500]),
    y: tensor('int64', [batch], [3, TINY_DIT.numClasses]),
  };
}

describe('cached executor (DiT)', () => {
  const model = ditDenoiser(TINY_DIT);
  const weights = () => new Weights(randomDitCheckpoints(TINY_DIT).diffusers);

  it('with every slot computed equals the plain forward', async () => {
    const plain = await Session.create(buildPlainStep(model, weights(), batch).graph, { threads: 1 });
    const exec = await CachedExecutor.create(model, weights(), batch, { threads: 1 });
    const all = model.slots.map(() => true);
    for (const seed of [1, 2]) {
      const feeds = inputs(seed);
      const expected = (await plain.run(feeds)).out!;
      const got = await exec.step(feeds, all);
      expect(got.out.shape).toEqual([batch, 8, 8, 8]);
      const e = expected.data as Float32Array;
      const g = got.out.data as Float32Array;
      let maxDiff = 0;
      for (let i = 0; i < e.length; i++) maxDiff = Math.max(maxDiff, Math.abs(e[i]! - g[i]!));
      expect(maxDiff).toBeLessThan(1e-5);
    }
  });

  it('reuses the cached raw output with the current gate, computes everything on the first step', async () => {
    const exec = await CachedExecutor.create(model, weights(), batch, { threads: 1 });
    const none = model.slots.map(() => false);
    const first = await exec.step(inputs(1), none);
    expect(first.computed.every(Boolean)).toBe(true);
    // Same inputs again with everything reused: the cache holds exactly this step's raw outputs.
    const again = await exec.step(inputs(1), none);
    expect(again.computed.some(Boolean)).toBe(false);
    expect(Array.from(again.out.data as Float32Array)).toEqual(Array.from(first.out.data as Float32Array));
    // A different timestep changes the gates (and the non-gated parts) but not the cache.
    const later = await exec.step({ ...inputs(1), t: tensor('float32', [batch], [10, 10]) }, none);
    expect(Array.from(later.out.data as Float32Array)).not.toEqual(Array.from(first.out.data as Float32Array));
  });
});
