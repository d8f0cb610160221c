import { mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import { loadTrainConfig, trainBase, type BaseTrainConfig } from '../../src/train/base.js';
import { loadRecipe, trainRecipe } from '../../src/train/recipe.js';
import { lossCurve, MICRO_DIT_RUN } from '../helpers/train-configs.js';

// The first run's schedule changes halfway (constant, then cosine), as dit-mnist's did; the
// second run starts from the first one's package with another seed.
const constant = MICRO_DIT_RUN;
const cosine: BaseTrainConfig = { ...MICRO_DIT_RUN, train: { ...MICRO_DIT_RUN.train, schedule: 'cosine' } };
const second: BaseTrainConfig = { ...MICRO_DIT_RUN, train: { ...MICRO_DIT_RUN.train, seed: 4, steps: 4 } };
const stages = [{ config: 'constant.json', stopAfter: 3 }, { config: 'cosine.json', continueRun: true }, { config: 'second.json' }];

async function recipeDir(configs: Record<string, BaseTrainConfig>, recipeStages: unknown): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'recipe-'));
  for (const [name, cfg] of Object.entries(configs)) await writeFile(join(dir, name), JSON.stringify(cfg));
  await writeFile(join(dir, 'micro.recipe.json'), JSON.stringify({ id: 'micro', stages: recipeStages }));
  return dir;
}

const manifest = async (pkg: string) => JSON.parse(await readFile(join(pkg, 'manifest.json'), 'utf8'));

describe('training recipes', () => {
  it('runs the chain in one call: a continued run, then a run from its package; the provenance chains them', async () => {
    const dir = await recipeDir({ 'constant.json': constant, 'cosine.json': cosine, 'second.json': second }, stages);
    const out = join(dir, 'out');
    const done = await trainRecipe(join(dir, 'micro.recipe.json'), out, { threads: 1, exportTo: join(dir, 'final') });
    expect(done.map(({ config, step, steps }) => ({ config, step, steps }))).toEqual([
      { config: 'constant.json', step: 3, steps: 3 },
      { config: 'cosine.json', step: 6, steps: 3 },
      { config: 'second.json', step: 4, steps: 4 },
    ]);
    // The continued run is the same run: one curve of 6 steps, the same as a run by hand.
    const byHand = join(dir, 'by-hand');
    await trainBase(constant, byHand, { threads: 1, stopAfter: 3 });
    await trainBase(cosine, byHand, { threads: 1, resume: true });
    expect(await lossCurve(join(out, '1-constant'))).toEqual(await lossCurve(byHand));
    const final = await manifest(join(dir, 'final'));
    const first = await manifest(join(out, '1-constant', 'package'));
    expect(final.provenance).toMatchObject({ steps: 4, seed: 4, initFrom: { sha256: first.files['weights.safetensors'], provenance: { steps: 6, config: { train: { schedule: 'cosine' } } } } });
    const engine = await Engine.open(join(dir, 'final'), { threads: 1 });
    expect((await engine.generate({ classLabel: 3 })).images).toHaveLength(1);
  });

  it('resumes after a failed stage, skipping the stages done, to the same weights; refuses to restart or mix recipes', async () => {
    // The last stage's config is missing: the call fails after the continued run is done.
    const dir = await recipeDir({ 'constant.json': constant, 'cosine.json': cosine }, stages);
    const recipe = join(dir, 'micro.recipe.json');
    const out = join(dir, 'out');
    await expect(trainRecipe(recipe, out, { threads: 1 })).rejects.toThrow(/second\.json/);
    await expect(trainRecipe(recipe, out, { threads: 1 })).rejects.toThrow(/already holds a recipe run: pass --resume/);
    await writeFile(join(dir, 'second.json'), JSON.stringify(second));
    const curve = await lossCurve(join(out, '1-constant'));
    const done = await trainRecipe(recipe, out, { threads: 1, resume: true });
    expect(done.map((d) => d.steps)).toEqual([3, 3, 4]);
    expect(await lossCurve(join(out, '1-constant'))).toEqual(curve); // not trained again

    const straight = await recipeDir({ 'constant.json': constant, 'cosine.json': cosine, 'second.json': second }, stages);
    await trainRecipe(join(straight, 'micro.recipe.json'), join(straight, 'out'), { threads: 1 });
    const weights = async (root: string) => (await manifest(join(root, 'out', '3-second', 'package'))).files['weights.safetensors'];
    expect(await weights(dir)).toBe(await weights(straight));

    await writeFile(recipe, JSON.stringify({ id: 'micro', stages: stages.slice(0, 2) }));
    await expect(trainRecipe(recipe, out, { threads: 1, resume: true })).rejects.toThrow(/holds a run of another recipe/);
  });

  it('the committed recipes name committed configs that load', async () => {
    const recipes = (await readdir('configs')).filter((f) => f.endsWith('.recipe.json'));
    expect(recipes.length).toBeGreaterThan(0);
    for (const file of recipes) {
      const recipe = await loadRecipe(join('configs', file));
      const configs = await Promise.all(recipe.stages.map((s) => loadTrainConfig(join('configs', s.config))));
      expect(configs.at(-1)!.id).toBe(recipe.id);
    }
  });

  it('refuses a malformed recipe', async () => {
    const dir = await recipeDir({}, []);
    const write = async (r: unknown) => {
      await writeFile(join(dir, 'r.json'), JSON.stringify(r));
      return loadRecipe(join(dir, 'r.json'));
    };
    await expect(write({ id: 'x', stages: [] })).rejects.toThrow(/non-empty "stages"/);
    await expect(write({ id: 'x', stages: [{ config: 'a.json', continueRun: true }] })).rejects.toThrow(/first stage has no run to continue/);
    await expect(write({ id: 'x', stages: [{ config: 'a.json', stopAfter: 0 }] })).rejects.toThrow(/stopAfter must be a positive integer/);
    await expect(write({ id: 'x', stages: [{ stopAfter: 3 }] })).rejects.toThrow(/stage 1 needs "config"/);
  });
});
