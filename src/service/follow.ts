import { TERMINAL_EVENTS, type JobEvent } from './events.js';
import { settleById } from './job-view.js';
import type { Services } from './services.js';

/**
 * A job's events after `after` until its terminal event; null on idle ticks (heartbeats). On
 * each idle tick the job is settled from BullMQ's state, and a job that vanished without an
 * end (expired) ends the stream instead of leaving the client waiting forever.
 */
export async function* jobEvents(s: Services, id: string, after: number, idleMs: number, signal: AbortSignal): AsyncGenerator<JobEvent | null> {
  for await (const event of s.events.follow(id, after, Math.max(1, idleMs), signal)) {
    if (event === null) {
      await settleById(s, id);
      if (!(await s.queue.getJob(id)) && !(await s.events.hasEnded(id))) return;
    }
    yield event;
  }
}

/** Waits up to `seconds` for the job to end; true if it did. */
export async function waitForEnd(s: Services, id: string, seconds: number): Promise<boolean> {
  if (seconds <= 0) return s.events.hasEnded(id);
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), seconds * 1000);
  try {
    for await (const event of jobEvents(s, id, 0, Math.min(s.config.heartbeatMs, seconds * 1000), ac.signal)) {
      if (event && TERMINAL_EVENTS.has(event.type)) return true;
    }
    return s.events.hasEnded(id);
  } finally {
    clearTimeout(timer);
    ac.abort();
  }
}
