import type { FastifyRequest } from 'fastify';
import { HttpProblem } from './problems.js';

/**
 * Fixed-window request count per client address, in Redis so that every API replica shares
 * it. An onRequest hook on the submitting routes: floods are refused before bodies are parsed.
 */
export async function rateLimit(request: FastifyRequest): Promise<void> {
  const s = request.server.services;
  const limit = s.config.rateLimit;
  if (!limit) return;
  const nowS = Date.now() / 1000;
  const window = Math.floor(nowS / limit.windowS);
  const key = s.keys.rate(request.ip, window);
  const count = await s.redis.incr(key);
  if (count === 1) await s.redis.expire(key, limit.windowS);
  if (count > limit.max) {
    const retryAfter = Math.max(1, Math.ceil((window + 1) * limit.windowS - nowS));
    throw new HttpProblem(429, 'RATE_LIMITED', `more than ${limit.max} requests in ${limit.windowS} s from ${request.ip}`, retryAfter);
  }
}
