import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parsePolicy } from '../cache/index.js';
import { Engine, type GenerateRequest, type ResolvedRequest } from '../engine/engine.js';
import { ClassConditioning, TextConditioning, type Conditioning } from '../engine/conditioning.js';
import { BUNDLED_MODELS_DIR, resolveModelDir, WEIGHTS_FILE, type ModelManifest } from '../engine/package.js';
import { createDenoiser, type Denoiser } from '../models/denoiser.js';
import { HarmonicaError } from '../util/errors.js';

/** The model `npm start` serves when none is named. */
export const DEFAULT_MODEL = 'dit-mnist';

export interface ModelEntry {
  id: string;
  dir: string;
  manifest: ModelManifest;
  /** sha256 of the weights: what routers are checked against. */
  sha256: string;
  denoiser: Denoiser;
  conditioning: 'class' | 'text';
  /** Pixel size of the output [C, H, W] (latent models decode 8x larger through their VAE). */
  imageShape: [number, number, number];
  routers: string[];
}

/**
 * The models a deployment serves, from their manifests only: enough to validate a request
 * exactly as the engine will (conditioning, limits, router against model hash, steps and
 * sublayers) without loading weights, so the API stays light and bad requests queue nothing.
 */
export class ModelCatalog {
  private constructor(private readonly entries: Map<string, ModelEntry>) {}

  static async load(models: string[]): Promise<ModelCatalog> {
    if (models.length === 0) throw new HarmonicaError('BAD_CONFIG', 'no models to serve');
    const entries = new Map<string, ModelEntry>();
    for (const name of models) {
      const entry = await loadEntry(name);
      entries.set(entry.id, entry);
    }
    return new ModelCatalog(entries);
  }

  list(): ModelEntry[] {
    return [...this.entries.values()];
  }

  /** The first model given: what requests without a model (OpenAI route) get. */
  get defaultId(): string {
    return this.list()[0]!.id;
  }

  get(id: string): ModelEntry {
    const entry = this.entries.get(id);
    if (!entry) throw new HarmonicaError('UNKNOWN_MODEL', `unknown model "${id}" (served: ${[...this.entries.keys()].join(', ')})`);
    return entry;
  }

  /** Fills defaults and throws the engine's HarmonicaError for anything the engine would reject. */
  validate(id: string, request: GenerateRequest): ResolvedRequest {
    const entry = this.get(id);
    // Engine.resolve reads only the manifest defaults and the conditioning's validate, so a
    // stand-in with just those runs the engine's own checks without loading weights.
    const standIn = { pkg: { manifest: entry.manifest }, conditioning: conditioningOf(entry) };
    const resolved = Engine.prototype.resolve.call(standIn as unknown as Engine, request);
    const policy = parsePolicy(resolved.cache);
    policy.start({ steps: resolved.steps, sampler: resolved.sampler, slots: entry.denoiser.slots, model: { id: entry.id, sha256: entry.sha256 }, modelDir: entry.dir });
    return resolved;
  }
}

function conditioningOf(entry: ModelEntry): Conditioning {
  if (entry.conditioning === 'class') return new ClassConditioning(entry.id, (entry.manifest.config as { numClasses: number }).numClasses);
  // TextConditioning.validate only needs the model id (prompt presence and length).
  const check = { modelId: entry.id };
  return { validate: (req) => TextConditioning.prototype.validate.call(check as TextConditioning, req), build: () => Promise.reject(new Error('metadata only')) };
}

async function loadEntry(name: string): Promise<ModelEntry> {
  const dir = resolveModelDir(name);
  const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as ModelManifest;
  const sha256 = manifest.files?.[WEIGHTS_FILE];
  if (!sha256) throw new HarmonicaError('BAD_CONFIG', `${dir}/manifest.json: files must list ${WEIGHTS_FILE}`);
  const denoiser = createDenoiser(manifest.family, manifest.config);
  const [c, h, w] = denoiser.latentShape;
  const scale = manifest.vae ? 8 : 1;
  const routersDir = join(dir, 'routers');
  const routers = existsSync(routersDir) ? (await readdir(routersDir)).filter((f) => f.endsWith('.json')).map((f) => f.slice(0, -5)).sort() : [];
  return {
    id: manifest.id, dir, manifest, sha256, denoiser, conditioning: denoiser.conditioning ?? 'class',
    imageShape: [manifest.vae ? 3 : c, h * scale, w * scale], routers,
  };
}

/** `dit-mnist` when it is bundled; otherwise an error that says how to name a model. */
export function defaultModels(): string[] {
  if (existsSync(join(BUNDLED_MODELS_DIR, DEFAULT_MODEL, 'manifest.json'))) return [DEFAULT_MODEL];
  throw new HarmonicaError(
    'UNKNOWN_MODEL',
    `the default model ${DEFAULT_MODEL} is not in ${BUNDLED_MODELS_DIR}; name one or more model packages: ` +
      '`harmonica serve --model <name|dir> [--model ...]`, or MODELS=<name|dir>,... for `npm start`',
  );
}
