/** Settings shared by the API and the workers; defaults suit one machine, compose overrides them. */
export interface ServiceConfig {
  /** Namespace of every Redis key (BullMQ's and ours), so deployments and test files never collide. */
  prefix: string;
  /** How long image bytes and finished jobs are kept. */
  resultTtlS: number;
  /** How long a job's event log is kept; longer than results so late SSE clients still see the end. */
  eventTtlS: number;
  /** Waiting jobs beyond this answer 503 with Retry-After instead of queueing unbounded work. */
  maxQueueDepth: number;
  retryAfterS: number;
  /** SSE comment lines at this interval keep proxies from closing idle streams. */
  heartbeatMs: number;
  /** Cap of `Prefer: wait=N` and of the synchronous OpenAI-compatible route. */
  maxWaitS: number;
  /** Requests per client address and window on the submitting routes; null = off. */
  rateLimit: { max: number; windowS: number } | null;
}

export const DEFAULT_CONFIG: ServiceConfig = {
  prefix: 'harmonica',
  resultTtlS: 3600,
  eventTtlS: 86_400,
  maxQueueDepth: 100,
  retryAfterS: 10,
  heartbeatMs: 15_000,
  maxWaitS: 60,
  rateLimit: null,
};

/** BullMQ queue name. One queue for every model: see workers/worker.ts for why. */
export const QUEUE_NAME = 'generate';

/**
 * Largest request body. A 1 MB prompt still parses and is rejected by the schema with a 400
 * that names the field; anything larger is refused unread (413).
 */
export const BODY_LIMIT_BYTES = 1024 * 1024;
