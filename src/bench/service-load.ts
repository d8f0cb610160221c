import { setTimeout as sleep } from 'node:timers/promises';
import autocannon from 'autocannon';
import type { Queue } from 'bullmq';
import { Progress } from '../util/progress.js';
import { startServiceStack } from './service-stack.js';

export interface LoadBenchOptions {
  redisUrl: string;
  model: string;
  classLabel: number;
  workers: number;
  /** ORT intra-op threads per worker. */
  threads?: number;
  /** Target POST /generate requests per second, over all connections. */
  rate: number;
  durationS: number;
  connections: number;
  /** The API's MAX_QUEUE_DEPTH: requests beyond it are shed with 503. */
  maxQueueDepth: number;
  steps: number;
  /** Give up waiting for the accepted jobs after this long. */
  drainTimeoutS: number;
}

export interface LoadBenchResult {
  model: string;
  workers: number;
  request: Record<string, unknown>;
  targetRate: number;
  maxQueueDepth: number;
  /** rate x duration requests, each sent once. */
  sent: number;
  answered: number;
  /** How long the load took (longer than the duration if the API fell behind the rate). */
  loadS: number;
  achievedRate: number;
  accepted202: number;
  shed503: number;
  /** Any other status (a 5xx here is a fault), by code. */
  otherStatuses: Record<string, number>;
  /** Connection errors and timeouts (no HTTP answer at all). */
  errors: number;
  enqueueP50Ms: number;
  enqueueP99Ms: number;
  shedP99Ms: number | null;
  maxWaitingSeen: number;
  /** Jobs this load put into BullMQ: one per 202. */
  queued: number;
  completed: number;
  failed: number;
  /** Jobs neither completed nor failed when the wait ended. */
  unfinished: number;
  /** End of the load to the last accepted job finished (or the timeout). */
  drainS: number;
  /** No 5xx but shedding, no connection errors, one job per 202, every job finished. */
  pass: boolean;
}

/** Waiting for a job that will run: everything BullMQ has not finished. */
const PENDING = ['waiting', 'prioritized', 'delayed', 'active'] as const;

async function queueCounts(queue: Queue) {
  const c = await queue.getJobCounts(...PENDING, 'completed', 'failed');
  const pending = PENDING.reduce((sum, s) => sum + (c[s] ?? 0), 0);
  const finished = (c.completed ?? 0) + (c.failed ?? 0);
  return { pending, waiting: c.waiting ?? 0, completed: c.completed ?? 0, failed: c.failed ?? 0, finished, total: pending + finished };
}

function percentile(sorted: number[], q: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]! : Number.NaN;
}

const round = (v: number, digits = 1) => Number(v.toFixed(digits));

/**
 * A fixed-rate load of POST /generate (autocannon) against the API and `workers` worker
 * processes, then a bounded wait until every accepted job has finished. Each worker's first
 * job opens the model, so a few warm-up jobs run before the load and are not counted.
 */
