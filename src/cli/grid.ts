import type { Command } from 'commander';
import { writeFile } from 'node:fs/promises';
import { Engine } from '../engine/engine.js';
import { imageGrid } from '../engine/grid.js';
import type { HostTensor } from '../tensor/tensor.js';
import { Progress } from '../util/progress.js';
import { int } from './report.js';

/** Captions for the rows of a text model's grid. */
export const GRID_PROMPTS = [
  'a large 0 in the center', 'a small 1 in the top left corner', 'a large two in the top right corner', 'a small 3 in the bottom left corner',
  'a large four in the bottom right corner', 'a small five in the center', 'a large 6 at the top', 'a small seven at the bottom',
  'a large 8 on the left side', 'a small nine on the right side',
];

export function registerGrid(program: Command): void {
  program
    .command('grid')
    .description('a sample grid PNG: one row per class (or per caption of a text model), one column per seed')
    .requiredOption('--model <package>', 'bundled model name or package directory')
    .requiredOption('--out <file>', 'PNG file')
    .option('--cols <n>', 'images per row', int, 8)
    .option('--steps <n>', 'denoising steps', int)
    .option('--sampler <name>', 'ddim | dpmpp')
    .option('--cfg <scale>', 'guidance scale', Number)
    .option('--cache <policy>', 'cache policy', 'none')
    .option('--seed <n>', 'seed', int, 0)
    .action(async (o: { model: string; out: string; cols: number; steps?: number; sampler?: string; cfg?: number; cache: string; seed: number }) => {
      const engine = await Engine.open(o.model);
      const text = engine.model.conditioning === 'text';
      const conditions = text ? GRID_PROMPTS.map((prompt) => ({ prompt })) : (engine.pkg.manifest.classes ?? []).map((_, classLabel) => ({ classLabel }));
      const progress = new Progress(`grid ${engine.id}`, conditions.length, 'rows');
      const rows: HostTensor[][] = [];
      for (const [i, condition] of conditions.entries()) {
        const { images } = await engine.generate({ ...condition, n: o.cols, steps: o.steps, sampler: o.sampler, cfg: o.cfg, cache: o.cache, seed: o.seed + i });
        rows.push(images);
        progress.tick();
      }
      await writeFile(o.out, await imageGrid(rows));
      process.stderr.write(`wrote ${o.out}\n`);
    });
}
