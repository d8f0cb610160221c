import { Type, type TSchema } from 'typebox';

/** Schemas several route groups share; each group keeps its own request schemas beside its handlers. */

export const Problem = Type.Object({
  type: Type.String(),
  title: Type.String(),
  status: Type.Integer(),
  detail: Type.String(),
  instance: Type.String(),
  code: Type.String({ description: 'Stable error code, e.g. BAD_INPUT, UNKNOWN_MODEL, ROUTER_MISMATCH, OVERLOADED' }),
  request_id: Type.String(),
  errors: Type.Optional(Type.Array(Type.Object({ path: Type.String(), message: Type.String() }))),
}, { $id: 'Problem', description: 'RFC 9457 problem details' });

/** Error responses, documented as application/problem+json. */
export function problems(...statuses: number[]): Record<number, { description: string; content: { 'application/problem+json': { schema: TSchema } } }> {
  return Object.fromEntries(statuses.map((s) => [s, { description: 'Problem details', content: { 'application/problem+json': { schema: Type.Ref('Problem') } } }]));
}

export const Report = Type.Object({
  model: Type.String(),
  model_sha256: Type.String(),
  policy: Type.String(),
  router: Type.Union([Type.String(), Type.Null()]),
  tau: Type.Union([Type.Number(), Type.Null()]),
  sampler: Type.String(),
  steps: Type.Integer(),
  guidance_scale: Type.Number(),
  seed: Type.Integer(),
  n: Type.Integer(),
  queue_wait_ms: Type.Number(),
  time_to_first_step_ms: Type.Number(),
  steps_ms: Type.Array(Type.Number()),
  inference_ms: Type.Number(),
  encode_ms: Type.Number(),
  cur: Type.Number({ description: 'Cache usage ratio: reused slots / (steps x slots)' }),
  mac_speedup: Type.Number(),
  computed_slots: Type.Integer(),
  reused_slots: Type.Integer(),
  machine: Type.String(),
  worker: Type.String(),
  attempt: Type.Integer(),
  notes: Type.Record(Type.String(), Type.Unknown()),
}, { $id: 'Report', description: 'Latency and cache report of one job' });

export const JobResult = Type.Object({
  images: Type.Array(Type.Object({ index: Type.Integer(), url: Type.String(), content_type: Type.String(), bytes: Type.Integer() })),
  report: Type.Ref('Report'),
});

export const JobView = Type.Object({
  id: Type.String(),
  model: Type.Union([Type.String(), Type.Null()]),
  state: Type.Enum(['queued', 'running', 'completed', 'failed', 'canceled']),
  progress: Type.Union([Type.Object({ step: Type.Integer(), total: Type.Integer() }), Type.Null()]),
  created_at: Type.Union([Type.String(), Type.Null()]),
  started_at: Type.Union([Type.String(), Type.Null()]),
  finished_at: Type.Union([Type.String(), Type.Null()]),
  result: Type.Union([JobResult, Type.Null()]),
  error: Type.Union([Type.Object({ code: Type.String(), message: Type.String() }), Type.Null()]),
  urls: Type.Object({ self: Type.String(), events: Type.String(), cancel: Type.String() }),
}, { $id: 'Job' });

/** Registered once (routes/index.ts) and referenced by $ref: one components entry each in openapi.yaml. */
export const SHARED_SCHEMAS = [Problem, Report, JobView];

export const JobRef = Type.Ref('Job');

export const JobParams = Type.Object({ id: Type.String({ pattern: '^[A-Za-z0-9-]{1,64}$' }) });
