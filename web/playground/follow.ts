/**
 * Follows a job's server-sent events. EventSource reconnects by itself after a dropped
 * connection (a restarted API replica behind the load balancer, a proxy timeout) and sends
 * Last-Event-ID, so the server resumes after the last event seen; ids at or below it are
 * dropped here too, in case a replay overlaps. The stream is closed at the terminal event,
 * otherwise EventSource would reconnect to a finished job forever.
 */

export type JobEventType = 'queued' | 'started' | 'progress' | 'completed' | 'failed' | 'canceled';

const EVENT_TYPES: readonly JobEventType[] = ['queued', 'started', 'progress', 'completed', 'failed', 'canceled'];
const TERMINAL: ReadonlySet<JobEventType> = new Set(['completed', 'failed', 'canceled']);

export interface ProgressEvent {
  step: number;
  total: number;
  step_ms: number;
  computed: number;
  reused: number;
  /** One character per sublayer: 1 computed, 0 reused (absent from servers before it was added). */
  mask?: string;
}

export interface FollowHandlers {
  event(type: JobEventType, data: Record<string, unknown>, id: number): void;
  /** The connection dropped and EventSource is reconnecting (it will resume after `lastId`). */
  reconnecting?(lastId: number): void;
  /** The server refused the stream (e.g. the job expired): EventSource gave up. */
  lost?(lastId: number): void;
}

/** Starts following; returns a function that stops. */
export function followJob(url: string, on: FollowHandlers): () => void {
  const source = new EventSource(url);
  let lastId = 0;
  let done = false;
  const stop = () => {
    done = true;
    source.close();
  };
  for (const type of EVENT_TYPES) {
    source.addEventListener(type, (e: MessageEvent<string>) => {
      const id = Number(e.lastEventId) || 0;
      if (done || (id > 0 && id <= lastId)) return;
      lastId = id || lastId;
      if (TERMINAL.has(type)) stop();
      on.event(type, JSON.parse(e.data) as Record<string, unknown>, id);
    });
  }
  source.addEventListener('error', () => {
    if (done) return;
    if (source.readyState === EventSource.CLOSED) {
      stop();
      on.lost?.(lastId);
    } else {
      on.reconnecting?.(lastId);
    }
  });
  return stop;
}
