import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyReply } from 'fastify';
import { playgroundAssets } from '../src/service/playground.js';

/**
 * Same-origin only: the page talks to this API and nothing else, with no inline script or
 * style, so a stricter policy than the browser default costs nothing.
 */
const CSP = "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

// Not part of the API: left out of openapi.yaml.
const hidden = { schema: { hide: true } };

const send = (reply: FastifyReply, type: string, body: string) =>
  reply.type(`${type}; charset=utf-8`).header('cache-control', 'no-cache').header('x-content-type-options', 'nosniff').send(body);

/** The web playground (web/playground/): a static page at / that uses only the public API. */
export const playgroundRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/', hidden, async (_request, reply) => send(reply.header('content-security-policy', CSP), 'text/html', (await playgroundAssets()).html));
  app.get('/playground/app.js', hidden, async (_request, reply) => send(reply, 'text/javascript', (await playgroundAssets()).script));
  app.get('/playground/style.css', hidden, async (_request, reply) => send(reply, 'text/css', (await playgroundAssets()).css));
};
