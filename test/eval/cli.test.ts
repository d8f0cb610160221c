import { Command } from 'commander';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { registerClassifierTraining, registerEval } from '../../src/cli/eval.js';
import { registerTrain } from '../../src/cli/train.js';
import { tinyDitPackage } from '../helpers/packages.js';
import { tinyMnistDitPackage } from './helpers.js';

/** Runs a fresh program with the commands wired as main.ts wires them; returns stdout. */
async function run(...args: string[]): Promise<string> {
  const program = new Command('harmonica').exitOverride();
  registerTrain(program);
  registerClassifierTraining(program);
  registerEval(program);
  const chunks: string[] = [];
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    chunks.push(String(chunk));
    return true;
  });
  try {
    await program.parseAsync(['node', 'harmonica', ...args]);
  } finally {
    spy.mockRestore();
  }
  return chunks.join('');
}

describe('harmonica train classifier / eval', () => {
  it('trains a classifier into --out, then evaluates a model with it', async () => {
    const out = await mkdtemp(join(tmpdir(), 'cli-classifier-'));
    const trained = JSON.parse(await run('train', 'classifier', '--out', out, '--epochs', '1', '--seed', '2', '--threads', '1', '--json')) as Record<string, unknown>;
    expect(trained).toMatchObject({ out, epochs: 1 });
    expect(trained.heldOutAccuracy).toBeGreaterThan(0.5);
    const manifest = JSON.parse(await readFile(join(out, 'manifest.json'), 'utf8')) as { files: Record<string, string> };
    expect(Object.values(manifest.files)).toEqual([trained.sha256]);

    const model = await tinyMnistDitPackage();
    const result = JSON.parse(await run('eval', '--model', model, '--steps', '2', '--n', '10', '--batch', '5', '--cache', 'fora:2', '--classifier', out, '--threads', '1', '--json')) as Record<string, unknown>;
    expect(result).toMatchObject({ model: 'tiny-mnist-dit', steps: 2, sampler: 'ddim', cfg: 1, cache: 'fora:2', n: 10, seed: 0, cur: 0.5 });
    for (const key of ['accuracy', 'fid', 'fidFloor', 'isScore', 'psnr', 'ssim', 'seconds']) expect(typeof result[key]).toBe('number');

    // The 8x8 test model's images are not digits the classifier can read: a clear refusal.
    const tiny = (await tinyDitPackage()).dir;
    await expect(run('eval', '--model', tiny, '--n', '10', '--classifier', out, '--threads', '1', '--json')).rejects.toThrow(/1x32x32/);
  });

  it('rejects a bad --n before generating anything', async () => {
    const tiny = (await tinyDitPackage()).dir;
    await expect(run('eval', '--model', tiny, '--n', 'x')).rejects.toThrow(/integer/);
  });
});
