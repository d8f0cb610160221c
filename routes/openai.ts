import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { MAX_PROMPT_CHARS } from '../src/engine/conditioning.js';
import { LIMITS } from '../src/engine/engine.js';
import type { ModelEntry } from '../src/service/catalog.js';
import { waitForEnd } from '../src/service/follow.js';
import { jobView } from '../src/service/job-view.js';
import { HttpProblem } from '../src/service/problems.js';
import { rateLimit } from '../src/service/rate-limit.js';
import { submitJob, type JobSpec } from '../src/service/submit.js';
import { HarmonicaError } from '../src/util/errors.js';
import { problems } from './schemas.js';

/** The subset of OpenAI's images API that maps onto our jobs; other fields are accepted and ignored. */
const ImagesBody = Type.Object({
  prompt: Type.String({ minLength: 1, maxLength: MAX_PROMPT_CHARS, description: 'A caption, or for class-conditional models a class name or index' }),
  model: Type.Optional(Type.String({ maxLength: 128, description: 'Default: the first model served' })),
  n: Type.Optional(Type.Integer({ minimum: 1, maximum: LIMITS.maxImages })),
  size: Type.Optional(Type.String({ pattern: '^[0-9]{1,5}x[0-9]{1,5}$', description: 'Must be the model\'s size, e.g. 32x32' })),
  response_format: Type.Optional(Type.Enum(['b64_json', 'url'])),
  seed: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })),
});

const ImagesResponse = Type.Object({
  created: Type.Integer(),
  data: Type.Array(Type.Object({ b64_json: Type.Optional(Type.String()), url: Type.Optional(Type.String()) })),
});

/** A class-conditional model takes the prompt as a class index ("7") or a class name. */
function classOf(entry: ModelEntry, prompt: string): number {
  const text = prompt.trim().toLowerCase();
  const byName = (entry.manifest.classes ?? []).findIndex((name) => name.toLowerCase() === text);
  if (byName >= 0) return byName;
  if (/^\d+$/.test(text)) return Number(text);
  throw new HarmonicaError('BAD_INPUT', `${entry.id} is class-conditional: the prompt must be a class index or one of its class names (GET /models)`);
}

export const openaiRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.post('/v1/images/generations', {
    onRequest: rateLimit,
    schema: {
      summary: 'OpenAI-compatible image generation (synchronous, within the server\'s wait limit)',
      body: ImagesBody,
      response: { 200: ImagesResponse, ...problems(400, 409, 413, 422, 429, 500, 503, 504) },
    },
  }, async (request, reply) => {
    const s = app.services;
    const body = request.body;
    const entry = s.catalog.get(body.model ?? s.catalog.defaultId);
    const [, h, w] = entry.imageShape;
    if (body.size !== undefined && body.size !== `${w}x${h}`) throw new HarmonicaError('BAD_INPUT', `${entry.id} makes ${w}x${h} images, not ${body.size}`);
    const spec: JobSpec = {
      model: entry.id,
      request: { ...(entry.conditioning === 'class' ? { classLabel: classOf(entry, body.prompt) } : { prompt: body.prompt }), n: body.n, seed: body.seed },
      outputFormat: 'png',
    };
    const idempotencyKey = request.headers['idempotency-key'];
    const { id } = await submitJob(s, spec, { idempotencyKey: typeof idempotencyKey === 'string' ? idempotencyKey : undefined, requestId: request.id });
    reply.header('location', `/jobs/${id}`);
    if (!(await waitForEnd(s, id, s.config.maxWaitS))) throw new HttpProblem(504, 'TIMEOUT', `job ${id} did not finish within ${s.config.maxWaitS} s; follow /jobs/${id}`);
    const view = (await jobView(s, id))!;
    if (view.state === 'canceled') throw new HttpProblem(409, 'CANCELED', `job ${id} was canceled`);
    if (!view.result) throw new HttpProblem(500, view.error?.code ?? 'INTERNAL', view.error?.message ?? `job ${id} failed`);
    const base = `${request.protocol}://${request.host}`;
    const data = await Promise.all(view.result.images.map(async (img) => {
      if (body.response_format === 'url') return { url: `${base}${img.url}` };
      const bytes = await s.results.image(id, img.index);
      if (!bytes) throw new HttpProblem(500, 'EXPIRED', `image ${img.index} of job ${id} is gone`);
      return { b64_json: bytes.toString('base64') };
    }));
    return { created: Math.floor(Date.now() / 1000), data };
  });
};
