import type { Command } from 'commander';
import { convertCheckpoint, DIT_PRESETS, type ConvertOptions } from '../engine/convert.js';
import { int } from './report.js';

export function registerConvert(program: Command): void {
  program
    .command('convert')
    .description('write a model package from a diffusers folder or an original DiT checkpoint (.safetensors)')
    .requiredOption('--from <path>', 'diffusers folder (transformer/, vae/) or original DiT state dict as .safetensors')
    .requiredOption('--out <dir>', 'package directory to write')
    .option('--id <name>', 'model id (default: the name of the --out folder)')
    .option('--vae <dir>', 'a diffusers AutoencoderKL folder (config.json + weights): the VAE original checkpoints lack, or instead of the folder\'s vae/')
    .option('--preset <name>', `original checkpoints: ${Object.keys(DIT_PRESETS).join(', ')}`)
    .option('--config <json>', 'original checkpoints: a DiT config as JSON (instead of --preset)', (v) => JSON.parse(v) as object)
    .option('--image-size <px>', 'original checkpoints: 256 or 512', int)
    .option('--diffusers-numerics', "use diffusers' timestep frequency shift and norm eps instead of the original DiT's")
    .action(async (o: ConvertOptions) => {
      const pkg = await convertCheckpoint(o);
      const m = pkg.manifest;
      process.stdout.write(`wrote ${pkg.dir} (${m.id}: ${m.family}, ${m.layout} layout, sha256 ${pkg.sha256.slice(0, 12)})\n`);
      const channels = (m.config as { inChannels: number }).inChannels;
      if (!m.vae && channels !== 1 && channels !== 3) process.stdout.write(`no VAE: forward works, generate needs one for these ${channels}-channel latents (convert again with --vae DIR)\n`);
    });
}
