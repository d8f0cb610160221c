import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { generateRoutes } from './generate.js';
import { jobRoutes } from './jobs.js';
import { modelRoutes } from './models.js';
import { openaiRoutes } from './openai.js';
import { opsRoutes } from './ops.js';
import { playgroundRoutes } from './playground.js';
import { SHARED_SCHEMAS } from './schemas.js';

/** Every route group; buildApp and the OpenAPI writer both register exactly this. */
export const routes: FastifyPluginAsyncTypebox = async (app) => {
  for (const schema of SHARED_SCHEMAS) app.addSchema(schema);
  await app.register(generateRoutes);
  await app.register(jobRoutes);
  await app.register(modelRoutes);
  await app.register(opsRoutes);
  await app.register(openaiRoutes);
  await app.register(playgroundRoutes);
};
