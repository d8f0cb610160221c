import { randomUUID } from 'node:crypto';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ModelCatalog } from '../../src/service/catalog.js';
import { EventLog } from '../../src/service/events.js';
import type { GenerateJobData } from '../../src/service/job.js';
import { Keys } from '../../src/service/keys.js';
import { createMetrics } from '../../src/service/metrics.js';
import { connectRedis } from '../../src/service/redis.js';
import { ResultStore } from '../../src/service/results.js';
import { log } from '../../src/util/log.js';
import { EnginePool } from '../../workers/engines.js';
import { createProcessor, type GenerateJob } from '../../workers/processor.js';
import { tinyDitPackage } from '../helpers/packages.js';

const redis = connectRedis();
const keys = new Keys(`test-processor-${randomUUID().slice(0, 8)}`);
const events = new EventLog(redis, keys, 60);
const results = new ResultStore(redis, keys, 60);
let processJob: ReturnType<typeof createProcessor>;

beforeAll(async () => {
  const catalog = await ModelCatalog.load([(await tinyDitPackage(3, 'tiny-dit')).dir]);
  processJob = createProcessor({
    catalog, events, results, metrics: createMetrics(), log, workerName: 'direct',
    engines: new EnginePool(catalog, { threads: 1 }), isCancelRequested: async () => false,
  });
});

afterAll(async () => {
  const found = await redis.keys(`${keys.prefix}:*`);
  if (found.length) await redis.del(...found);
  await redis.quit();
});

/** Just what the processor touches of a BullMQ job. */
function fakeJob(data: GenerateJobData) {
  const progress: unknown[] = [];
  const job = { id: randomUUID(), data, timestamp: Date.now(), attemptsStarted: 1, updateProgress: async (p: unknown) => void progress.push(p) };
  return { job: job as unknown as GenerateJob, progress };
}

describe('the processor, called directly', () => {
  it('runs the engine, stores raw image bytes and returns the report', async () => {
    const { job, progress } = fakeJob({
      model: 'tiny-dit', request: { classLabel: 2, steps: 3, sampler: 'ddim', cfg: 1, seed: 4, n: 1 },
      cache: { policy: 'none' }, outputFormat: 'png', requestId: 'r1',
    });
    const result = await processJob(job, undefined, new AbortController().signal);
    expect(result.images).toEqual([{ index: 0, content_type: 'image/png', bytes: expect.any(Number) }]);
    expect(result.report).toMatchObject({ model: 'tiny-dit', steps: 3, seed: 4, worker: 'direct', attempt: 1, cur: 0 });
    expect(progress).toHaveLength(3);
    const bytes = await results.image(job.id!, 0);
    expect(bytes?.length).toBe(result.images[0]!.bytes);
    expect((await sharp(bytes!).metadata()).format).toBe('png');
    expect((await events.since(job.id!)).map((e) => e.type)).toEqual(['started', 'progress', 'progress', 'progress']);
  });

  it('turns an aborted signal into a CANCELED failure that BullMQ will not retry', async () => {
    const { job } = fakeJob({ model: 'tiny-dit', request: { classLabel: 2, steps: 3, sampler: 'ddim', cfg: 1, seed: 4, n: 1 }, cache: { policy: 'none' }, outputFormat: 'png', requestId: 'r2' });
    const ac = new AbortController();
    ac.abort('canceled by request');
    await expect(processJob(job, undefined, ac.signal)).rejects.toMatchObject({ name: 'UnrecoverableError', message: 'CANCELED: canceled by request' });
  });
});
