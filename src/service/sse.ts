import { PassThrough } from 'node:stream';
import type { FastifyReply } from 'fastify';
import type { JobEvent } from './events.js';
import { jobEvents } from './follow.js';
import type { Services } from './services.js';

/** How long an EventSource waits before reconnecting (it then sends Last-Event-ID). */
const RETRY_MS = 3000;

export function formatEvent(e: JobEvent): string {
  return `id: ${e.id}\nevent: ${e.type}\ndata: ${JSON.stringify(e.data)}\n\n`;
}

/**
 * Streams a job's events as text/event-stream from event id `after` (0 = from the start).
 * Headers keep proxies from buffering or caching; comment lines are the heartbeats; the
 * blocking Redis read is closed when the client goes away.
 */
export function sendJobEvents(s: Services, reply: FastifyReply, id: string, after: number): FastifyReply {
  const ac = new AbortController();
  const out = new PassThrough();
  reply.raw.on('close', () => ac.abort());
  s.closing.addEventListener('abort', () => ac.abort(), { once: true, signal: ac.signal });
  out.on('close', () => ac.abort());
  void (async () => {
    try {
      out.write(`retry: ${RETRY_MS}\n\n`);
      for await (const event of jobEvents(s, id, after, s.config.heartbeatMs, ac.signal)) {
        out.write(event ? formatEvent(event) : ': heartbeat\n\n');
      }
    } catch (err) {
      reply.log.warn({ err, job: id }, 'event stream failed');
    } finally {
      out.end();
    }
  })();
  return reply
    .status(200)
    .header('content-type', 'text/event-stream; charset=utf-8')
    .header('cache-control', 'no-cache, no-transform')
    .header('x-accel-buffering', 'no')
    .send(out);
}
