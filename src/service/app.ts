import { randomUUID } from 'node:crypto';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import type { Redis } from 'ioredis';
import { routes } from '../../routes/index.js';
import { log, type Logger } from '../util/log.js';
import { ModelCatalog } from './catalog.js';
import { BODY_LIMIT_BYTES, DEFAULT_CONFIG, type ServiceConfig } from './config.js';
import { createMetrics, type Metrics } from './metrics.js';
import { HttpProblem, sendProblem } from './problems.js';
import { connectRedis, DEFAULT_REDIS_URL } from './redis.js';
import { createServices } from './services.js';

export interface AppOptions {
  /** Model names or package directories, or a catalog already loaded. */
  models: string[] | ModelCatalog;
  redisUrl?: string;
  /** A connection to share; its owner closes it. Without one the app opens and closes its own. */
  redis?: Redis;
  config?: Partial<ServiceConfig>;
  /** Share with an in-process worker so that one /metrics shows both. */
  metrics?: Metrics;
  logger?: Logger;
  /** Behind a load balancer: take client address and protocol from X-Forwarded-* (rate limit, URLs). */
  trustProxy?: boolean;
}

/** The API as a Fastify instance with its routes and services; listen() is the caller's. */
export async function buildApp(options: AppOptions): Promise<FastifyInstance> {
  const config: ServiceConfig = { ...DEFAULT_CONFIG, ...options.config };
  const appLog = options.logger ?? log.child({ component: 'api' });
  const catalog = options.models instanceof ModelCatalog ? options.models : await ModelCatalog.load(options.models);
  // Our own connection fails a request after a few retries while Redis is away (a 503), rather
  // than holding it open the way a worker's connection must.
  const redis = options.redis ?? connectRedis(options.redisUrl ?? DEFAULT_REDIS_URL, { maxRetriesPerRequest: 2 });
  if (!options.redis) redis.on('error', (err: Error) => appLog.warn({ err: err.message }, 'redis connection error'));
  const metrics = options.metrics ?? createMetrics();
  const { services, abort, close } = createServices({ config, catalog, redis, metrics, log: appLog });

  const app = Fastify({
    loggerInstance: appLog as FastifyBaseLogger,
    bodyLimit: BODY_LIMIT_BYTES,
    trustProxy: options.trustProxy ?? false,
    requestIdHeader: 'x-request-id',
    genReqId: () => randomUUID(),
    // No coercion: "5" is not an integer, and unknown fields are errors, not silently dropped.
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false } },
  }).withTypeProvider<TypeBoxTypeProvider>();

  await app.register(fp(async (instance) => {
    instance.decorate('services', services);
    instance.addHook('preClose', async () => abort());
    instance.addHook('onClose', async () => {
      await close();
      if (!options.redis) await redis.quit();
    });
  }, { name: 'harmonica-services' }));
  app.setErrorHandler((error, request, reply) => sendProblem(error, request, reply));
  app.setNotFoundHandler((request, reply) => sendProblem(new HttpProblem(404, 'NOT_FOUND', `no route ${request.method} ${request.url}`), request, reply));
  app.addHook('onSend', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });
  app.addHook('onResponse', async (request, reply) => {
    // The route template, never the raw URL: job ids must not become label values.
    const route = request.routeOptions.url ?? 'unmatched';
    metrics.requestDuration.observe({ method: request.method, route, status_code: String(reply.statusCode) }, reply.elapsedTime / 1000);
  });
  await app.register(routes);
  return app;
}
