import { createHash, randomInt, randomUUID } from 'node:crypto';
import type { GenerateRequest } from '../engine/engine.js';
import { cacheSpec } from './cache-choice.js';
import type { CacheChoice, GenerateJobData, OutputFormat } from './job.js';
import { HttpProblem } from './problems.js';
import type { Services } from './services.js';

/** A generation request in service terms; both POST /generate and the OpenAI route map onto it. */
export interface JobSpec {
  model: string;
  request: Omit<GenerateRequest, 'cache'>;
  cache?: CacheChoice;
  outputFormat: OutputFormat;
}

export interface Submitted {
  id: string;
  /** An Idempotency-Key replay: the job already existed. */
  replayed: boolean;
}

/** JSON with sorted keys, so that equal bodies hash equally whatever their key order. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    return `{${Object.entries(value).filter(([, v]) => v !== undefined).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

/** Seeds drawn for requests without one stay below 2^31 so that every client can echo them back. */
const MAX_DRAWN_SEED = 2 ** 31;

/**
 * Validates a request as the engine will, then queues it. Nothing is queued for a bad request,
 * an overloaded queue or an idempotent replay. The Idempotency-Key becomes the job id (hashed,
 * so any header value makes a valid BullMQ id); its record holds the body hash for 422s.
 */
export async function submitJob(s: Services, spec: JobSpec, opts: { idempotencyKey?: string; requestId: string }): Promise<Submitted> {
  const entry = s.catalog.get(spec.model);
  const seed = spec.request.seed ?? randomInt(MAX_DRAWN_SEED);
  const resolved = s.catalog.validate(entry.id, { ...spec.request, seed, cache: cacheSpec(spec.cache, entry.dir) });
  const { cache: _spec, ...request } = resolved;
  const data: GenerateJobData = { model: entry.id, request, cache: spec.cache ?? { policy: 'none' }, outputFormat: spec.outputFormat, requestId: opts.requestId };

  const key = opts.idempotencyKey;
  const bodyHash = sha256(canonical(spec));
  const id = key === undefined ? randomUUID() : `k-${sha256(key).slice(0, 40)}`;
  const recordKey = s.keys.idempotency(id);
  if (key !== undefined) {
    const prior = await s.redis.get(recordKey);
    if (prior !== null) return replay(s, id, prior, bodyHash);
  }
  const replayed = await admitOneAtATime(s, async () => {
    await checkDepth(s);
    if (key !== undefined && !(await s.redis.set(recordKey, bodyHash, 'EX', s.config.eventTtlS, 'NX'))) {
      return replay(s, id, (await s.redis.get(recordKey)) ?? '', bodyHash);
    }
    // The queued event goes first so that it precedes anything a fast worker writes.
    try {
      await s.events.append(id, 'queued', { model: entry.id, n: request.n, steps: request.steps });
      await s.queue.add(s.queue.name, data, { jobId: id });
    } catch (err) {
      // Free the key so that the client's retry can queue the job.
      if (key !== undefined) await s.redis.del(recordKey).catch(() => {});
      throw err;
    }
    return undefined;
  });
  if (replayed) return replayed;
  s.metrics.jobs.inc({ status: 'queued' });
  return { id, replayed: false };
}

async function replay(s: Services, id: string, priorHash: string, bodyHash: string): Promise<Submitted> {
  if (priorHash !== bodyHash) throw new HttpProblem(422, 'IDEMPOTENCY_KEY_REUSED', 'this Idempotency-Key was used with a different request body');
  const exists = (await s.queue.getJob(id)) !== undefined || (await s.events.since(id)).length > 0;
  if (!exists) throw new HttpProblem(409, 'IDEMPOTENCY_IN_PROGRESS', 'a request with this Idempotency-Key is still being accepted; retry shortly', 1);
  return { id, replayed: true };
}

const admissions = new WeakMap<Services, Promise<unknown>>();

/**
 * Runs the depth check and the enqueue of one request at a time per API process: run
 * concurrently, a burst of requests all pass the check before any of them is queued (a load
 * test saw 175 jobs waiting against a limit of 100). Replicas still check independently, so
 * the depth can overshoot by at most one request per other replica.
 */
function admitOneAtATime<T>(s: Services, admit: () => Promise<T>): Promise<T> {
  const run = (admissions.get(s) ?? Promise.resolve()).then(admit);
  admissions.set(s, run.catch(() => undefined));
  return run;
}

async function checkDepth(s: Services): Promise<void> {
  const counts = await s.queue.getJobCounts('waiting', 'prioritized', 'delayed');
  const depth = Object.values(counts).reduce((a, b) => a + b, 0);
  if (depth >= s.config.maxQueueDepth) {
    throw new HttpProblem(503, 'OVERLOADED', `${depth} jobs are waiting (limit ${s.config.maxQueueDepth}); retry later`, s.config.retryAfterS);
  }
}
