import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { policyNames } from '../src/cache/index.js';
import { DEFAULT_TAU, loadRouter, packageRouterPath } from '../src/cache/router.js';
import { SAMPLER_NAMES } from '../src/diffusion/sampler.js';
import { decisionMask } from '../src/service/job.js';
import { HttpProblem } from '../src/service/problems.js';
import { problems } from './schemas.js';

const Model = Type.Object({
  id: Type.String(),
  family: Type.String(),
  conditioning: Type.Enum(['class', 'text']),
  classes: Type.Union([Type.Array(Type.String()), Type.Null()]),
  image_shape: Type.Array(Type.Integer(), { description: '[channels, height, width]' }),
  defaults: Type.Object({ sampler: Type.String(), steps: Type.Integer(), guidance_scale: Type.Number() }),
  routers: Type.Array(Type.String()),
  sublayers: Type.Array(Type.String(), { description: 'The cacheable sublayers (slots) in order: the order of progress events\' mask and of router rows' }),
  sha256: Type.String(),
});

const RouterParams = Type.Object({
  model: Type.String({ minLength: 1, maxLength: 128 }),
  // A file name inside the package's routers/, never a path (same rule as cache-choice.ts).
  router: Type.String({ pattern: '^[\\w][\\w.-]{0,127}$' }),
});

const RouterQuery = Type.Object({
  tau: Type.Optional(Type.String({ pattern: '^0?\\.[0-9]+$', description: 'Threshold for `decisions`, in (0, 1); default: the router\'s own' })),
}, { additionalProperties: false });

const RouterView = Type.Object({
  id: Type.String(),
  model: Type.String(),
  method: Type.Enum(['harmonica', 'ltc']),
  sampler: Type.String(),
  steps: Type.Integer(),
  cfg_scale: Type.Number(),
  tau: Type.Number({ description: 'The threshold `decisions` were taken at' }),
  default_tau: Type.Number({ description: 'The router\'s own threshold (what requests without tau use)' }),
  sublayers: Type.Array(Type.String()),
  logits: Type.Array(Type.Array(Type.Number()), { description: '[steps][sublayers]: slot s computes at step i iff sigmoid(logit) > tau' }),
  decisions: Type.Array(Type.String(), { description: 'Per step, one character per sublayer: 1 computed, 0 reused (the first step always computes; LTC routers compute everything where LTC resets its cache: steps 0, 2, 4, ... for an even step count)' }),
  cur: Type.Number({ description: 'Cache usage ratio of these decisions: reused / (steps x sublayers)' }),
});

export const modelRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/models', {
    schema: {
      summary: 'Models served, with their routers and the policies and samplers requests may name',
      response: { 200: Type.Object({ models: Type.Array(Model), policies: Type.Array(Type.String()), samplers: Type.Array(Type.String()) }) },
    },
  }, async () => ({
    models: app.services.catalog.list().map((m) => ({
      id: m.id, family: m.manifest.family, conditioning: m.conditioning, classes: m.manifest.classes ?? null, image_shape: m.imageShape,
      defaults: { sampler: m.manifest.defaults.sampler, steps: m.manifest.defaults.steps, guidance_scale: m.manifest.defaults.cfg },
      routers: m.routers, sublayers: m.denoiser.slots.map((s) => s.name), sha256: m.sha256,
    })),
    policies: policyNames().sort(),
    samplers: [...SAMPLER_NAMES],
  }));

  app.get('/models/:model/routers/:router', {
    schema: {
      summary: 'A router of a model: its logits and the cache decisions they make, per step and sublayer',
      params: RouterParams,
      querystring: RouterQuery,
      response: { 200: RouterView, ...problems(400, 404) },
    },
  }, async (request) => {
    const entry = app.services.catalog.get(request.params.model);
    const name = request.params.router;
    if (!entry.routers.includes(name)) throw new HttpProblem(404, 'NOT_FOUND', `model ${entry.id} has no router "${name}" (it has: ${entry.routers.join(', ') || 'none'})`);
    const tau = request.query.tau === undefined ? undefined : Number(request.query.tau);
    if (tau !== undefined && !(tau > 0 && tau < 1)) throw new HttpProblem(400, 'BAD_INPUT', `tau must be in (0, 1), got ${request.query.tau}`);
    // The policy itself decides, so the view shows exactly what a request with this router does.
    const policy = loadRouter(packageRouterPath(entry.dir, name), tau);
    const a = policy.artifact;
    const decisions = a.logits.map((_, step) => policy.decide(step));
    const reused = decisions.flat().filter((computed) => !computed).length;
    return {
      id: name, model: a.model.id, method: a.method, sampler: a.sampler, steps: a.steps, cfg_scale: a.cfgScale,
      tau: policy.tau, default_tau: a.tau ?? DEFAULT_TAU, sublayers: a.sublayers, logits: a.logits,
      decisions: decisions.map(decisionMask), cur: reused / Math.max(1, a.steps * a.sublayers.length),
    };
  });
};
