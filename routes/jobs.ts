import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { cancelJob } from '../src/service/cancel.js';
import { jobView } from '../src/service/job-view.js';
import { HttpProblem } from '../src/service/problems.js';
import { sendJobEvents } from '../src/service/sse.js';
import { JobParams, JobRef, problems } from './schemas.js';

const notFound = (id: string) => new HttpProblem(404, 'NOT_FOUND', `no job ${id} (unknown, or its results expired)`);

const EventsHeaders = Type.Object({
  'last-event-id': Type.Optional(Type.String({ pattern: '^[0-9]{1,10}$', description: 'Resume after this event id' })),
});

export const jobRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/jobs/:id', {
    schema: { summary: 'State, progress and result of a job', params: JobParams, response: { 200: JobRef, ...problems(404) } },
  }, async (request) => {
    const view = await jobView(app.services, request.params.id);
    if (!view) throw notFound(request.params.id);
    return view;
  });

  app.get('/jobs/:id/events', {
    schema: {
      summary: 'Server-sent events of a job: queued, started, progress, completed | failed | canceled',
      description: 'Event ids increase by one from 1; reconnect with Last-Event-ID to resume. Comment lines are heartbeats. '
        + 'A progress event\'s data is {step, total, step_ms, computed, reused, mask}: mask has one character per sublayer '
        + '(GET /models lists them in order), 1 computed and 0 reused at that step. completed carries {images, report}; failed and canceled {code, message}.',
      params: JobParams,
      headers: EventsHeaders,
      response: { 200: { description: 'text/event-stream', content: { 'text/event-stream': { schema: Type.String() } } }, ...problems(404) },
    },
  }, async (request, reply) => {
    const s = app.services;
    const { id } = request.params;
    if (!(await s.queue.getJob(id)) && (await s.events.since(id)).length === 0) throw notFound(id);
    return sendJobEvents(s, reply, id, Number(request.headers['last-event-id'] ?? 0));
  });

  app.get('/jobs/:id/images/:n', {
    schema: {
      summary: 'One image of a finished job (0-based)',
      params: Type.Object({ id: JobParams.properties.id, n: Type.String({ pattern: '^[0-9]{1,2}$' }) }),
      response: {
        200: { description: 'PNG or WebP bytes', content: { 'image/png': { schema: Type.Unsafe({ type: 'string', format: 'binary' }) }, 'image/webp': { schema: Type.Unsafe({ type: 'string', format: 'binary' }) } } },
        ...problems(404),
      },
    },
  }, async (request, reply) => {
    const s = app.services;
    const { id } = request.params;
    const index = Number(request.params.n);
    const image = (await jobView(s, id))?.result?.images.find((img) => img.index === index);
    const bytes = image ? await s.results.image(id, index) : null;
    if (!image || !bytes) throw new HttpProblem(404, 'NOT_FOUND', `job ${id} has no image ${index} (not finished, out of range, or expired)`);
    // Same job id and index: same bytes, until they expire.
    return reply.type(image.content_type).header('cache-control', `private, max-age=${s.config.resultTtlS}`).send(bytes);
  });

  app.post('/jobs/:id/cancel', {
    schema: {
      summary: 'Cancel a job: a waiting job is removed, a running one is stopped by its worker',
      params: JobParams,
      response: { 200: { description: 'Canceled', ...JobRef }, 202: { description: 'The worker holding the job is stopping it', ...JobRef }, ...problems(404, 409) },
    },
  }, async (request, reply) => {
    const { view, done } = await cancelJob(app.services, request.params.id);
    return reply.status(done ? 200 : 202).send(view);
  });
};
