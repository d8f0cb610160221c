import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { HarmonicaError } from '../util/errors.js';
import { log } from '../util/log.js';
import { exportBaseModel, loadTrainConfig, trainBase } from './base.js';

/**
 * How a bundled model was made, when that took more than one run (configs/*.recipe.json):
 * the runs in order, each starting from the package the one before exported, so that one
 * command reproduces the whole chain.
 */
export interface Recipe {
  id: string;
  stages: RecipeStage[];
}

export interface RecipeStage {
  /** Training config, relative to the recipe file. */
  config: string;
  /** Stop this run at this step of its schedule (as it was run), then go on. */
  stopAfter?: number;
  /**
   * Continue the previous stage's run (its weights, optimizer and step count) under this
   * config, e.g. with a new learning-rate schedule, instead of starting a new run from the
   * previous stage's package.
   */
  continueRun?: boolean;
}

export interface StageResult {
  config: string;
  /** The run's step at the end of this stage. */
  step: number;
  /** Steps and seconds of this stage alone (a continued run counts from where it was). */
  steps: number;
  wallSeconds: number;
}

/** Stages finished so far, kept in the output directory so that `--resume` skips them. */
const PROGRESS = 'recipe.json';

export async function loadRecipe(path: string): Promise<Recipe> {
  const recipe = JSON.parse(await readFile(path, 'utf8')) as Recipe;
  if (typeof recipe.id !== 'string' || !Array.isArray(recipe.stages) || recipe.stages.length === 0) {
    throw new HarmonicaError('BAD_CONFIG', `${path}: a recipe needs "id" and a non-empty "stages" list`);
  }
  recipe.stages.forEach((stage, i) => {
    if (typeof stage.config !== 'string') throw new HarmonicaError('BAD_CONFIG', `${path}: stage ${i + 1} needs "config"`);
    if (stage.stopAfter !== undefined && !(Number.isInteger(stage.stopAfter) && stage.stopAfter > 0)) {
      throw new HarmonicaError('BAD_CONFIG', `${path}: stage ${i + 1}: stopAfter must be a positive integer`);
    }
    if (stage.continueRun && i === 0) throw new HarmonicaError('BAD_CONFIG', `${path}: the first stage has no run to continue`);
  });
  return recipe;
}

/**
 * Runs a recipe's stages into `out/<n>-<config name>/`, exporting each run that a later
 * stage starts from (and the last, to `exportTo` when given). With `resume`, stages already
 * done are skipped and an interrupted one continues from its checkpoint.
 */
export async function trainRecipe(recipePath: string, out: string, opts: { resume?: boolean; threads?: number; exportTo?: string } = {}): Promise<StageResult[]> {
  const recipe = await loadRecipe(recipePath);
  const progressPath = join(out, PROGRESS);
  const done = await readProgress(progressPath, recipe, opts.resume);
  const save = () => writeFile(progressPath, JSON.stringify({ recipe, done }, null, 2));
  await mkdir(out, { recursive: true });
  await save();
  const runDirs: string[] = [];
  for (const [i, stage] of recipe.stages.entries()) {
    runDirs.push(stage.continueRun ? runDirs[i - 1]! : join(out, `${i + 1}-${basename(stage.config, '.json')}`));
    if (i < done.length) continue;
    const cfg = await loadTrainConfig(resolve(dirname(recipePath), stage.config));
    const stopAt = Math.min(cfg.train.steps, stage.stopAfter ?? Infinity);
    log.info({ recipe: recipe.id, stage: i + 1, of: recipe.stages.length, config: stage.config, steps: stopAt }, 'recipe stage');
    const initFrom = i > 0 && !stage.continueRun ? join(runDirs[i - 1]!, 'package') : undefined;
    const state = await trainBase(cfg, runDirs[i]!, { resume: true, stopAfter: stopAt, threads: opts.threads, initFrom });
    const last = i === recipe.stages.length - 1;
    if (last || !recipe.stages[i + 1]!.continueRun) await exportBaseModel(cfg, runDirs[i]!, last && opts.exportTo ? opts.exportTo : join(runDirs[i]!, 'package'));
    // A continued run's step and clock include the stages it continues.
    const earlier = done.filter((_, k) => runDirs[k] === runDirs[i]);
    const stepsBefore = earlier.reduce((s, r) => s + r.steps, 0);
    const secondsBefore = earlier.reduce((s, r) => s + r.wallSeconds, 0);
    done.push({ config: stage.config, step: state.step, steps: state.step - stepsBefore, wallSeconds: state.wallSeconds - secondsBefore });
    await save();
  }
  return done;
}

async function readProgress(path: string, recipe: Recipe, resume: boolean | undefined): Promise<StageResult[]> {
  if (!existsSync(path)) return [];
  if (!resume) throw new HarmonicaError('BAD_CONFIG', `${dirname(path)} already holds a recipe run: pass --resume to continue it, or choose another --out`);
  const saved = JSON.parse(await readFile(path, 'utf8')) as { recipe: Recipe; done: StageResult[] };
  if (JSON.stringify(saved.recipe.stages) !== JSON.stringify(recipe.stages)) {
    throw new HarmonicaError('BAD_CONFIG', `${dirname(path)} holds a run of another recipe (${saved.recipe.id}, other stages)`);
  }
  return saved.done;
}
