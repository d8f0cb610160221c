import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import type { Redis } from 'ioredis';
import type { ModelPackage } from '../../src/engine/package.js';
import { buildApp } from '../../src/service/app.js';
import { ModelCatalog } from '../../src/service/catalog.js';
import type { ServiceConfig } from '../../src/service/config.js';
import { createMetrics, type Metrics } from '../../src/service/metrics.js';
import { connectRedis, deletePrefix } from '../../src/service/redis.js';
import { EnginePool, type EngineSource } from '../../workers/engines.js';
import { startWorker, type HarmonicaWorker, type WorkerOptions } from '../../workers/worker.js';
import { tinyDitPackage } from '../helpers/packages.js';

/** An engine whose generate first sleeps `msPerStep` per step (abortable), then runs for real. */
export function slowEngines(source: EngineSource, msPerStep: number): EngineSource {
  return {
    async get(model) {
      const engine = await source.get(model);
      return {
        async generate(request, options = {}) {
          for (let i = 0; i < (request.steps ?? 1); i++) await sleep(msPerStep, undefined, { signal: options.signal });
          return engine.generate(request, options);
        },
      };
    },
  };
}

export interface Stack {
  app: FastifyInstance;
  redis: Redis;
  prefix: string;
  pkg: ModelPackage;
  catalog: ModelCatalog;
  metrics: Metrics;
  engines: EnginePool;
  /** An in-process worker on this stack's queue; closed by close(). */
  worker(options?: Partial<WorkerOptions>): Promise<HarmonicaWorker>;
  close(): Promise<void>;
}

/**
 * API plus in-process workers on a tiny random DiT, against the real Redis, under a key
 * prefix of its own so that test files never see each other's jobs.
 */
export async function createStack(name: string, config: Partial<ServiceConfig> = {}, pkg?: ModelPackage): Promise<Stack> {
  const prefix = `test-${name}-${randomUUID().slice(0, 8)}`;
  const modelPkg = pkg ?? (await tinyDitPackage(3, 'tiny-dit'));
  const redis = connectRedis();
  const catalog = await ModelCatalog.load([modelPkg.dir]);
  const metrics = createMetrics();
  const fullConfig = { prefix, heartbeatMs: 200, ...config };
  const app = await buildApp({ models: catalog, redis, metrics, config: fullConfig });
  const engines = new EnginePool(catalog, { threads: 1 });
  const workers: HarmonicaWorker[] = [];
  return {
    app, redis, prefix, pkg: modelPkg, catalog, metrics, engines,
    async worker(options = {}) {
      const w = await startWorker({ redis, models: catalog, metrics, engines, config: fullConfig, ...options });
      workers.push(w);
      return w;
    },
    async close() {
      await app.close();
      await Promise.all(workers.map((w) => w.close(0)));
      await deletePrefix(redis, prefix);
      await redis.quit();
    },
  };
}

export interface SseEvent {
  id: number;
  event: string;
  data: Record<string, unknown>;
}

/** Parses a text/event-stream body (comments and retry lines skipped). */
export function parseSse(text: string): SseEvent[] {
  return text.split('\n\n').flatMap((block) => {
    const fields = new Map(block.split('\n').filter((l) => l && !l.startsWith(':')).map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()]));
    if (!fields.has('event')) return [];
    return [{ id: Number(fields.get('id')), event: fields.get('event')!, data: JSON.parse(fields.get('data') ?? '{}') as Record<string, unknown> }];
  });
}

/** Polls GET /jobs/:id until `done(view)` or the timeout. */
export async function pollJob(app: FastifyInstance, id: string, done: (view: { state: string }) => boolean, timeoutMs = 20_000): Promise<Record<string, unknown> & { state: string }> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const view = (await app.inject({ method: 'GET', url: `/jobs/${id}` })).json() as Record<string, unknown> & { state: string };
    if (done(view)) return view;
    if (Date.now() > until) throw new Error(`job ${id} still ${view.state} after ${timeoutMs} ms`);
    await sleep(50);
  }
}
