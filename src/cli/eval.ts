import type { Command } from 'commander';
import { CLASSIFIER_DEFAULTS, CLASSIFIER_DIR, saveClassifier, trainClassifier } from '../eval/classifier.js';
import { DEFAULT_EVAL_BATCH, evaluate } from '../eval/run.js';
import { int, printReport } from './report.js';

interface EvalCliOptions {
  model: string;
  steps?: number;
  sampler?: string;
  cfg?: number;
  cache: string;
  n: number;
  seed: number;
  batch: number;
  classifier?: string;
  threads?: number;
  device: 'cpu' | 'cuda';
  json?: boolean;
}

/** `harmonica eval`: sample quality (and cache fidelity) of an MNIST model, class- or text-conditional. */
export function registerEval(program: Command): void {
  program
    .command('eval')
    .description('evaluate an MNIST model: digit accuracy, FID (with its real-vs-real floor), IS, for text models also position and size accuracy against the caption; with --cache also PSNR/SSIM against uncached samples and the cache usage ratio')
    .requiredOption('--model <package>', 'bundled model name or package directory')
    .option('--steps <n>', 'denoising steps (default: the model\'s)', int)
    .option('--sampler <name>', 'ddim | dpmpp (default: the model\'s)')
    .option('--cfg <scale>', 'classifier-free guidance scale (1 = off)', Number)
    .option('--cache <policy>', 'none | fora:N | delta-dit:b,k[,N] | teacache:T | first-block:T | router:<name or file>[@tau]', 'none')
    .option('--n <n>', 'samples (classes round-robin; text models: captions of those classes at every size and place)', int, 1000)
    .option('--seed <n>', 'seed from which the request seeds derive', int, 0)
    .option('--batch <n>', 'images per generation request', int, DEFAULT_EVAL_BATCH)
    .option('--classifier <dir>', 'classifier directory (default: the bundled one)')
    .option('--threads <n>', 'ORT intra-op threads', int)
    .option('--device <device>', 'cpu | cuda', 'cpu')
    .option('--json', 'print the result as one JSON object')
    .action(async (o: EvalCliOptions) => {
      const result = await evaluate({
        model: o.model, steps: o.steps, sampler: o.sampler, cfg: o.cfg, cache: o.cache, n: o.n, seed: o.seed, batch: o.batch,
        classifier: o.classifier, threads: o.threads, device: o.device,
      });
      printReport({ ...result }, !!o.json);
    });
}

interface ClassifierCliOptions {
  out: string;
  seed: number;
  epochs: number;
  batch: number;
  lr: number;
  threads?: number;
  json?: boolean;
}

/**
 * `harmonica train classifier`: trains the evaluation classifier and writes it to --out.
 * Adds a subcommand to the existing `train` command, so call it after registerTrain (a
 * second `program.command('train')` would clash with that one).
 */
export function registerClassifierTraining(program: Command): void {
  const train = program.commands.find((c) => c.name() === 'train') ?? program.command('train').description('train models');
  train
    .command('classifier')
    .description('train the MNIST digit classifier used by `harmonica eval` (AdamW on the train split; writes weights.safetensors and manifest.json)')
    .option('--out <dir>', 'output directory', CLASSIFIER_DIR)
    .option('--seed <n>', 'seed of the initial weights, batch order and augmentation', int, CLASSIFIER_DEFAULTS.seed)
    .option('--epochs <n>', 'epochs', int, CLASSIFIER_DEFAULTS.epochs)
    .option('--batch <n>', 'batch size', int, CLASSIFIER_DEFAULTS.batch)
    .option('--lr <lr>', 'peak learning rate', Number, CLASSIFIER_DEFAULTS.lr)
    .option('--threads <n>', 'ORT intra-op threads', int)
    .option('--json', 'print the result as one JSON object')
    .action(async (o: ClassifierCliOptions) => {
      const trained = await trainClassifier({ seed: o.seed, epochs: o.epochs, batch: o.batch, lr: o.lr, threads: o.threads, progress: true });
      const saved = await saveClassifier(o.out, trained, o.threads);
      printReport({
        out: o.out, heldOutAccuracy: saved.heldOutAccuracy, heldOutAccuracyFloat32: trained.heldOutAccuracy,
        epochs: trained.options.epochs, seconds: Number(trained.seconds.toFixed(1)), sha256: saved.sha256,
      }, !!o.json);
    });
}
