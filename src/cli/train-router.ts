import type { Command } from 'commander';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Engine } from '../engine/engine.js';
import { HARMONICA_DEFAULTS, RouterTrainer } from '../train/router.js';
import { PLATEAU_DEFAULTS } from '../train/router-progress.js';
import { HarmonicaError } from '../util/errors.js';
import { int, printReport } from './report.js';

interface Options {
  model: string;
  method: string;
  steps?: number;
  sampler?: string;
  cfg?: number;
  beta: number;
  lr: number;
  updates: number;
  batch: number;
  tau: number;
  tauTrain: number;
  lambda: 'paper' | 'incremental';
  lambdaNorm: 'none' | 'mean';
  lambdaSchedule: 'soft' | 'hard';
  straightThrough?: boolean;
  maxCacheAge?: number;
  refresh: number;
  untilPlateau?: boolean;
  window: number;
  checkpoint?: string;
  resume?: boolean;
  seed: number;
  threads?: number;
  out: string;
  json?: boolean;
}

export function registerTrainRouter(program: Command): void {
  program
    .command('train-router')
    .description('learn a router: harmonica (step-wise denoising training + image error proxy objective, image-free) or ltc (Learning-to-Cache, real images)')
    .requiredOption('--model <package>', 'bundled model name or package directory')
    .requiredOption('--out <file>', 'router artifact (JSON) to write')
    .option('--method <name>', 'harmonica | ltc', 'harmonica')
    .option('--steps <n>', 'denoising steps the router is for (default: the model\'s)', int)
    .option('--sampler <name>', 'ddim | dpmpp (default: the model\'s)')
    .option('--cfg <scale>', 'guidance scale during training (default: the model\'s)', Number)
    .option('--beta <v>', 'weight of sum(r): larger = more reuse', Number, HARMONICA_DEFAULTS.beta)
    .option('--lr <v>', 'AdamW learning rate', Number, HARMONICA_DEFAULTS.lr)
    .option('--updates <n>', 'most router updates (the reference trains 20,000)', int, HARMONICA_DEFAULTS.updates)
    .option('--until-plateau', `stop once the schedule at tau stops changing: at most ${PLATEAU_DEFAULTS.maxChanged * 100}% of the slots flip over ${PLATEAU_DEFAULTS.patience} windows`)
    .option('--window <n>', 'updates per logged window (loss, CUR, undecided logits, flipped decisions)', int, PLATEAU_DEFAULTS.window)
    .option('--checkpoint <file>', 'checkpoint written every 1,000 updates (default: <out>.ckpt.json)')
    .option('--resume', 'continue from the checkpoint (refused if it was trained with other settings)')
    .option('--batch <n>', 'noises per trajectory', int, 8)
    .option('--tau <v>', 'inference threshold stored in the artifact', Number, HARMONICA_DEFAULTS.tau)
    .option('--tau-train <v>', 'cache overwrite threshold during training', Number, HARMONICA_DEFAULTS.tauTrain)
    .option('--lambda <mode>', 'paper | incremental', 'paper')
    .option('--lambda-norm <mode>', 'none | mean', 'none')
    .option('--lambda-schedule <mode>', 'IEPO trajectories with the soft mixes (soft) or the hard decisions at tau (hard)', 'soft')
    .option('--max-cache-age <k>', 'a reused cache entry may be at most k steps old (in training and at inference; stored in the artifact)', int)
    .option('--straight-through', 'forward with the hard decisions, gradient of the soft ones (the reference\'s STE)')
    .option('--refresh <n>', 'recompute lambda every C updates', int, HARMONICA_DEFAULTS.refresh)
    .option('--seed <n>', 'seed', int, 0)
    .option('--threads <n>', 'ORT intra-op threads', int)
    .option('--json', 'print the summary as one JSON object')
    .action(async (o: Options) => {
      if (o.method !== 'harmonica' && o.method !== 'ltc') throw new HarmonicaError('BAD_INPUT', `unknown router training method "${o.method}" (harmonica, ltc)`);
      if (o.lambda !== 'paper' && o.lambda !== 'incremental') throw new HarmonicaError('BAD_INPUT', `--lambda must be paper or incremental`);
      if (o.lambdaNorm !== 'none' && o.lambdaNorm !== 'mean') throw new HarmonicaError('BAD_INPUT', `--lambda-norm must be none or mean`);
      if (o.lambdaSchedule !== 'soft' && o.lambdaSchedule !== 'hard') throw new HarmonicaError('BAD_INPUT', `--lambda-schedule must be soft or hard`);
      if (!(o.updates > 0) || !(o.window > 0)) throw new HarmonicaError('BAD_INPUT', '--updates and --window must be positive integers');
      if (o.maxCacheAge !== undefined && !(o.maxCacheAge >= 1)) throw new HarmonicaError('BAD_INPUT', `--max-cache-age must be an integer >= 1, got ${o.maxCacheAge}`);
      const engine = await Engine.open(o.model, { threads: o.threads });
      const d = engine.pkg.manifest.defaults;
      const trainer = await RouterTrainer.create(engine, {
        steps: o.steps ?? d.steps, sampler: o.sampler ?? d.sampler, cfg: o.cfg ?? d.cfg, beta: o.beta, lr: o.lr, updates: o.updates, batch: o.batch,
        tau: o.tau, tauTrain: o.tauTrain, lambdaMode: o.lambda, lambdaNorm: o.lambdaNorm, lambdaSchedule: o.lambdaSchedule,
        straightThrough: !!o.straightThrough, maxCacheAge: o.maxCacheAge, refresh: o.refresh, seed: o.seed, untilPlateau: !!o.untilPlateau, plateau: { window: o.window },
        checkpoint: o.checkpoint ?? `${o.out}.ckpt.json`, resume: !!o.resume, session: { threads: o.threads }, progress: true,
      });
      const artifact = o.method === 'ltc' ? await trainer.trainLtc() : await trainer.train();
      // Peak memory of the whole training process, for the HarmoniCa vs LTC comparison.
      artifact.training = { ...artifact.training, peakRssMb: Math.round(process.resourceUsage().maxRSS / 1024) };
      await trainer.release();
      await mkdir(dirname(o.out), { recursive: true });
      await writeFile(o.out, `${JSON.stringify(artifact)}\n`);
      const t = artifact.training!;
      printReport({ out: o.out, cur: artifact.eval?.cur, undecided: artifact.eval?.undecided, updates: t.updates, plateauAt: t.plateauAt, seconds: t.seconds }, !!o.json);
    });
}
