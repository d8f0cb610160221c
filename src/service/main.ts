import { createServer } from 'node:http';
import { pathToFileURL } from 'node:url';
import { collectDefaultMetrics } from 'prom-client';
import type { Device } from '../onnx/session.js';
import { log } from '../util/log.js';
import { startWorker } from '../../workers/worker.js';
import { buildApp } from './app.js';
import { defaultModels, ModelCatalog } from './catalog.js';
import { DEFAULT_CONFIG, type ServiceConfig } from './config.js';
import { createMetrics } from './metrics.js';
import { checkRedis, connectRedis, DEFAULT_REDIS_URL } from './redis.js';

export interface ServeOptions {
  redisUrl: string;
  /** Model names or package directories; empty = the bundled default. */
  models: string[];
  config: Partial<ServiceConfig>;
  threads?: number;
  device?: Device;
  /** How long SIGTERM lets the active job finish before handing it back to the queue. */
  graceMs: number;
}

export interface ApiOptions extends ServeOptions {
  host: string;
  port: number;
  withWorker: boolean;
  trustProxy: boolean;
}

export interface WorkerRunOptions extends ServeOptions {
  /** Serve /metrics for Prometheus on this port (0 = off): a worker's histograms live in its process. */
  metricsPort: number;
  name?: string;
}

/** Runs `stop` once on SIGTERM or SIGINT, then exits. */
function onShutdown(stop: () => Promise<void>): void {
  let stopping = false;
  const handler = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    stop().then(() => process.exit(0), (err: unknown) => {
      log.error({ err }, 'shutdown failed');
      process.exit(1);
    });
  };
  process.once('SIGTERM', () => handler('SIGTERM'));
  process.once('SIGINT', () => handler('SIGINT'));
}

async function prepare(o: ServeOptions) {
  await checkRedis(o.redisUrl);
  const catalog = await ModelCatalog.load(o.models.length ? o.models : defaultModels());
  const metrics = createMetrics();
  collectDefaultMetrics({ register: metrics.registry });
  return { catalog, metrics };
}

/** The API (and, with withWorker, one worker in the same process sharing its metrics). */
export async function serve(o: ApiOptions): Promise<void> {
  const { catalog, metrics } = await prepare(o);
  const app = await buildApp({ models: catalog, redisUrl: o.redisUrl, metrics, config: o.config, trustProxy: o.trustProxy });
  const redis = o.withWorker ? connectRedis(o.redisUrl) : null;
  const worker = redis ? await startWorker({ redis, models: catalog, metrics, config: o.config, session: { threads: o.threads, device: o.device } }) : null;
  await app.listen({ host: o.host, port: o.port });
  onShutdown(async () => {
    await app.close();
    await worker?.close(o.graceMs);
    await redis?.quit();
  });
}

/** A worker process. */
export async function work(o: WorkerRunOptions): Promise<void> {
  const { catalog, metrics } = await prepare(o);
  const redis = connectRedis(o.redisUrl);
  const worker = await startWorker({ redis, models: catalog, metrics, config: o.config, name: o.name, session: { threads: o.threads, device: o.device } });
  const server = o.metricsPort
    ? createServer((req, res) => {
        if (req.url !== '/metrics') return void res.writeHead(req.url === '/healthz' ? 200 : 404).end();
        metrics.registry.metrics().then((text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text), () => res.writeHead(500).end());
      }).listen(o.metricsPort)
    : null;
  onShutdown(async () => {
    server?.close();
    await worker.close(o.graceMs);
    await redis.quit();
  });
}

const int = (v: string | undefined, fallback: number) => (v === undefined || v === '' ? fallback : Number.parseInt(v, 10));

/** Settings from the environment (the container images and `npm start` use these). */
export function optionsFromEnv(env = process.env): ApiOptions & WorkerRunOptions {
  const perMinute = int(env.RATE_LIMIT_PER_MINUTE, 0);
  return {
    redisUrl: env.REDIS_URL ?? DEFAULT_REDIS_URL,
    models: (env.MODELS ?? '').split(',').map((m) => m.trim()).filter(Boolean),
    host: env.HOST ?? '0.0.0.0',
    port: int(env.PORT, 3000),
    withWorker: env.WITH_WORKER !== '0',
    trustProxy: env.TRUST_PROXY === '1' || env.TRUST_PROXY === 'true',
    metricsPort: int(env.METRICS_PORT, 0),
    threads: env.THREADS ? int(env.THREADS, 0) : undefined,
    device: env.DEVICE === 'cuda' ? 'cuda' : undefined,
    graceMs: int(env.SHUTDOWN_GRACE_MS, 30_000),
    config: {
      prefix: env.HARMONICA_PREFIX ?? DEFAULT_CONFIG.prefix,
      maxQueueDepth: int(env.MAX_QUEUE_DEPTH, DEFAULT_CONFIG.maxQueueDepth),
      resultTtlS: int(env.RESULT_TTL_S, DEFAULT_CONFIG.resultTtlS),
      rateLimit: perMinute > 0 ? { max: perMinute, windowS: 60 } : null,
    },
  };
}

/** Prints a one-line reason (no stack) and exits non-zero: for Redis down or no model. */
export function exitWith(err: unknown): never {
  process.stderr.write(`harmonica: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}

// `npm start`: API plus an in-process worker, configured from the environment.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const o = optionsFromEnv();
  (process.env.ROLE === 'worker' ? work(o) : serve(o)).catch(exitWith);
}
