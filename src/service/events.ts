import type { Redis } from 'ioredis';
import type { Keys } from './keys.js';

export type JobEventType = 'queued' | 'started' | 'progress' | 'completed' | 'failed' | 'canceled';

export const TERMINAL_EVENTS: ReadonlySet<JobEventType> = new Set(['completed', 'failed', 'canceled']);

export interface JobEvent {
  /** 1, 2, 3, ... per job: the SSE id, and what Last-Event-ID resumes from. */
  id: number;
  type: JobEventType;
  data: Record<string, unknown>;
}

/**
 * Appends one event to a job's Redis stream with the next integer id, unless the job already
 * has a terminal event. One script makes "numbered, in order, at most one terminal event"
 * atomic even when a worker and an SSE reader settle the same job at once.
 */
const APPEND = `
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
if ARGV[4] == '1' then redis.call('SET', KEYS[3], '1', 'EX', ARGV[3]) end
local seq = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], seq .. '-0', 'type', ARGV[1], 'data', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return seq`;

type StreamEntries = [id: string, fields: string[]][];

function parseEntries(entries: StreamEntries): JobEvent[] {
  return entries.map(([id, fields]) => {
    const get = (name: string) => fields[fields.indexOf(name) + 1] ?? '';
    return { id: Number.parseInt(id, 10), type: get('type') as JobEventType, data: JSON.parse(get('data') || '{}') as Record<string, unknown> };
  });
}

/** The per-job event log that SSE streams replay and follow. */
export class EventLog {
  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
    private readonly ttlS: number,
  ) {}

  /** The new event's id, or 0 when the job had already ended (the event is dropped). */
  async append(jobId: string, type: JobEventType, data: Record<string, unknown>): Promise<number> {
    const k = this.keys;
    const terminal = TERMINAL_EVENTS.has(type) ? '1' : '0';
    return (await this.redis.eval(APPEND, 3, k.events(jobId), k.eventSeq(jobId), k.eventsDone(jobId), type, JSON.stringify(data), this.ttlS, terminal)) as number;
  }

  async hasEnded(jobId: string): Promise<boolean> {
    return (await this.redis.exists(this.keys.eventsDone(jobId))) === 1;
  }

  /** Events with id > after. */
  async since(jobId: string, after = 0): Promise<JobEvent[]> {
    const res = (await this.redis.xread('STREAMS', this.keys.events(jobId), `${after}-0`)) as [string, StreamEntries][] | null;
    return res ? parseEntries(res[0]![1]) : [];
  }

  /**
   * Replays events after `after`, then follows new ones until a terminal event. Yields null
   * after `idleMs` without events, so callers can send heartbeats and check on the job. A
   * blocking read needs its own connection; it is closed when the loop ends or `signal` aborts.
   */
  async *follow(jobId: string, after: number, idleMs: number, signal: AbortSignal): AsyncGenerator<JobEvent | null> {
    const conn = this.redis.duplicate();
    // Failures surface as a rejected read below; the listener only keeps ioredis from printing them.
    conn.on('error', () => {});
    const stop = () => conn.disconnect();
    signal.addEventListener('abort', stop, { once: true });
    try {
      while (!signal.aborted) {
        let res: [string, StreamEntries][] | null;
        try {
          res = (await conn.xread('COUNT', 100, 'BLOCK', idleMs, 'STREAMS', this.keys.events(jobId), `${after}-0`)) as [string, StreamEntries][] | null;
        } catch (err) {
          if (signal.aborted) return;
          throw err;
        }
        if (!res) {
          yield null;
          continue;
        }
        for (const event of parseEntries(res[0]![1])) {
          after = event.id;
          yield event;
          if (TERMINAL_EVENTS.has(event.type)) return;
        }
      }
    } finally {
      signal.removeEventListener('abort', stop);
      conn.disconnect();
    }
  }
}
