import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';
import { readSafetensors, writeSafetensors } from '../../src/tensor/safetensors.js';
import { tensor } from '../../src/tensor/tensor.js';
import { randomTensor } from '../../src/models/init.js';
import { Rng } from '../../src/tensor/rng.js';
import { randomDitCheckpoints, TINY_DIT } from '../helpers/dit-checkpoint.js';
import { tinyDitPackage } from '../helpers/packages.js';
import { MICRO_DIT_RUN } from '../helpers/train-configs.js';

const exec = promisify(execFile);
const harmonica = (...args: string[]) => exec('node', ['bin/harmonica.js', ...args], { env: { ...process.env, LOG_LEVEL: 'warn' } });

let dir: string;
let pkgDir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cli-'));
  pkgDir = (await tinyDitPackage()).dir;
});

describe('harmonica generate', () => {
  it('writes a PNG and prints the report as JSON', async () => {
    const out = join(dir, 'seven.png');
    const { stdout } = await harmonica('generate', '--model', pkgDir, '--class', '7', '--steps', '4', '--cache', 'fora:2', '--seed', '3', '--out', out, '--json');
    const report = JSON.parse(stdout) as Record<string, unknown>;
    expect(report).toMatchObject({ steps: 4, computedSlots: 8, reusedSlots: 8, cur: 0.5, images: [out] });
    expect(report.stepsMs).toHaveLength(4);
    expect(report.totalMs).toBeGreaterThan(0);
    expect(report.macSpeedup).toBeGreaterThan(1.5);
    // The start: package open, sessions, and from the process's start to the first step.
    expect(report).toMatchObject({ openMs: expect.any(Number), sessionsMs: expect.any(Number), compiledCache: expect.stringMatching(/^(hit|miss)$/) });
    expect(report.peakRssMb).toBeGreaterThan(20);
    expect(report.startMs).toBeGreaterThan(report.sessionsMs as number);
    const meta = await sharp(await readFile(out)).metadata();
    expect(meta).toMatchObject({ format: 'png', width: 8, height: 8 });
  });

  it('fails with a clear message for an unknown model or class', async () => {
    await expect(harmonica('generate', '--model', 'no-such-model', '--class', '1')).rejects.toMatchObject({ stderr: expect.stringMatching(/unknown model "no-such-model"/) });
    await expect(harmonica('generate', '--model', pkgDir, '--class', '12')).rejects.toMatchObject({ stderr: expect.stringMatching(/unknown class 12.*\[BAD_INPUT\]/) });
  });
});

describe('harmonica forward and convert', () => {
  it('convert writes the same model from a diffusers folder and from an original checkpoint; forward agrees', async () => {
    const { original, diffusers } = randomDitCheckpoints(TINY_DIT, 4);
    const folder = join(dir, 'diffusers-dit');
    await mkdir(join(folder, 'transformer'), { recursive: true });
    await writeFile(join(folder, 'transformer', 'config.json'), JSON.stringify({
      _class_name: 'DiTTransformer2DModel', sample_size: 8, patch_size: 2, in_channels: 4, out_channels: 8, num_layers: 2,
      num_attention_heads: 4, attention_head_dim: 8, num_embeds_ada_norm: 10, norm_eps: 1e-5,
    }));
    await writeSafetensors(join(folder, 'transformer', 'diffusion_pytorch_model.safetensors'), diffusers);
    await writeSafetensors(join(dir, 'original.safetensors'), original);
    await harmonica('convert', '--from', folder, '--out', join(dir, 'pkg-diffusers'), '--id', 'tiny-d');
    const cfg = JSON.stringify({ depth: 2, hidden: 32, heads: 4, patchSize: 2, numClasses: 10 });
    await harmonica('convert', '--from', join(dir, 'original.safetensors'), '--out', join(dir, 'pkg-original'), '--id', 'tiny-o', '--config', cfg, '--image-size', '64');

    await writeSafetensors(join(dir, 'in.safetensors'), {
      x: randomTensor([2, 4, 8, 8], new Rng(2)), t: tensor('int64', [2], [999, 10]), y: tensor('int64', [2], [1, 10]),
    });
    for (const p of ['pkg-diffusers', 'pkg-original']) {
      await harmonica('forward', '--model', join(dir, p), '--inputs', join(dir, 'in.safetensors'), '--out', join(dir, `${p}.out.safetensors`));
    }
    const a = (await readSafetensors(join(dir, 'pkg-diffusers.out.safetensors'))).get('out')!;
    const b = (await readSafetensors(join(dir, 'pkg-original.out.safetensors'))).get('out')!;
    expect(a.shape).toEqual([2, 8, 8, 8]);
    const da = a.data as Float32Array;
    const db = b.data as Float32Array;
    expect(Math.max(...da.map((v, i) => Math.abs(v - db[i]!)))).toBeLessThan(1e-5);
  });

  it('convert refuses an unsupported class and a missing preset', async () => {
    const folder = join(dir, 'unet');
    await mkdir(folder, { recursive: true });
    await writeFile(join(folder, 'config.json'), JSON.stringify({ _class_name: 'UNet2DConditionModel' }));
    await expect(harmonica('convert', '--from', folder, '--out', join(dir, 'x'), '--id', 'x')).rejects.toMatchObject({ stderr: expect.stringMatching(/unsupported model class "UNet2DConditionModel"/) });
    await expect(harmonica('convert', '--from', join(dir, 'original.safetensors'), '--out', join(dir, 'y'), '--id', 'y')).rejects.toMatchObject({ stderr: expect.stringMatching(/needs --preset/) });
  });
});

describe('harmonica train recipe', () => {
  it('trains a recipe\'s runs in one command and prints each stage\'s steps and seconds; a second call without --resume is refused', async () => {
    const micro = { ...MICRO_DIT_RUN, train: { ...MICRO_DIT_RUN.train, steps: 3 } };
    await writeFile(join(dir, 'micro.json'), JSON.stringify(micro));
    await writeFile(join(dir, 'micro.recipe.json'), JSON.stringify({ id: 'micro-dit', stages: [{ config: 'micro.json' }, { config: 'micro.json' }] }));
    const args = ['train', 'recipe', '--recipe', join(dir, 'micro.recipe.json'), '--out', join(dir, 'recipe-run'), '--export', join(dir, 'recipe-pkg'), '--threads', '1'];
    const report = JSON.parse((await harmonica(...args)).stdout) as { stages: { steps: number }[]; steps: number; wallSeconds: number };
    expect(report.stages.map((s) => s.steps)).toEqual([3, 3]);
    expect(report.steps).toBe(6);
    expect(report.wallSeconds).toBeGreaterThan(0);
    const manifest = JSON.parse(await readFile(join(dir, 'recipe-pkg', 'manifest.json'), 'utf8'));
    expect(manifest.provenance).toMatchObject({ steps: 3, initFrom: { provenance: { steps: 3 } } });
    await expect(harmonica(...args)).rejects.toMatchObject({ stderr: expect.stringMatching(/already holds a recipe run: pass --resume.*\[BAD_CONFIG\]/) });
  });
});