export async function benchServiceLoad(o: LoadBenchOptions): Promise<LoadBenchResult> {
  const stack = await startServiceStack({
    redisUrl: o.redisUrl, model: o.model, workers: o.workers, threads: o.threads,
    apiEnv: { MAX_QUEUE_DEPTH: String(o.maxQueueDepth) },
  });
  try {
    const body = { model: o.model, class_label: o.classLabel, steps: o.steps, n: 1 };
    const post = (headers: Record<string, string> = {}) =>
      fetch(`${stack.url}/generate`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
    await Promise.all(Array.from({ length: 2 * o.workers }, () => post({ prefer: 'wait=60' }).then((r) => r.arrayBuffer())));
    const before = await queueCounts(stack.queue);

    /** Response times by status ('202', '503' for shedding, 'other 503', ...). */
    const times = new Map<string, number[]>();
    const answeredSoFar = () => [...times.values()].reduce((sum, list) => sum + list.length, 0);
    const requests = o.rate * o.durationS;
    let maxWaitingSeen = 0;
    let ticked = 0;
    const loadProgress = new Progress('load', requests, 'req');
    const sampler = setInterval(() => {
      void queueCounts(stack.queue).then((c) => (maxWaitingSeen = Math.max(maxWaitingSeen, c.waiting)), () => {});
      const answered = answeredSoFar();
      loadProgress.tick(answered - ticked, { accepted: times.get('202')?.length ?? 0, shed: times.get('503')?.length ?? 0 });
      ticked = answered;
    }, 1000);
    const loadStart = performance.now();
    // A number of requests rather than a duration: autocannon then waits for every answer instead
    // of dropping the requests in flight at the end (which the API may still have queued).
    let stopped: NodeJS.Timeout | undefined;
    const result = await new Promise<autocannon.Result>((resolve, reject) => {
      const instance = autocannon({
        url: `${stack.url}/generate`, method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
        connections: o.connections, overallRate: o.rate, amount: requests, timeout: 10,
        // A 503 is shedding only if it says OVERLOADED; any other 503 (Redis away) is a fault.
        setupClient(client) {
          let chunks: Buffer[] = [];
          client.on('headers', () => (chunks = []));
          client.on('body', (chunk) => chunks.push(chunk));
          client.on('response', (status, _bytes, ms) => {
            const key = status === 503 && !Buffer.concat(chunks).includes('"OVERLOADED"') ? 'other 503' : String(status);
            let list = times.get(key);
            if (!list) times.set(key, (list = []));
            list.push(ms);
          });
        },
      }, (err: unknown, res) => (err ? reject(err) : resolve(res)));
      // Bounded even if the API falls far behind the rate.
      stopped = setTimeout(() => instance.stop(), 3 * o.durationS * 1000);
    });
    clearTimeout(stopped);
    clearInterval(sampler);
    const loadS = (performance.now() - loadStart) / 1000;

    const accepted = times.get('202')?.length ?? 0;
    const drainStart = performance.now();
    let now = await queueCounts(stack.queue);
    // This stack's queue holds only the warm-up jobs and this load's.
    const queued = now.total - before.total;
    // Counts only what finishes from here on, so that its rate and ETA are the drain's.
    const drainProgress = new Progress('drain', now.pending, 'jobs');
    let counted = now.finished;
    for (const until = Date.now() + o.drainTimeoutS * 1000; ;) {
      if (now.finished > counted) drainProgress.tick(now.finished - counted, { pending: now.pending });
      counted = Math.max(counted, now.finished);
      if (now.pending === 0 || Date.now() > until) break;
      await sleep(250);
      now = await queueCounts(stack.queue);
    }
    const drainS = (performance.now() - drainStart) / 1000;

    const sorted = (status: string) => [...(times.get(status) ?? [])].sort((a, b) => a - b);
    const otherStatuses = Object.fromEntries([...times].filter(([s]) => s !== '202' && s !== '503').map(([s, list]) => [s, list.length]));
    const completed = now.completed - before.completed;
    const failed = now.failed - before.failed;
    const answered = answeredSoFar();
    // autocannon counts timeouts among its errors.
    const errors = result.errors;
    const shed = sorted('503');
    const unfinished = queued - completed - failed;
    return {
      model: o.model, workers: o.workers, request: body, targetRate: o.rate, maxQueueDepth: o.maxQueueDepth,
      sent: answered + errors, answered, loadS: round(loadS), achievedRate: round(answered / loadS),
      accepted202: accepted, shed503: shed.length, otherStatuses, errors,
      enqueueP50Ms: round(percentile(sorted('202'), 0.5)), enqueueP99Ms: round(percentile(sorted('202'), 0.99)),
      shedP99Ms: shed.length ? round(percentile(shed, 0.99)) : null,
      maxWaitingSeen, queued, completed, failed, unfinished, drainS: round(drainS),
      pass: Object.keys(otherStatuses).length === 0 && errors === 0 && queued === accepted && unfinished === 0,
    };
  } finally {
    await stack.stop();
  }
}
