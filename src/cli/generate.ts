import type { Command } from 'commander';
import { writeFile } from 'node:fs/promises';
import { extname } from 'node:path';
import { Engine, type StepEvent } from '../engine/engine.js';
import { parsePrecision, PRECISIONS, type Precision } from '../models/precision.js';
import { encodeImage } from '../engine/image.js';
import { Progress } from '../util/progress.js';
import { int, printReport } from './report.js';

interface GenerateOptions {
  model: string;
  class?: number;
  prompt?: string;
  negative?: string;
  steps?: number;
  sampler?: string;
  cfg?: number;
  cache: string;
  seed: number;
  n: number;
  out: string;
  json?: boolean;
  threads?: number;
  device: 'cpu' | 'cuda';
  precision?: Precision;
  textEncoderPrecision?: Precision;
}

/** `out.png` for one image, `out-0.png`, `out-1.png`, ... for several. */
export function imagePaths(out: string, n: number): string[] {
  if (n === 1) return [out];
  const ext = extname(out) || '.png';
  const stem = out.slice(0, out.length - extname(out).length);
  return Array.from({ length: n }, (_, i) => `${stem}-${i}${ext}`);
}

export function registerGenerate(program: Command): void {
  program
    .command('generate')
    .description('generate images with a model package and a cache policy')
    .requiredOption('--model <package>', 'bundled model name or package directory')
    .option('--class <n>', 'class label (class-conditional models)', int)
    .option('--prompt <text>', 'caption (text-conditional models)')
    .option('--negative <text>', 'negative prompt for the guidance rows (text models)')
    .option('--steps <n>', 'denoising steps (default: the model\'s)', int)
    .option('--sampler <name>', 'ddim | dpmpp (default: the model\'s)')
    .option('--cfg <scale>', 'classifier-free guidance scale (1 = off)', Number)
    .option('--cache <policy>', 'none | fora:N | delta-dit:b,k[,N] | teacache:T | first-block:T | router:<name or file>[@tau] (a name picks one of the package\'s routers/)', 'none')
    .option('--seed <n>', 'random seed', int, 0)
    .option('--n <n>', 'images', int, 1)
    .option('--out <file>', 'PNG file (several images get -0, -1, ...)', 'out.png')
    .option('--threads <n>', 'ORT intra-op threads', int)
    .option('--device <device>', 'cpu | cuda', 'cpu')
    .option('--precision <p>', `transformer weights: ${PRECISIONS.join(' | ')} (fp16 needs cuda)`, (v) => parsePrecision(v, '--precision'))
    .option('--text-encoder-precision <p>', `T5 encoder weights: ${PRECISIONS.join(' | ')}`, (v) => parsePrecision(v, '--text-encoder-precision'))
    .option('--json', 'print the report as one JSON object')
    .action(async (o: GenerateOptions) => {
      const precision = { transformer: o.precision, textEncoder: o.textEncoderPrecision };
      const engine = await Engine.open(o.model, { threads: o.threads, device: o.device, precision });
      const req = engine.resolve({ classLabel: o.class, prompt: o.prompt, negativePrompt: o.negative, steps: o.steps, sampler: o.sampler, cfg: o.cfg, cache: o.cache, seed: o.seed, n: o.n });
      const progress = new Progress(`generate ${engine.id}`, req.steps, 'steps');
      // From the process's start to the first step's start: Node, the package, the sessions.
      let startMs = 0;
      const onStep = (e: StepEvent) => {
        if (e.step === 1) startMs = performance.now() - e.ms;
        progress.tick(1, { ms: e.ms, reused: e.reused });
      };
      const { images, report } = await engine.generate(req, { onStep });
      const t0 = performance.now();
      const paths = imagePaths(o.out, images.length);
      await Promise.all(images.map(async (img, i) => writeFile(paths[i]!, await encodeImage(img))));
      const { decisions: _decisions, ...summary } = report;
      printReport({ ...summary, startMs, encodeMs: performance.now() - t0, images: paths }, !!o.json);
    });
}
