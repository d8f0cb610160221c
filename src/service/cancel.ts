import type { Redis } from 'ioredis';
import { CANCELED } from './job.js';
import { jobView, type JobView } from './job-view.js';
import type { Keys } from './keys.js';
import { HttpProblem } from './problems.js';
import type { Services } from './services.js';

/**
 * Cancels a job wherever it is. A waiting job is removed from the queue (BullMQ refuses to
 * remove a locked one, so a job a worker has just taken falls through to the next case). A
 * running job gets a flag and a pub/sub message: every worker hears it, the one holding the
 * job aborts its signal, and a worker taking the job later sees the flag.
 * Returns the view and whether the job is already canceled (false: the worker will stop it).
 */
export async function cancelJob(s: Services, id: string): Promise<{ view: JobView; done: boolean }> {
  const job = await s.queue.getJob(id);
  const state = job ? await job.getState() : 'unknown';
  if (job && ['waiting', 'prioritized', 'delayed'].includes(state)) {
    const removed = await job.remove().then(() => true, () => false);
    if (removed) {
      await s.events.append(id, 'canceled', { code: CANCELED, message: 'canceled while queued' });
      s.metrics.jobs.inc({ status: 'canceled' });
    }
  }
  const view = await jobView(s, id);
  if (!view) throw new HttpProblem(404, 'NOT_FOUND', `no job ${id}`);
  if (view.state === 'canceled') return { view, done: true };
  if (view.state === 'completed' || view.state === 'failed') throw new HttpProblem(409, 'ALREADY_FINISHED', `job ${id} has already ${view.state}`);
  await s.redis.set(s.keys.cancelFlag(id), '1', 'EX', s.config.eventTtlS);
  await s.redis.publish(s.keys.cancelChannel, id);
  return { view, done: false };
}

export async function isCancelRequested(redis: Redis, keys: Keys, id: string): Promise<boolean> {
  return (await redis.exists(keys.cancelFlag(id))) === 1;
}

/** Calls onCancel(jobId) for every cancel request; returns the unsubscribe function. */
export async function subscribeCancels(redis: Redis, keys: Keys, onCancel: (jobId: string) => void): Promise<() => Promise<void>> {
  const sub = redis.duplicate();
  // ioredis reconnects and resubscribes by itself; the listener only keeps it from printing.
  sub.on('error', () => {});
  sub.on('message', (_channel: string, jobId: string) => onCancel(jobId));
  await sub.subscribe(keys.cancelChannel);
  return async () => {
    await sub.quit().catch(() => sub.disconnect());
  };
}
