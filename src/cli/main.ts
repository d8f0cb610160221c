import { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { HarmonicaError } from '../util/errors.js';
import { registerBench } from './bench.js';
import { registerCalibrate } from './calibrate.js';
import { registerCompare } from './compare.js';
import { registerConvert } from './convert.js';
import { registerForward } from './forward.js';
import { registerClassifierTraining, registerEval } from './eval.js';
import { registerGenerate } from './generate.js';
import { registerGrid } from './grid.js';
import { registerServe } from './serve.js';
import { registerTrain } from './train.js';
import { registerTrainRouter } from './train-router.js';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

const program = new Command('harmonica')
  .description('Learned feature caching (HarmoniCa) for Diffusion Transformers on onnxruntime-node')
  .version(pkg.version);

registerGenerate(program);
registerCompare(program);
registerForward(program);
registerConvert(program);
registerBench(program);
registerTrain(program);
registerClassifierTraining(program);
registerEval(program);
registerGrid(program);
registerTrainRouter(program);
registerCalibrate(program);
registerServe(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  const code = err instanceof HarmonicaError ? ` [${err.code}]` : '';
  process.stderr.write(`harmonica: ${err instanceof Error ? err.message : String(err)}${code}\n`);
  process.exit(1);
});
