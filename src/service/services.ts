import { setMaxListeners } from 'node:events';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { Gauge } from 'prom-client';
import type { Logger } from '../util/log.js';
import type { ModelCatalog } from './catalog.js';
import { QUEUE_NAME, type ServiceConfig } from './config.js';
import { EventLog } from './events.js';
import type { GenerateJobData, GenerateJobResult } from './job.js';
import { Keys } from './keys.js';
import type { Metrics } from './metrics.js';
import { ResultStore } from './results.js';

/** What the route handlers work with, decorated once on the app as `app.services`. */
export interface Services {
  config: ServiceConfig;
  redis: Redis;
  queue: Queue<GenerateJobData, GenerateJobResult>;
  keys: Keys;
  events: EventLog;
  results: ResultStore;
  catalog: ModelCatalog;
  metrics: Metrics;
  /** Aborted when the app closes: long-lived responses (SSE) end so that close() can finish. */
  closing: AbortSignal;
}

declare module 'fastify' {
  interface FastifyInstance {
    services: Services;
  }
}

const QUEUE_STATES = ['waiting', 'prioritized', 'delayed', 'active', 'completed', 'failed'] as const;

function queueDepthGauge(metrics: Metrics, queue: Queue): void {
  if (metrics.registry.getSingleMetric('harmonica_queue_depth')) return;
  new Gauge({
    name: 'harmonica_queue_depth', help: 'Jobs in the queue by state', labelNames: ['state'] as const, registers: [metrics.registry],
    async collect() {
      const counts = await queue.getJobCounts(...QUEUE_STATES);
      for (const state of QUEUE_STATES) this.set({ state }, counts[state] ?? 0);
    },
  });
}

/** The API's side of the queue; `close` closes the queue, `abort` ends the open streams. */
export function createServices(args: { config: ServiceConfig; catalog: ModelCatalog; redis: Redis; metrics: Metrics; log: Logger }) {
  const { config, redis, metrics, log } = args;
  const keys = new Keys(config.prefix);
  const queue = new Queue<GenerateJobData, GenerateJobResult>(QUEUE_NAME, {
    connection: redis, prefix: config.prefix,
    // Fail a request while Redis is away instead of waiting for it to come back.
    skipWaitingForReady: true,
    // Finished jobs stay as long as their images; retries come from stalled-job recovery only,
    // since a failed inference would fail the same way again.
    defaultJobOptions: { attempts: 1, removeOnComplete: { age: config.resultTtlS }, removeOnFail: { age: config.eventTtlS } },
  });
  // Without a listener BullMQ prints connection errors with console.error.
  queue.on('error', (err: Error) => log.warn({ err: err.message }, 'queue error'));
  queueDepthGauge(metrics, queue);
  const closing = new AbortController();
  // Every open SSE stream listens for the close: no listener cap.
  setMaxListeners(0, closing.signal);
  const services: Services = {
    config, redis, queue, keys, catalog: args.catalog, metrics, closing: closing.signal,
    events: new EventLog(redis, keys, config.eventTtlS),
    results: new ResultStore(redis, keys, config.resultTtlS),
  };
  return { services, abort: () => closing.abort(), close: () => queue.close() };
}
