import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeSafetensors, type TensorSource } from '../tensor/safetensors.js';
import type { HostTensor } from '../tensor/tensor.js';
import { defaultCacheDir } from '../util/cache-dir.js';
import { HarmonicaError } from '../util/errors.js';
import { cachedSha256File } from '../util/file-hash.js';

export { sha256File } from '../util/file-hash.js';

export const MODEL_FORMAT = 'harmonica-model/1';

/** Bundled model packages live here; `--model NAME` looks here first. */
export const BUNDLED_MODELS_DIR = fileURLToPath(new URL('../../models/', import.meta.url));

/** manifest.json of a model package: architecture, config, defaults, provenance, file hashes. */
export interface ModelManifest {
  format: typeof MODEL_FORMAT;
  id: string;
  family: 'dit' | 'pixart';
  /** Key layout of weights.safetensors. */
  layout: 'diffusers' | 'original';
  config: Record<string, unknown>;
  /** Latent-space models decode with a VAE stored beside the weights; pixel-space models have none. */
  vae?: { config: Record<string, unknown>; weights: string };
  /** Text-conditional models: a T5 encoder (transformers config.json) and its tokenizer.json. */
  textEncoder?: { config: Record<string, unknown>; weights: string; tokenizer: string; maxLength: number };
  defaults: { sampler: string; steps: number; cfg: number };
  /** Human-readable names of the classes (class-conditional models). */
  classes?: string[];
  /** sha256 of every file of the package; the weights hash identifies the model to routers. */
  files: Record<string, string>;
  provenance?: Record<string, unknown>;
}

export interface ModelPackage {
  dir: string;
  manifest: ModelManifest;
  /** sha256 of weights.safetensors. */
  sha256: string;
}

export const WEIGHTS_FILE = 'weights.safetensors';

/** Resolves `--model`: a package directory, or the name of a bundled package. */
export function resolveModelDir(nameOrDir: string): string {
  if (existsSync(join(nameOrDir, 'manifest.json'))) return resolve(nameOrDir);
  const bundled = join(BUNDLED_MODELS_DIR, nameOrDir);
  if (/^[\w.-]+$/.test(nameOrDir) && existsSync(join(bundled, 'manifest.json'))) return bundled;
  throw new HarmonicaError('UNKNOWN_MODEL', `unknown model "${nameOrDir}": not a package directory (with manifest.json) nor a bundled model`);
}

/**
 * Opens a package and checks the manifest and every file's sha256 (hashes remembered in
 * `cacheDir` by path, size and mtime; null hashes every file).
 */
export async function openModelPackage(nameOrDir: string, cacheDir: string | null = defaultCacheDir()): Promise<ModelPackage> {
  const dir = resolveModelDir(nameOrDir);
  let manifest: ModelManifest;
  try {
    manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as ModelManifest;
  } catch (err) {
    throw new HarmonicaError('BAD_CONFIG', `${dir}/manifest.json: ${(err as Error).message}`);
  }
  if (manifest.format !== MODEL_FORMAT) throw new HarmonicaError('BAD_CONFIG', `${dir}/manifest.json: format must be "${MODEL_FORMAT}"`);
  if (!manifest.files?.[WEIGHTS_FILE]) throw new HarmonicaError('BAD_CONFIG', `${dir}/manifest.json: files must list ${WEIGHTS_FILE} with its sha256`);
  for (const [file, expected] of Object.entries(manifest.files)) {
    const actual = await cachedSha256File(join(dir, file), cacheDir).catch(() => 'missing');
    if (actual !== expected) throw new HarmonicaError('BAD_CONFIG', `${dir}/${file}: sha256 ${actual.slice(0, 12)} does not match the manifest (${expected.slice(0, 12)})`);
  }
  return { dir, manifest, sha256: manifest.files[WEIGHTS_FILE]! };
}

/**
 * Writes a package: the weights as safetensors, extra files (more safetensors, or JSON such as
 * tokenizer.json), then the manifest with every file's sha256 (remembered in the cache, so the
 * first open does not hash the files again).
 */
export async function writeModelPackage(
  dir: string,
  manifest: Omit<ModelManifest, 'format' | 'files'>,
  weights: Map<string, HostTensor | TensorSource>,
  extraFiles: Record<string, Map<string, HostTensor | TensorSource> | object> = {},
): Promise<ModelPackage> {
  await mkdir(dir, { recursive: true });
  const files: Record<string, string> = {};
  for (const [name, content] of [[WEIGHTS_FILE, weights] as const, ...Object.entries(extraFiles)]) {
    const path = join(dir, name);
    if (content instanceof Map) await writeSafetensors(path, content, { format: 'pt', model: manifest.id });
    else await writeFile(path, JSON.stringify(content));
    files[name] = await cachedSha256File(path, defaultCacheDir());
  }
  const full: ModelManifest = { format: MODEL_FORMAT, ...manifest, files };
  await writeFile(join(dir, 'manifest.json'), `${JSON.stringify(full, null, 2)}\n`);
  return { dir, manifest: full, sha256: files[WEIGHTS_FILE]! };
}
