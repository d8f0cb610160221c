import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { readFile } from 'node:fs/promises';
import { Type } from 'typebox';
import { HttpProblem } from '../src/service/problems.js';
import { problems } from './schemas.js';

/** The checked-in spec (kept equal to the route schemas by test/service/openapi.test.ts). */
export const OPENAPI_FILE = new URL('../openapi.yaml', import.meta.url);

export const opsRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/healthz', {
    schema: { summary: 'Liveness: the process answers', response: { 200: Type.Object({ status: Type.Literal('ok') }) } },
  }, async () => ({ status: 'ok' as const }));

  app.get('/readyz', {
    schema: {
      summary: 'Readiness: Redis answers and at least one worker is connected',
      response: { 200: Type.Object({ status: Type.Literal('ready'), workers: Type.Integer() }), ...problems(503) },
    },
  }, async () => {
    const s = app.services;
    const workers = await Promise.race([
      s.redis.ping().then(() => s.queue.getWorkersCount()),
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error('timeout')), 2000).unref()),
    ]).catch(() => null);
    if (workers === null) throw new HttpProblem(503, 'REDIS_UNAVAILABLE', 'Redis does not answer', 5);
    if (workers === 0) throw new HttpProblem(503, 'NO_WORKERS', 'no worker is connected to the queue', 5);
    return { status: 'ready' as const, workers };
  });

  app.get('/metrics', {
    schema: { summary: 'Prometheus metrics', response: { 200: { description: 'Prometheus text format', content: { 'text/plain': { schema: Type.String() } } } } },
  }, async (_request, reply) => {
    const registry = app.services.metrics.registry;
    return reply.type(registry.contentType).send(await registry.metrics());
  });

  app.get('/docs', {
    schema: { summary: 'This API as OpenAPI 3.1 (YAML)', response: { 200: { description: 'openapi.yaml', content: { 'application/yaml': { schema: Type.String() } } } } },
  }, async (_request, reply) => reply.type('application/yaml; charset=utf-8').send(await readFile(OPENAPI_FILE, 'utf8')));
};
