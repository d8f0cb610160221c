import { Redis, type RedisOptions } from 'ioredis';

export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';

/**
 * A connection for BullMQ and our keys. `maxRetriesPerRequest: null` is what BullMQ workers
 * require (blocking commands must wait out a Redis restart rather than fail).
 */
export function connectRedis(url = DEFAULT_REDIS_URL, options: RedisOptions = {}): Redis {
  return new Redis(url, { maxRetriesPerRequest: null, ...options });
}

/** Resolves when Redis answers a PING, or throws a message that says how to start one. */
export async function checkRedis(url: string, timeoutMs = 3000): Promise<void> {
  const probe = new Redis(url, { lazyConnect: true, connectTimeout: timeoutMs, maxRetriesPerRequest: 0, retryStrategy: () => null });
  let cause: Error | undefined;
  probe.on('error', (err: Error) => (cause = err));
  try {
    await probe.connect();
    await probe.ping();
  } catch (err) {
    throw new Error(
      `Redis does not answer at ${url} (${(cause ?? (err as Error)).message}). Start one with ` +
        '`redis-server --daemonize yes --bind 127.0.0.1 --port 6379` (or `docker run -d -p 6379:6379 redis:7`), ' +
        'or point REDIS_URL / --redis at a running server.',
    );
  } finally {
    probe.disconnect();
  }
}

/** Deletes every key under `prefix:` (a benchmark's or a test's own namespace). */
export async function deletePrefix(redis: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    if (keys.length) await redis.del(...keys);
    cursor = next;
  } while (cursor !== '0');
}
