import { mkdtemp, readdir, readFile, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import { writeModelPackage } from '../../src/engine/package.js';
import { initDitWeights } from '../../src/models/dit-init.js';
import type { ComponentPrecision } from '../../src/models/precision.js';
import { initVaeWeights, vaeConfigToDiffusers } from '../../src/models/vae-init.js';
import type { VaeConfig } from '../../src/models/vae.js';
import { cachedSha256File, sha256File } from '../../src/util/file-hash.js';
import { TINY_DIT } from '../helpers/dit-checkpoint.js';
import { tinyDitPackage, tinyPixArtPackage } from '../helpers/packages.js';

const TINY_VAE: VaeConfig = { latentChannels: 4, outChannels: 3, blockOutChannels: [8, 16], layersPerBlock: 1, normNumGroups: 4, scalingFactor: 0.18215, midBlockAddAttention: true };

/** A latent DiT (4 channels), with or without a VAE to decode its latents. */
async function latentDitPackage(withVae: boolean) {
  const dir = await mkdtemp(join(tmpdir(), 'latent-dit-'));
  return writeModelPackage(dir, {
    id: 'latent-dit', family: 'dit', layout: 'diffusers', config: { ...TINY_DIT }, defaults: { sampler: 'ddim', steps: 3, cfg: 1.5 },
    ...(withVae ? { vae: { config: vaeConfigToDiffusers(TINY_VAE), weights: 'vae.safetensors' } } : {}),
  }, initDitWeights(TINY_DIT, 4, 0.8), withVae ? { 'vae.safetensors': initVaeWeights(TINY_VAE, 5) } : {});
}

const graphFiles = async (cacheDir: string) => (await readdir(join(cacheDir, 'graphs'), { recursive: true })).map(String).filter((f) => f.includes('.onnx')).sort();

describe('compiled-model cache', () => {
  it('a second open loads the step and VAE graphs from disk and generates the same bytes', async () => {
    const pkg = await latentDitPackage(true);
    const cacheDir = await mkdtemp(join(tmpdir(), 'harmonica-cache-'));
    const request = { classLabel: 3, seed: 7, steps: 3 };
    const first = await (await Engine.open(pkg.dir, { threads: 1, cacheDir })).generate(request);
    expect(first.report.compiledCache).toBe('miss');
    expect(first.images[0]!.shape).toEqual([3, 16, 16]);
    // One entry for the step graph (batch 2 with guidance), one for the decoder.
    expect((await graphFiles(cacheDir)).filter((f) => f.endsWith('model.onnx'))).toHaveLength(2);
    const second = await (await Engine.open(pkg.dir, { threads: 1, cacheDir })).generate(request);
    expect(second.report.compiledCache).toBe('hit');
    expect(Buffer.from((second.images[0]!.data as Float32Array).buffer).equals(Buffer.from((first.images[0]!.data as Float32Array).buffer))).toBe(true);
    expect(second.report).toMatchObject({ openMs: expect.any(Number), sessionsMs: expect.any(Number), peakRssMb: expect.any(Number) });
    expect(second.report.peakRssMb).toBeGreaterThan(10);
    // Other weights are another model: compiled again.
    const other = await tinyDitPackage(9, 'other');
    expect((await (await Engine.open(other.dir, { threads: 1, cacheDir })).generate({ classLabel: 1, steps: 2 })).report.compiledCache).toBe('miss');
  });

  it('keeps weights past externalDataBytes in a file ORT maps; outputs equal the in-memory session', async () => {
    const pkg = await tinyDitPackage(3, 'mapped');
    const cacheDir = await mkdtemp(join(tmpdir(), 'harmonica-cache-'));
    const request = { classLabel: 2, seed: 1, steps: 3, cache: 'fora:2' };
    const mapped = await (await Engine.open(pkg.dir, { threads: 1, cacheDir, externalDataBytes: 0 })).generate(request);
    expect((await graphFiles(cacheDir)).some((f) => f.endsWith('model.onnx.data'))).toBe(true);
    const reopened = await (await Engine.open(pkg.dir, { threads: 1, cacheDir, externalDataBytes: 0 })).generate(request);
    const inMemory = await (await Engine.open(pkg.dir, { threads: 1, cacheDir: null })).generate(request);
    expect(inMemory.report.compiledCache).toBe('off');
    for (const r of [mapped, reopened]) expect(Buffer.from((r.images[0]!.data as Float32Array).buffer).equals(Buffer.from((inMemory.images[0]!.data as Float32Array).buffer))).toBe(true);
  });
});

describe('compiled-model cache and precision', () => {
  const bytes = (r: { images: { data: unknown }[] }) => Buffer.from((r.images[0]!.data as Float32Array).buffer);

  it('keys each precision apart (step graph and T5 encoder); a quantized graph through mapped external data equals the in-memory one', async () => {
    const pkg = await tinyPixArtPackage(5, 'precision-keys');
    const cacheDir = await mkdtemp(join(tmpdir(), 'harmonica-cache-'));
    const request = { prompt: 'a digit', seed: 3, steps: 2 };
    const open = (precision: ComponentPrecision, more: object = {}) => Engine.open(pkg.dir, { threads: 1, cacheDir, externalDataBytes: 0, precision, ...more });
    const entries = async () => (await graphFiles(cacheDir)).filter((f) => f.endsWith('model.onnx')).length;
    const fp32 = await (await open({})).generate(request);
    expect(fp32.report.compiledCache).toBe('miss');
    expect(await entries()).toBe(2); // the step graph and the T5 encoder
    const int8 = await (await open({ transformer: 'int8' })).generate(request);
    expect(int8.report).toMatchObject({ compiledCache: 'miss', precision: { transformer: 'int8', textEncoder: 'fp32' } });
    expect(bytes(int8).equals(bytes(fp32))).toBe(false);
    expect(await entries()).toBe(3); // the fp32 encoder served again
    const again = await (await open({ transformer: 'int8' })).generate(request);
    expect(again.report.compiledCache).toBe('hit');
    expect(bytes(again).equals(bytes(int8))).toBe(true);
    const inMemory = await (await open({ transformer: 'int8' }, { cacheDir: null })).generate(request);
    expect(bytes(inMemory).equals(bytes(int8))).toBe(true);
    const textInt8 = await (await open({ textEncoder: 'int4' })).generate(request);
    expect(textInt8.report.compiledCache).toBe('hit');
    expect(await entries()).toBe(4);
    expect(bytes(textInt8).equals(bytes(fp32))).toBe(false);
  });
});

describe('compiled-model cache, damaged', () => {
  it('a truncated entry is compiled again, and the output is unchanged', async () => {
    const pkg = await tinyDitPackage(3, 'damaged');
    const cacheDir = await mkdtemp(join(tmpdir(), 'harmonica-cache-'));
    const request = { classLabel: 2, seed: 1, steps: 2 };
    const first = await (await Engine.open(pkg.dir, { threads: 1, cacheDir })).generate(request);
    const [model] = (await graphFiles(cacheDir)).filter((f) => f.endsWith('model.onnx'));
    await writeFile(join(cacheDir, 'graphs', model!), 'not a model');
    const again = await (await Engine.open(pkg.dir, { threads: 1, cacheDir })).generate(request);
    expect(again.report.compiledCache).toBe('miss');
    expect(Array.from(again.images[0]!.data as Float32Array)).toEqual(Array.from(first.images[0]!.data as Float32Array));
    expect((await (await Engine.open(pkg.dir, { threads: 1, cacheDir })).generate(request)).report.compiledCache).toBe('hit');
  });
});

describe('compiled-model cache, unwritable', () => {
  it('a cache folder that cannot be created costs the speed of the next start, not this one', async () => {
    const pkg = await tinyDitPackage(3, 'unwritable');
    const blocker = join(await mkdtemp(join(tmpdir(), 'blocked-')), 'a-file');
    await writeFile(blocker, '');
    const cacheDir = join(blocker, 'cache'); // below a file: mkdir fails (even as root)
    const r = await (await Engine.open(pkg.dir, { threads: 1, cacheDir })).generate({ classLabel: 2, seed: 1, steps: 2 });
    expect(r.report.compiledCache).toBe('off');
    const plain = await (await Engine.open(pkg.dir, { threads: 1, cacheDir: null })).generate({ classLabel: 2, seed: 1, steps: 2 });
    expect(Array.from(r.images[0]!.data as Float32Array)).toEqual(Array.from(plain.images[0]!.data as Float32Array));
  });
});

describe('file hashes remembered by path, size and mtime', () => {
  it('reuses a hash while size and mtime match and hashes again when the file changes', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hashes-'));
    const file = join(dir, 'w.bin');
    const mtime = new Date('2026-01-01T00:00:00Z');
    await writeFile(file, 'aaaa');
    await utimes(file, mtime, mtime);
    const original = await cachedSha256File(file, dir);
    expect(original).toBe(await sha256File(file));
    // Same size and mtime: the remembered hash, without reading the file (its bytes changed).
    await writeFile(file, 'bbbb');
    await utimes(file, mtime, mtime);
    expect(await cachedSha256File(file, dir)).toBe(original);
    await utimes(file, new Date(mtime.getTime() + 5000), new Date(mtime.getTime() + 5000));
    expect(await cachedSha256File(file, dir)).toBe(await sha256File(file));
    expect(JSON.parse(await readFile(join(dir, 'file-hashes.json'), 'utf8'))).toHaveProperty([file]);
  });

  it('a package file changed after it was hashed is refused at open', async () => {
    const pkg = await tinyDitPackage(3, 'changed');
    const cacheDir = await mkdtemp(join(tmpdir(), 'harmonica-cache-'));
    await Engine.open(pkg.dir, { threads: 1, cacheDir });
    const weights = join(pkg.dir, 'weights.safetensors');
    const bytes = await readFile(weights);
    bytes[bytes.length - 1]! ^= 1;
    await writeFile(weights, bytes);
    await expect(Engine.open(pkg.dir, { threads: 1, cacheDir })).rejects.toMatchObject({ code: 'BAD_CONFIG', message: expect.stringMatching(/weights.safetensors: sha256 .* does not match the manifest/) });
  });
});

describe('generate refuses up front', () => {
  it('a latent model without a VAE, before any step, naming --vae', async () => {
    const engine = await Engine.open((await latentDitPackage(false)).dir, { threads: 1 });
    const steps: number[] = [];
    await expect(engine.generate({ classLabel: 1, steps: 3 }, { onStep: (e) => steps.push(e.step) })).rejects.toMatchObject({
      code: 'BAD_CONFIG', message: expect.stringMatching(/4-channel latents .* no VAE .* --vae DIR/),
    });
    expect(steps).toEqual([]);
  });

  it('reports cpu when CUDA was asked for and fell back', async () => {
    const engine = await Engine.open((await tinyDitPackage()).dir, { threads: 1, device: 'cuda' });
    const r = await engine.generate({ classLabel: 1, steps: 2 });
    expect(r.report.machine).toMatch(/, cpu$/);
  });
});
