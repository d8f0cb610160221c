import { randomUUID } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadRouter } from '../../src/cache/router.js';
import { BUNDLED_MODELS_DIR } from '../../src/engine/package.js';
import { buildApp } from '../../src/service/app.js';
import { connectRedis } from '../../src/service/redis.js';
import { psnrRgba } from '../../web/playground/psnr.js';

// The bundled model's manifest and routers: nothing here loads weights or runs a step.
let app: FastifyInstance;
let redis: Redis;
const prefix = `test-playground-${randomUUID().slice(0, 8)}`;
const get = (url: string) => app.inject({ method: 'GET', url });
/** Routers the bundled dit-mnist ships (a HarmoniCa one for 20 steps and an LTC one). */
const HARMONICA = 'harmonica-t20-b1e-3';
const LTC = 'ltc-t20-b2e-3';

beforeAll(async () => {
  redis = connectRedis();
  app = await buildApp({ models: ['dit-mnist'], redis, config: { prefix } });
});

afterAll(async () => {
  await app?.close();
  // The queue leaves its meta key behind.
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length) await redis.del(...keys);
  await redis.quit();
});

describe('the playground page', () => {
  it('is served at / with its script bundled from TypeScript and its stylesheet', async () => {
    const page = await get('/');
    expect(page.statusCode).toBe(200);
    expect(page.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(page.headers['content-security-policy']).toContain("default-src 'self'");
    expect(page.body).toContain('<script type="module" src="/playground/app.js">');
    const script = await get('/playground/app.js');
    expect(script.statusCode).toBe(200);
    expect(script.headers['content-type']).toBe('text/javascript; charset=utf-8');
    // Bundled: one module, no imports left for the browser to resolve.
    expect(script.body).toContain('EventSource');
    expect(script.body).not.toMatch(/\bimport\s*[{*"']/);
    const css = await get('/playground/style.css');
    expect(css.statusCode).toBe(200);
    expect(css.headers['content-type']).toBe('text/css; charset=utf-8');
  });

  it('labels every control (label for= an existing id)', async () => {
    const html = (await get('/')).body;
    const ids = new Set([...html.matchAll(/\sid="([^"]+)"/g)].map((m) => m[1]!));
    const labelled = new Set([...html.matchAll(/<label for="([^"]+)"/g)].map((m) => m[1]!));
    for (const id of labelled) expect(ids, `label for="${id}"`).toContain(id);
    const controls = [...html.matchAll(/<(input|select|textarea)\b[^>]*\sid="([^"]+)"/g)].map((m) => m[2]!);
    expect(controls.length).toBeGreaterThan(10);
    for (const id of controls) expect(labelled, `#${id} has a label`).toContain(id);
    expect(html).toMatch(/id="status" role="status" aria-live="polite"/);
  });

  it('leaves the API routes alone: /docs, /healthz, unknown paths', async () => {
    expect((await get('/healthz')).json()).toEqual({ status: 'ok' });
    const docs = await get('/docs');
    expect(docs.statusCode).toBe(200);
    // The page is not part of the API description.
    expect(docs.body).not.toContain('/playground/app.js');
    expect((await get('/nothing-here')).statusCode).toBe(404);
  });
});

describe('GET /models for the page', () => {
  it('lists each model\'s sublayers in slot order', async () => {
    const model = (await get('/models')).json().models[0];
    expect(model.sublayers).toHaveLength(16);
    expect(model.sublayers.slice(0, 3)).toEqual(['blocks.0.attn', 'blocks.0.mlp', 'blocks.1.attn']);
    const shipped = (await readdir(join(BUNDLED_MODELS_DIR, 'dit-mnist', 'routers'))).map((f) => f.replace(/\.json$/, ''));
    expect([...model.routers].sort()).toEqual(shipped.sort());
    expect(model.routers).toContain(HARMONICA);
  });
});

describe('GET /models/:model/routers/:router', () => {
  const routerFile = (name: string) => join(BUNDLED_MODELS_DIR, 'dit-mnist', 'routers', `${name}.json`);

  it('returns the artifact\'s logits and the decisions the router policy takes', async () => {
    const res = await get(`/models/dit-mnist/routers/${HARMONICA}`);
    expect(res.statusCode).toBe(200);
    const view = res.json();
    const artifact = JSON.parse(await readFile(routerFile(HARMONICA), 'utf8'));
    expect(view).toMatchObject({ id: HARMONICA, model: 'dit-mnist', method: 'harmonica', steps: 20, sampler: 'ddim', tau: artifact.tau, default_tau: artifact.tau });
    expect(view.sublayers).toEqual(artifact.sublayers);
    expect(view.logits).toEqual(artifact.logits);
    const policy = loadRouter(routerFile(HARMONICA));
    expect(view.decisions).toEqual(artifact.logits.map((_: unknown, i: number) => policy.decide(i).map((c) => (c ? '1' : '0')).join('')));
    expect(view.decisions[0]).toBe('1'.repeat(16));
    const reused = view.decisions.join('').split('').filter((c: string) => c === '0').length;
    expect(view.cur).toBeCloseTo(reused / (20 * 16), 12);
  });

  it('takes the decisions at another tau', async () => {
    const low = (await get(`/models/dit-mnist/routers/${HARMONICA}?tau=0.01`)).json();
    const high = (await get(`/models/dit-mnist/routers/${HARMONICA}?tau=0.99`)).json();
    expect(low.tau).toBe(0.01);
    expect(high.tau).toBe(0.99);
    expect(high.cur).toBeGreaterThan(low.cur);
  });

  it('shows an LTC router recomputing everything where LTC resets its cache (even steps at T = 20)', async () => {
    const view = (await get(`/models/dit-mnist/routers/${LTC}`)).json();
    expect(view.method).toBe('ltc');
    for (let step = 0; step < 20; step += 2) expect(view.decisions[step]).toBe('1'.repeat(16));
  });

  it('answers problems for unknown routers, models, bad tau and path tricks', async () => {
    const unknown = await get('/models/dit-mnist/routers/nope');
    expect(unknown.statusCode).toBe(404);
    expect(unknown.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(unknown.json().detail).toContain(HARMONICA);
    expect((await get(`/models/other/routers/${HARMONICA}`)).json()).toMatchObject({ status: 400, code: 'UNKNOWN_MODEL' });
    expect((await get(`/models/dit-mnist/routers/${HARMONICA}?tau=2`)).statusCode).toBe(400);
    expect((await get(`/models/dit-mnist/routers/${HARMONICA}?tau=0.0`)).json()).toMatchObject({ status: 400, code: 'BAD_INPUT' });
    expect((await get(`/models/dit-mnist/routers/${HARMONICA}?tau=0.5&x=1`)).statusCode).toBe(400);
    expect((await get('/models/dit-mnist/routers/..%2F..%2Fmanifest')).statusCode).toBe(400);
  });
});

describe('psnrRgba (the page\'s PSNR)', () => {
  it('is Infinity for identical images and 10 log10(255^2 / mse) otherwise, alpha ignored', () => {
    const a = new Uint8ClampedArray([10, 10, 10, 255, 200, 200, 200, 255]);
    expect(psnrRgba(a, a)).toBe(Infinity);
    const b = new Uint8ClampedArray([12, 12, 12, 0, 198, 198, 198, 255]);
    expect(psnrRgba(a, b)).toBeCloseTo(10 * Math.log10((255 * 255) / 4), 10);
    expect(() => psnrRgba(a, a.subarray(0, 4))).toThrow(/differ in size/);
  });
});
