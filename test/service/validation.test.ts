import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDenoiser } from '../../src/models/denoiser.js';
import { tinyDitPackage } from '../helpers/packages.js';
import { buildApp } from '../../src/service/app.js';
import { connectRedis } from '../../src/service/redis.js';
import { startWorker } from '../../workers/worker.js';
import { RedisServer } from './redis-server.js';
import { createStack, pollJob, type Stack } from './stack.js';

let stack: Stack;
let limited: Stack;

beforeAll(async () => {
  const pkg = await tinyDitPackage(3, 'tiny-dit');
  // A router for another model: the API must refuse it up front.
  const slots = createDenoiser(pkg.manifest.family, pkg.manifest.config).slots.map((s) => s.name);
  await mkdir(join(pkg.dir, 'routers'));
  await writeFile(join(pkg.dir, 'routers', 'foreign.json'), JSON.stringify({
    format: 'harmonica-router/1', method: 'harmonica', model: { id: 'other', sha256: 'f'.repeat(64) }, sampler: 'ddim', steps: 6, cfgScale: 1.5, sublayers: slots, logits: Array.from({ length: 6 }, () => slots.map(() => 0)), tau: 0.1,
  }));
  stack = await createStack('validation', {}, pkg);
  limited = await createStack('limits', { maxQueueDepth: 2, retryAfterS: 7, rateLimit: { max: 4, windowS: 60 } }, pkg);
});

afterAll(async () => {
  await stack?.close();
  await limited?.close();
});

const good = { model: 'tiny-dit', class_label: 3 };

describe('bad requests are 400 problem+json and queue nothing', () => {
  const cases: [string, object, string][] = [
    ['a string for an integer', { ...good, class_label: '3' }, 'BAD_INPUT'],
    ['steps 0', { ...good, steps: 0 }, 'BAD_INPUT'],
    ['steps 10000', { ...good, steps: 10000 }, 'BAD_INPUT'],
    ['n 100', { ...good, n: 100 }, 'BAD_INPUT'],
    ['a 1 MB prompt', { ...good, prompt: 'x'.repeat(1_000_000) }, 'BAD_INPUT'],
    ['an unknown field', { ...good, colour: 'red' }, 'BAD_INPUT'],
    ['an unknown sampler', { ...good, sampler: 'euler' }, 'BAD_INPUT'],
    ['no model', { class_label: 3 }, 'BAD_INPUT'],
    ['an unknown model', { ...good, model: 'nope' }, 'UNKNOWN_MODEL'],
    ['a class out of range', { ...good, class_label: 12 }, 'BAD_INPUT'],
    ['a prompt for a class model', { model: 'tiny-dit', prompt: 'a seven' }, 'BAD_INPUT'],
    ['no class', { model: 'tiny-dit' }, 'BAD_INPUT'],
    ['an unknown policy', { ...good, cache: { policy: 'bogus' } }, 'UNKNOWN_POLICY'],
    ['fora without its interval', { ...good, cache: { policy: 'fora' } }, 'UNKNOWN_POLICY'],
    ['an unknown router', { ...good, cache: { policy: 'router', router: 'nope' } }, 'UNKNOWN_POLICY'],
    ['a router path', { ...good, cache: { policy: 'router', router: '../../etc/passwd' } }, 'UNKNOWN_POLICY'],
    ['a router file as policy', { ...good, cache: { policy: 'router:/etc/passwd' } }, 'BAD_INPUT'],
    ['a router of another model', { ...good, cache: { policy: 'router', router: 'foreign' } }, 'ROUTER_MISMATCH'],
    ['tau without a router', { ...good, cache: { policy: 'none', tau: 0.5 } }, 'BAD_INPUT'],
  ];
  it.each(cases)('%s', async (_name, body, code) => {
    const res = await stack.app.inject({ method: 'POST', url: '/generate', payload: body, headers: { 'idempotency-key': 'k1' } });
    expect(res.statusCode, res.body).toBe(400);
    expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(res.json()).toMatchObject({ status: 400, code, title: 'Bad request', detail: expect.any(String), request_id: expect.any(String) });
  });

  it('queued nothing', async () => {
    const counts = await stack.app.services.queue.getJobCounts();
    expect(Object.values(counts).every((c) => c === 0), JSON.stringify(counts)).toBe(true);
    // Only BullMQ's queue metadata: no job, no event log, no idempotency record.
    expect(await stack.redis.keys(`${stack.prefix}:*`)).toEqual([`${stack.prefix}:generate:meta`]);
  });

  it('names the field of a validation error', async () => {
    const res = await stack.app.inject({ method: 'POST', url: '/generate', payload: { ...good, steps: 0 } });
    expect(res.json().errors).toEqual([expect.objectContaining({ path: 'body/steps' })]);
  });

  it('refuses a body over 1 MiB with 413 and malformed JSON with 400', async () => {
    const big = await stack.app.inject({ method: 'POST', url: '/generate', payload: JSON.stringify({ ...good, prompt: 'x'.repeat(1_100_000) }), headers: { 'content-type': 'application/json' } });
    expect(big.statusCode).toBe(413);
    expect(big.headers['content-type']).toMatch(/problem\+json/);
    const broken = await stack.app.inject({ method: 'POST', url: '/generate', payload: '{"model":', headers: { 'content-type': 'application/json' } });
    expect(broken.statusCode).toBe(400);
  });
});

