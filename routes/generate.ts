import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type, type Static } from 'typebox';
import { SAMPLER_NAMES } from '../src/diffusion/sampler.js';
import { MAX_PROMPT_CHARS } from '../src/engine/conditioning.js';
import { LIMITS } from '../src/engine/engine.js';
import { waitForEnd } from '../src/service/follow.js';
import { jobView } from '../src/service/job-view.js';
import { rateLimit } from '../src/service/rate-limit.js';
import { sendJobEvents } from '../src/service/sse.js';
import { submitJob, type JobSpec } from '../src/service/submit.js';
import { JobRef, problems } from './schemas.js';

const Prompt = (description: string) => Type.String({ maxLength: MAX_PROMPT_CHARS, description });

export const CacheChoice = Type.Object({
  policy: Type.String({ minLength: 1, maxLength: 64, pattern: '^[a-z-]+(:[0-9.,]+)?$', description: 'none | fora:N | delta-dit:b,k[,N] | teacache:T | first-block:T | router' }),
  router: Type.Optional(Type.String({ maxLength: 128, description: 'With policy "router": a router of the model, see GET /models' })),
  tau: Type.Optional(Type.Number({ exclusiveMinimum: 0, exclusiveMaximum: 1, description: 'Router threshold: compute a slot iff sigmoid(logit) > tau' })),
}, { additionalProperties: false });

export const GenerateBody = Type.Object({
  model: Type.String({ minLength: 1, maxLength: 128 }),
  class_label: Type.Optional(Type.Integer({ minimum: 0, description: 'Class-conditional models' })),
  prompt: Type.Optional(Prompt('Text-conditional models')),
  negative_prompt: Type.Optional(Prompt('Conditions the guidance rows of text models')),
  steps: Type.Optional(Type.Integer({ minimum: 1, maximum: LIMITS.maxSteps })),
  sampler: Type.Optional(Type.Enum([...SAMPLER_NAMES])),
  guidance_scale: Type.Optional(Type.Number({ minimum: 1, maximum: LIMITS.maxCfg, description: '1 disables classifier-free guidance' })),
  seed: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'Drawn at random when absent; the report echoes it' })),
  n: Type.Optional(Type.Integer({ minimum: 1, maximum: LIMITS.maxImages })),
  cache: Type.Optional(CacheChoice),
  output_format: Type.Optional(Type.Enum(['png', 'webp'])),
}, { additionalProperties: false });

const GenerateHeaders = Type.Object({
  'idempotency-key': Type.Optional(Type.String({ minLength: 1, maxLength: 255, description: 'Same key and body: same job; same key, other body: 422' })),
  prefer: Type.Optional(Type.String({ description: 'wait=N: answer 200 with the result if the job ends within N seconds' })),
  accept: Type.Optional(Type.String({ description: 'text/event-stream streams the job\'s events on this request' })),
});

export function jobSpecOf(body: Static<typeof GenerateBody>): JobSpec {
  return {
    model: body.model,
    request: {
      classLabel: body.class_label, prompt: body.prompt, negativePrompt: body.negative_prompt, steps: body.steps,
      sampler: body.sampler, cfg: body.guidance_scale, seed: body.seed, n: body.n,
    },
    cache: body.cache,
    outputFormat: body.output_format ?? 'png',
  };
}

/** `Prefer: wait=N` (RFC 7240), capped. */
export function preferredWait(prefer: string | undefined, maxS: number): number | null {
  const m = /(?:^|[;,\s])wait=(\d+)/.exec(prefer ?? '');
  return m ? Math.min(Number(m[1]), maxS) : null;
}

export const generateRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.post('/generate', {
    onRequest: rateLimit,
    schema: {
      summary: 'Queue an image generation job',
      body: GenerateBody,
      headers: GenerateHeaders,
      response: {
        200: { description: 'Finished within Prefer: wait (or, with Accept: text/event-stream, the event stream)', ...JobRef },
        202: { description: 'Queued: poll Location or follow urls.events', ...JobRef },
        ...problems(400, 409, 413, 422, 429, 503),
      },
    },
  }, async (request, reply) => {
    const s = app.services;
    const { id, replayed } = await submitJob(s, jobSpecOf(request.body), { idempotencyKey: request.headers['idempotency-key'], requestId: request.id });
    reply.header('location', `/jobs/${id}`);
    if (replayed) reply.header('idempotent-replayed', 'true');
    if (request.headers.accept?.includes('text/event-stream')) return sendJobEvents(s, reply, id, 0);
    const wait = preferredWait(request.headers.prefer, s.config.maxWaitS);
    const ended = wait !== null && (await waitForEnd(s, id, wait));
    if (wait !== null) reply.header('preference-applied', `wait=${wait}`);
    const view = await jobView(s, id);
    return reply.status(ended ? 200 : 202).send(view!);
  });
};
