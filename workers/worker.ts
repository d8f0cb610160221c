import { hostname } from 'node:os';
import { Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { SessionConfig } from '../src/onnx/session.js';
import { isCancelRequested, subscribeCancels } from '../src/service/cancel.js';
import { ModelCatalog } from '../src/service/catalog.js';
import { DEFAULT_CONFIG, QUEUE_NAME, type ServiceConfig } from '../src/service/config.js';
import { EventLog } from '../src/service/events.js';
import type { GenerateJobData, GenerateJobResult } from '../src/service/job.js';
import { appendTerminal } from '../src/service/job-view.js';
import { Keys } from '../src/service/keys.js';
import { createMetrics, type Metrics } from '../src/service/metrics.js';
import { ResultStore } from '../src/service/results.js';
import { log as rootLog, type Logger } from '../src/util/log.js';
import { EnginePool, type EngineSource } from './engines.js';
import { createProcessor, SHUTDOWN } from './processor.js';

/**
 * One queue for every model, the model named in the job data. Every worker image carries the
 * same model packages and opens a model on its first job, so any idle worker can take any job:
 * FIFO across models, one depth to watch for overload, no per-model worker pools to size.
 * Per-model queues become the better choice once the models no longer fit together in one
 * worker's memory (then each worker listens only to the queues of the models it holds).
 */

/**
 * The lock must outlive the longest stretch without event-loop turns (the engine awaits every
 * ORT run, but building a large model's sessions is synchronous JS); BullMQ renews it at half
 * this. A dead worker's job returns to the queue this long after its last renewal.
 */
export const LOCK_DURATION_MS = 60_000;

export interface WorkerOptions {
  /** A connection created with maxRetriesPerRequest: null (see connectRedis); its owner closes it. */
  redis: Redis;
  models: string[] | ModelCatalog;
  config?: Partial<ServiceConfig>;
  metrics?: Metrics;
  /** Default: an EnginePool over the catalog. */
  engines?: EngineSource;
  session?: SessionConfig;
  name?: string;
  lockDurationMs?: number;
  stalledIntervalMs?: number;
  logger?: Logger;
}

export interface HarmonicaWorker {
  worker: Worker<GenerateJobData, GenerateJobResult>;
  metrics: Metrics;
  /**
   * Stops taking jobs and lets the active one finish; after `graceMs` the active job is handed
   * back to the queue (for another worker) and the worker closes.
   */
  close(graceMs?: number): Promise<void>;
}

export async function startWorker(options: WorkerOptions): Promise<HarmonicaWorker> {
  const config = { ...DEFAULT_CONFIG, ...options.config };
  const catalog = options.models instanceof ModelCatalog ? options.models : await ModelCatalog.load(options.models);
  const { redis } = options;
  const keys = new Keys(config.prefix);
  const events = new EventLog(redis, keys, config.eventTtlS);
  const metrics = options.metrics ?? createMetrics();
  const name = options.name ?? `${hostname()}:${process.pid}`;
  const log = (options.logger ?? rootLog).child({ component: 'worker', worker: name });
  const processor = createProcessor({
    catalog, events, metrics, log, workerName: name,
    engines: options.engines ?? new EnginePool(catalog, options.session),
    results: new ResultStore(redis, keys, config.resultTtlS),
    isCancelRequested: (id) => isCancelRequested(redis, keys, id),
  });
  const worker = new Worker<GenerateJobData, GenerateJobResult>(QUEUE_NAME, processor, {
    connection: redis, prefix: config.prefix, name,
    // One job at a time per device: ORT already uses every core (or the whole GPU) for one run.
    concurrency: 1,
    lockDuration: options.lockDurationMs ?? LOCK_DURATION_MS,
    stalledInterval: options.stalledIntervalMs ?? 30_000,
    // A job whose worker died goes back to the queue once; a second death fails it.
    maxStalledCount: 1,
  });
  const unsubscribe = await subscribeCancels(redis, keys, (id) => worker.cancelJob(id, 'canceled by request'));
  worker.on('completed', (job) => {
    metrics.jobs.inc({ status: 'completed' });
    void appendTerminal(events, job, 'completed').catch((err: unknown) => log.warn({ err, job: job.id }, 'could not write the completed event'));
  });
  worker.on('failed', (job, err) => {
    if (!job || err.name === 'DelayedError') return;
    metrics.jobs.inc({ status: /^CANCELED: /.test(err.message) ? 'canceled' : 'failed' });
    void appendTerminal(events, job, 'failed').catch((e: unknown) => log.warn({ err: e, job: job.id }, 'could not write the failed event'));
  });
  worker.on('error', (err) => log.error({ err }, 'worker error'));
  await worker.waitUntilReady();
  log.info({ models: catalog.list().map((m) => m.id), prefix: config.prefix }, 'worker ready');

  return {
    worker, metrics,
    async close(graceMs = 30_000) {
      const closing = worker.close();
      const timer = setTimeout(() => worker.cancelAllJobs(SHUTDOWN), graceMs);
      try {
        await closing;
      } finally {
        clearTimeout(timer);
        await unsubscribe();
      }
    },
  };
}
