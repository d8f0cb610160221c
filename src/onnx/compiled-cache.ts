import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ort from 'onnxruntime-node';
import { log as defaultLog } from '../util/log.js';
import type { Graph } from './ir.js';
import { DEFAULT_EXTERNAL_DATA_BYTES, Session, type SessionConfig } from './session.js';
import { initializerBytes, saveModel } from './writer.js';

const SOURCE_DIR = fileURLToPath(new URL('../', import.meta.url));

let buildId: string | undefined;

/**
 * Identifies the code that builds graphs: a hash of every source file and the ORT version,
 * so a compiled model is never served to a build of harmonica that would build another graph.
 */
export function graphBuildId(): string {
  if (buildId) return buildId;
  const hash = createHash('sha256').update(`onnxruntime-node ${ort.env.versions.node}\n`);
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (/\.[cm]?[jt]s$/.test(entry.name)) hash.update(`${path.slice(SOURCE_DIR.length)}\n`).update(readFileSync(path));
    }
  };
  walk(SOURCE_DIR);
  return (buildId = hash.digest('hex'));
}

interface CompiledMeta {
  key: Record<string, unknown>;
  externalData: boolean;
  bytes: number;
}

export type CacheOutcome = 'hit' | 'miss' | 'off';

/** Models with more weights than this keep them as external data in the cache (mapped, not copied). */
export const EXTERNAL_IN_CACHE_BYTES = 256 << 20;

/**
 * Compiled models on disk: `dir`/graphs/<hash of key and build id>/model.onnx (+ .data). The
 * key names what the graph is built from (weights hashes, config, batch, options), so a second
 * open of the same model skips building and serializing the graph and ORT maps its weights
 * from the file. Entries are written under a temporary name and renamed into place whole.
 */
export class CompiledCache {
  constructor(readonly dir: string) {}

  private entry(key: Record<string, unknown>): string {
    const digest = createHash('sha256').update(graphBuildId()).update(JSON.stringify(key)).digest('hex');
    return join(this.dir, 'graphs', digest.slice(0, 32));
  }

  async session(key: Record<string, unknown>, build: () => Graph, config: SessionConfig = {}): Promise<{ session: Session; cache: CacheOutcome }> {
    const dir = this.entry(key);
    const model = join(dir, 'model.onnx');
    const metaPath = join(dir, 'meta.json');
    if (existsSync(metaPath)) {
      try {
        const meta = JSON.parse(await readFile(metaPath, 'utf8')) as CompiledMeta;
        return { session: await Session.open(model, config, meta.externalData), cache: 'hit' };
      } catch (err) {
        // A damaged entry (e.g. a file truncated by a full disk) is compiled again.
        (config.logger ?? defaultLog).warn({ err: (err as Error).message, entry: dir }, 'compiled model unreadable, compiling it again');
        await rm(dir, { recursive: true, force: true });
      }
    }
    const graph = build();
    let externalData: boolean;
    try {
      externalData = await this.write(dir, key, graph, config);
    } catch (err) {
      // An unwritable or full cache costs the next start its speed, never this one its session.
      (config.logger ?? defaultLog).warn({ err: (err as Error).message, dir: this.dir }, 'cannot write the compiled-model cache, opening the graph from memory');
      return { session: await Session.create(graph, config), cache: 'off' };
    }
    return { session: await Session.open(model, config, externalData), cache: 'miss' };
  }

  /** Writes an entry under a temporary name and renames it into place whole; returns whether its weights are external. */
  private async write(dir: string, key: Record<string, unknown>, graph: Graph, config: SessionConfig): Promise<boolean> {
    const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
    try {
      await mkdir(tmp, { recursive: true });
      // Every model past the limit, and any sizeable one, keeps its weights in a file ORT can map.
      const bytes = initializerBytes(graph);
      const threshold = Math.min(config.externalDataBytes ?? DEFAULT_EXTERNAL_DATA_BYTES, EXTERNAL_IN_CACHE_BYTES);
      const { externalData } = await saveModel(graph, join(tmp, 'model.onnx'), threshold);
      await writeFile(join(tmp, 'meta.json'), JSON.stringify({ key, externalData, bytes } satisfies CompiledMeta));
      await rename(tmp, dir).catch(async (err: NodeJS.ErrnoException) => {
        // Another process compiled the same entry meanwhile: use theirs.
        if (!existsSync(join(dir, 'meta.json'))) throw err;
        await rm(tmp, { recursive: true, force: true });
      });
      return externalData;
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
      throw err;
    }
  }
}

/**
 * Where a component's graphs may come from on disk: `key` names the component (weights
 * hashes, config); each graph adds its kind and options (batch, probes...).
 */
export interface CompiledModel {
  cache: CompiledCache | null;
  key: Record<string, unknown>;
}

/** A session through the cache when there is one, else built in memory. */
export async function openGraph(cache: CompiledCache | null, key: Record<string, unknown>, build: () => Graph, config: SessionConfig = {}): Promise<{ session: Session; cache: CacheOutcome }> {
  if (cache) return cache.session(key, build, config);
  return { session: await Session.create(build(), config), cache: 'off' };
}