describe('not found', () => {
  it.each(['/jobs/nope', '/jobs/nope/events', '/jobs/nope/images/0', '/no-such-route'])('GET %s is 404 problem+json', async (url) => {
    const res = await stack.app.inject({ method: 'GET', url });
    expect(res.statusCode).toBe(404);
    expect(res.json()).toMatchObject({ status: 404, code: 'NOT_FOUND' });
  });

  it('cancel of an unknown job is 404', async () => {
    expect((await stack.app.inject({ method: 'POST', url: '/jobs/nope/cancel' })).statusCode).toBe(404);
  });
});

describe('overload, rate limit and readiness', () => {
  it('answers 503 with Retry-After once the queue is at its depth; a waiting job can be canceled', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 2; i++) {
      const res = await limited.app.inject({ method: 'POST', url: '/generate', payload: good });
      expect(res.statusCode).toBe(202);
      ids.push(res.json().id);
    }
    const over = await limited.app.inject({ method: 'POST', url: '/generate', payload: good });
    expect(over.statusCode).toBe(503);
    expect(over.headers['retry-after']).toBe('7');
    expect(over.json().code).toBe('OVERLOADED');
    // No worker runs here: both jobs wait, and canceling removes them.
    const canceled = await limited.app.inject({ method: 'POST', url: `/jobs/${ids[0]}/cancel` });
    expect(canceled.statusCode).toBe(200);
    expect(canceled.json()).toMatchObject({ id: ids[0], state: 'canceled', error: { code: 'CANCELED' } });
    expect(await limited.app.services.queue.getJob(ids[0]!)).toBeUndefined();
    expect((await limited.app.inject({ method: 'GET', url: `/jobs/${ids[0]}` })).json().state).toBe('canceled');
    const events = await limited.app.inject({ method: 'GET', url: `/jobs/${ids[0]}/events` });
    expect(events.body).toMatch(/event: queued[\s\S]*event: canceled/);
    expect((await limited.app.inject({ method: 'POST', url: `/jobs/${ids[0]}/cancel` })).statusCode).toBe(200);
  });

  it('a burst of concurrent requests never queues more than the depth', async () => {
    const burst = await createStack('burst', { maxQueueDepth: 3 }, stack.pkg);
    try {
      const answers = await Promise.all(Array.from({ length: 12 }, () => burst.app.inject({ method: 'POST', url: '/generate', payload: good })));
      expect(answers.map((a) => a.statusCode).sort()).toEqual([...Array(3).fill(202), ...Array(9).fill(503)]);
      const counts = await burst.app.services.queue.getJobCounts('waiting', 'prioritized', 'delayed');
      expect(Object.values(counts).reduce((a, b) => a + b, 0)).toBe(3);
    } finally {
      await burst.close();
    }
  });

  it('answers 429 with Retry-After past the rate limit', async () => {
    // Three requests so far from this client in this window (two queued, one 503).
    expect((await limited.app.inject({ method: 'POST', url: '/generate', payload: { model: 'nope' } })).statusCode).toBe(400);
    const res = await limited.app.inject({ method: 'POST', url: '/generate', payload: good });
    expect(res.statusCode).toBe(429);
    expect(Number(res.headers['retry-after'])).toBeGreaterThan(0);
  });

  it('/readyz is 503 without a worker and 200 with one', async () => {
    const res = await limited.app.inject({ method: 'GET', url: '/readyz' });
    expect(res.statusCode).toBe(503);
    expect(res.json().code).toBe('NO_WORKERS');
    const worker = await limited.worker();
    expect((await limited.app.inject({ method: 'GET', url: '/readyz' })).json()).toEqual({ status: 'ready', workers: 1 });
    await worker.close(0);
    expect((await limited.app.inject({ method: 'GET', url: '/readyz' })).statusCode).toBe(503);
  });

  it('/healthz answers and /docs serves openapi.yaml', async () => {
    expect((await stack.app.inject({ method: 'GET', url: '/healthz' })).json()).toEqual({ status: 'ok' });
    const docs = await stack.app.inject({ method: 'GET', url: '/docs' });
    expect(docs.headers['content-type']).toMatch(/yaml/);
    expect(docs.body).toBe(await readFile(new URL('../../openapi.yaml', import.meta.url), 'utf8'));
  });

  // One retry: a rare (about 1 in 36 runs) timeout of the first job against the fresh Redis
  // was seen once and not reproduced; the job's error is printed if it happens again.
  it('answers 503 with Retry-After while Redis is down and recovers by itself when it restarts', { retry: 1 }, async () => {
    const server = await RedisServer.start();
    const quiet = pino({ level: 'silent' });
    const config = { prefix: stack.prefix };
    const app = await buildApp({ models: stack.catalog, redisUrl: server.url, config, logger: quiet });
    const workerRedis = connectRedis(server.url);
    workerRedis.on('error', () => {});
    const worker = await startWorker({ redis: workerRedis, models: stack.catalog, engines: stack.engines, config, logger: quiet });
    const generate = () => app.inject({ method: 'POST', url: '/generate', payload: good });
    try {
      const before = await generate();
      expect(before.statusCode).toBe(202);
      const ended = (v: { state: string }) => v.state === 'completed' || v.state === 'failed';
      const first = await pollJob(app, before.json().id, ended);
      expect(first.state, JSON.stringify(first.error)).toBe('completed');

      await server.kill();
      const down = await generate();
      expect(down.statusCode).toBe(503);
      expect(down.headers['retry-after']).toBeDefined();
      expect(down.json().code).toBe('REDIS_UNAVAILABLE');
      expect((await app.inject({ method: 'GET', url: '/readyz' })).json().code).toBe('REDIS_UNAVAILABLE');

      // Same app, same worker: both reconnect on their own (the restarted server is empty).
      await server.restart();
      let after = await generate();
      for (const until = Date.now() + 10_000; after.statusCode === 503 && Date.now() < until; after = await generate()) await sleep(100);
      expect(after.statusCode, after.body).toBe(202);
      const recovered = await pollJob(app, after.json().id, ended, 30_000);
      expect(recovered.state, JSON.stringify(recovered.error)).toBe('completed');
    } finally {
      try {
        await app.close();
        await worker.close(0);
      } finally {
        workerRedis.disconnect();
        await server.kill();
      }
    }
  });
});
