import type { Command } from 'commander';
import { calibrateTeaCache } from '../cache/teacache-calibrate.js';
import { Engine } from '../engine/engine.js';
import { int, printReport } from './report.js';

export function registerCalibrate(program: Command): void {
  program
    .command('calibrate')
    .description('per-model calibration of input-adaptive cache policies')
    .command('teacache')
    .description("fit TeaCache's rescaling polynomial on the model (writes teacache.json into the package)")
    .requiredOption('--model <package>', 'bundled model name or package directory')
    .option('--steps <n>', 'denoising steps', int)
    .option('--sampler <name>', 'ddim | dpmpp')
    .option('--cfg <scale>', 'guidance scale', Number)
    .option('--trajectories <n>', 'uncached trajectories to fit on', int, 16)
    .option('--degree <n>', 'polynomial degree', int, 4)
    .option('--seed <n>', 'seed', int, 0)
    .option('--json', 'print the calibration as JSON')
    .action(async (o: { model: string; steps?: number; sampler?: string; cfg?: number; trajectories: number; degree: number; seed: number; json?: boolean }) => {
      const engine = await Engine.open(o.model);
      const d = engine.pkg.manifest.defaults;
      const c = await calibrateTeaCache(engine, { steps: o.steps ?? d.steps, sampler: o.sampler ?? d.sampler, cfg: o.cfg ?? d.cfg, trajectories: o.trajectories, seed: o.seed, degree: o.degree });
      printReport({ coefficients: c.coefficients, ...c.fittedOn }, !!o.json);
    });
}
