import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import { exportBaseModel, loadTrainConfig, trainBase } from '../train/base.js';
import { trainRecipe } from '../train/recipe.js';
import { int } from './report.js';

export function registerTrain(program: Command): void {
  const train = program.command('train').description('train models');
  train
    .command('base')
    .description('train a base model from scratch (epsilon prediction, AdamW, EMA); checkpoints to --out and resumes with --resume')
    .requiredOption('--config <file>', 'training config (configs/*.json)')
    .requiredOption('--out <dir>', 'run directory (checkpoint.safetensors, log.jsonl)')
    .option('--resume', 'continue from the run directory\'s checkpoint')
    .option('--stop-after <steps>', 'stop at this step (the run can be resumed later)', int)
    .option('--threads <n>', 'ORT intra-op threads', int)
    .option('--export <dir>', 'when done, write the EMA weights as a model package here')
    .option('--init-from <package>', 'start from this model package\'s weights (fresh optimizer) instead of from scratch')
    .action(async (o: { config: string; out: string; resume?: boolean; stopAfter?: number; threads?: number; export?: string; initFrom?: string }) => {
      const cfg = await loadTrainConfig(o.config);
      const state = await trainBase(cfg, o.out, { resume: o.resume, stopAfter: o.stopAfter, threads: o.threads, initFrom: o.initFrom });
      if (o.export && state.step >= cfg.train.steps) await exportBaseModel(cfg, o.out, o.export);
      process.stdout.write(`${JSON.stringify(state)}\n`);
    });
  train
    .command('recipe')
    .description('run a chain of base-model runs (configs/*.recipe.json), each from the package the one before exported')
    .requiredOption('--recipe <file>', 'recipe (configs/*.recipe.json)')
    .requiredOption('--out <dir>', 'directory for the runs, one per stage')
    .option('--resume', 'continue a recipe run: skip the stages done, resume the interrupted one')
    .option('--threads <n>', 'ORT intra-op threads', int)
    .option('--export <dir>', 'write the last stage\'s package here (default: its run directory\'s package/)')
    .action(async (o: { recipe: string; out: string; resume?: boolean; threads?: number; export?: string }) => {
      const stages = await trainRecipe(o.recipe, o.out, { resume: o.resume, threads: o.threads, exportTo: o.export });
      const total = (key: 'steps' | 'wallSeconds') => stages.reduce((s, r) => s + r[key], 0);
      process.stdout.write(`${JSON.stringify({ stages, steps: total('steps'), wallSeconds: total('wallSeconds') })}\n`);
    });
  train
    .command('export')
    .description('write a run\'s EMA weights as a model package')
    .requiredOption('--config <file>', 'training config')
    .requiredOption('--run <dir>', 'run directory')
    .requiredOption('--to <dir>', 'package directory')
    .option('--raw', 'the raw weights instead of their EMA (e.g. early in a run)')
    .option('--metrics <file>', 'JSON (e.g. `harmonica eval --json` output) to record in the provenance')
    .action(async (o: { config: string; run: string; to: string; raw?: boolean; metrics?: string }) => {
      const metrics = o.metrics ? (JSON.parse(await readFile(o.metrics, 'utf8')) as Record<string, unknown>) : {};
      await exportBaseModel(await loadTrainConfig(o.config), o.run, o.to, metrics, o.raw ? 'param' : 'ema');
    });
}
