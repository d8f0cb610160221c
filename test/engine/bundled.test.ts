import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadRouter, packageRouterPath } from '../../src/cache/router.js';
import { loadTeaCacheCalibration } from '../../src/cache/teacache.js';
import { Engine } from '../../src/engine/engine.js';
import { BUNDLED_MODELS_DIR } from '../../src/engine/package.js';

// Retraining a bundled model must also refit what it ships for its weights.
describe.each(['dit-mnist', 'pixart-mnist'])('bundled %s', (id) => {
  it('ships routers and a TeaCache fit made on these weights', async () => {
    const engine = await Engine.open(id, { threads: 1 });
    const model = { id, sha256: engine.pkg.sha256 };
    const names = (await readdir(join(BUNDLED_MODELS_DIR, id, 'routers'))).map((f) => f.replace(/\.json$/, ''));
    expect(names.length).toBeGreaterThan(0);
    for (const name of names) {
      const router = loadRouter(packageRouterPath(engine.pkg.dir, name));
      const { steps, sampler } = router.artifact;
      expect(() => router.start({ steps, sampler, slots: engine.model.slots, model }), name).not.toThrow();
    }
    expect(() => loadTeaCacheCalibration({ model, modelDir: engine.pkg.dir })).not.toThrow();
  });
});
