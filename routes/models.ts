import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { policyNames } from '../src/cache/index.js';
import { SAMPLER_NAMES } from '../src/diffusion/sampler.js';

const Model = Type.Object({
  id: Type.String(),
  family: Type.String(),
  conditioning: Type.Enum(['class', 'text']),
  classes: Type.Union([Type.Array(Type.String()), Type.Null()]),
  image_shape: Type.Array(Type.Integer(), { description: '[channels, height, width]' }),
  defaults: Type.Object({ sampler: Type.String(), steps: Type.Integer(), guidance_scale: Type.Number() }),
  routers: Type.Array(Type.String()),
  sha256: Type.String(),
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
      routers: m.routers, sha256: m.sha256,
    })),
    policies: policyNames().sort(),
    samplers: [...SAMPLER_NAMES],
  }));
};
