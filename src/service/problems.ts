import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { HarmonicaError, type ErrorCode } from '../util/errors.js';

/** An HTTP failure the routes raise on purpose (404, 409, 422, 429, 503, ...). */
export class HttpProblem extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly retryAfterS?: number,
  ) {
    super(message);
  }
}

/** Request mistakes are 400; the rest are the deployment's fault (a broken model package). */
const STATUS_OF: Record<ErrorCode, number> = {
  BAD_INPUT: 400, UNKNOWN_MODEL: 400, UNKNOWN_POLICY: 400, ROUTER_MISMATCH: 400, PROMPT_TOO_LONG: 400,
  BAD_CONFIG: 500, MISSING_WEIGHT: 500, WEIGHT_SHAPE: 500,
};

const TITLES: Record<number, string> = {
  400: 'Bad request', 404: 'Not found', 409: 'Conflict', 413: 'Request body too large', 415: 'Unsupported media type',
  422: 'Unprocessable request', 429: 'Too many requests', 500: 'Internal error', 503: 'Service unavailable', 504: 'Gateway timeout',
};

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  instance: string;
  code: string;
  request_id: string;
  errors?: { path: string; message: string }[];
}

/** The one place that turns any error into application/problem+json (RFC 9457). */
export function sendProblem(error: unknown, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  let status = 500;
  let code = 'INTERNAL';
  let detail = 'internal error';
  let errors: Problem['errors'];
  const fe = error as FastifyError;
  if (error instanceof HttpProblem) {
    ({ status, code } = error);
    detail = error.message;
    if (error.retryAfterS !== undefined) reply.header('retry-after', String(error.retryAfterS));
  } else if (error instanceof HarmonicaError) {
    status = STATUS_OF[error.code];
    code = error.code;
    detail = error.message;
  } else if (fe.name === 'MaxRetriesPerRequestError' || fe.message === 'Connection is closed.') {
    // ioredis gave up: Redis is down or restarting.
    status = 503;
    code = 'REDIS_UNAVAILABLE';
    detail = 'the job store (Redis) does not answer; retry shortly';
    reply.header('retry-after', '5');
  } else if (fe.validation) {
    status = 400;
    code = 'BAD_INPUT';
    errors = fe.validation.map((v) => ({ path: `${fe.validationContext ?? ''}${v.instancePath}`, message: v.message ?? 'invalid' }));
    detail = fe.message;
  } else if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    // Fastify's own client errors: bad JSON, body too large, wrong content type.
    status = fe.statusCode;
    code = fe.code ?? 'BAD_REQUEST';
    detail = fe.message;
  }
  // Deliberate 503s (overload, no workers) are answers, not faults.
  if (status >= 500 && !(error instanceof HttpProblem)) request.log.error({ err: error }, 'request failed');
  const body: Problem = {
    type: `urn:harmonica:problem:${code.toLowerCase().replaceAll('_', '-')}`,
    title: TITLES[status] ?? 'Error', status, detail, instance: request.url, code, request_id: request.id,
    ...(errors ? { errors } : {}),
  };
  return reply.status(status).type('application/problem+json').send(body);
}
