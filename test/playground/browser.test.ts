import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import type { Redis } from 'ioredis';
import { chromium, type Browser, type Page } from 'playwright-core';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/service/app.js';
import { ModelCatalog } from '../../src/service/catalog.js';
import { createMetrics } from '../../src/service/metrics.js';
import { connectRedis, deletePrefix } from '../../src/service/redis.js';
import { psnrRgba } from '../../web/playground/psnr.js';
import { EnginePool } from '../../workers/engines.js';
import { startWorker, type HarmonicaWorker } from '../../workers/worker.js';

/**
 * Acceptance test of the playground: Debian's chromium (apt-get install -y chromium; .ci/run
 * installs it) drives the page against a real API and a real worker on the bundled dit-mnist
 * (and pixart-mnist for the text controls),
 * over the local Redis. It writes docs/img/playground.png.
 */
const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'];
const SCREENSHOT = new URL('../../docs/img/playground.png', import.meta.url);
const STEPS = 6;

const hasChromium = existsSync(CHROMIUM);
if (!hasChromium) console.warn(`playground browser test skipped: ${CHROMIUM} is missing (apt-get install -y chromium)`);

describe.skipIf(!hasChromium)(`the playground in chromium${hasChromium ? '' : ` (skipped: ${CHROMIUM} is missing; apt-get install -y chromium)`}`, () => {
  let app: FastifyInstance;
  let redis: Redis;
  let worker: HarmonicaWorker;
  let browser: Browser;
  let page: Page;
  let base = '';
  const prefix = `test-browser-${randomUUID().slice(0, 8)}`;
  const pageErrors: string[] = [];
  /** Last-Event-ID of each events request, as the server received it. */
  const resumedFrom: (string | undefined)[] = [];
  /** The router the page shows first (the model's first), as the API describes it. */
  let router = { id: '', steps: 0, sublayers: [] as string[] };

  beforeAll(async () => {
    redis = connectRedis();
    const catalog = await ModelCatalog.load(['dit-mnist', 'pixart-mnist']);
    const metrics = createMetrics();
    const config = { prefix, heartbeatMs: 500 };
    // One ORT thread: the machine may be busy with other work, and the test needs no speed.
    const engines = new EnginePool(catalog, { threads: 1 });
    // Open the model and run its sessions once, so the two jobs' timings compare warm runs.
    await (await engines.get('dit-mnist')).generate({ classLabel: 0, steps: 2, seed: 0 });
    app = await buildApp({ models: catalog, redis, metrics, config });
    worker = await startWorker({ redis, models: catalog, metrics, engines, config });
    app.addHook('onRequest', async (request) => {
      if (request.url.endsWith('/events')) resumedFrom.push(request.headers['last-event-id'] as string | undefined);
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    const models = (await (await fetch(`${base}/models`)).json()) as { models: { id: string; routers: string[] }[] };
    const first = models.models.find((m) => m.id === 'dit-mnist')!.routers[0];
    if (!first) throw new Error('the bundled dit-mnist ships no router: the page\'s router view cannot be tested');
    router = (await (await fetch(`${base}/models/dit-mnist/routers/${first}`)).json()) as typeof router;
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on('pageerror', (err) => pageErrors.push(err.message));
    page.on('console', (msg) => {
      if (msg.type() === 'error') pageErrors.push(msg.text());
    });
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await app?.close();
    await worker?.close(0);
    if (redis) {
      await deletePrefix(redis, prefix);
      await redis.quit();
    }
  });

  it('generates, shows progress live, the two images, the comparison and a router', async () => {
    // The first event stream is cut after event 1, as a load balancer or a restarted replica
    // would: EventSource must reconnect with Last-Event-ID and the page carry on.
    let cut = false;
    await page.route('**/jobs/*/events', async (route) => {
      if (cut) return route.continue();
      cut = true;
      return route.fulfill({ status: 200, contentType: 'text/event-stream', body: 'retry: 100\n\nid: 1\nevent: queued\ndata: {}\n\n' });
    });

    await page.goto(`${base}/`);
    await page.waitForSelector('body[data-ready="true"]');
    expect(await page.textContent('#router-summary')).toContain(router.id);
    expect(await page.getAttribute('#router-map', 'aria-label')).toContain(`${router.steps} steps by ${router.sublayers.length} sublayers`);

    await page.selectOption('#model', 'dit-mnist');
    await page.selectOption('#class-label', '7');
    await page.selectOption('#policy', 'fora');
    await page.fill('#policy-args', '2');
    await page.fill('#steps', String(STEPS));
    await page.fill('#seed', '1');
    expect(await page.isChecked('#compare')).toBe(true);
    // Every value the step counter shows, in order.
    await page.evaluate(() => {
      const seen: string[] = [];
      (window as unknown as { stepsSeen: string[] }).stepsSeen = seen;
      const counter = document.getElementById('step-counter')!;
      new MutationObserver((records) => {
        for (const r of records) for (const n of r.addedNodes) seen.push(n.textContent ?? '');
      }).observe(counter, { childList: true });
    });

    // Submitted from the keyboard: Enter in a field of the form.
    await page.focus('#seed');
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.getElementById('psnr')!.textContent !== '–' || document.getElementById('form-error')!.textContent !== '', null, { timeout: 90_000 });
    expect(await page.textContent('#form-error')).toBe('');

    // Progress: every step's event reached the counter, the table and the map.
    const seen = await page.evaluate(() => (window as unknown as { stepsSeen: string[] }).stepsSeen);
    expect(seen.filter((s) => s !== `0 / ${STEPS}`)).toEqual(Array.from({ length: STEPS }, (_, i) => `${i + 1} / ${STEPS}`));
    const masks = await page.$$eval('#step-table tbody td.mask', (cells) => cells.map((c) => c.textContent));
    expect(masks).toEqual(Array.from({ length: STEPS }, (_, i) => (i % 2 === 0 ? '1' : '0').repeat(16)));
    expect(await page.getAttribute('#step-map', 'aria-label')).toContain(`${STEPS} of ${STEPS} steps over 16 sublayers: 48 computed, 48 reused`);
    expect(await page.textContent('#cur')).toBe('0.500');

    // The event stream was resumed after the cut, from the last event the page had.
    expect(resumedFrom).toContain('1');

    // The two images, and the comparison the page computed.
    const sources = await page.$$eval('.pair img', (imgs) => (imgs as HTMLImageElement[]).map((img) => ({ src: img.getAttribute('src') ?? '', width: img.naturalWidth, hidden: img.hidden })));
    expect(sources).toHaveLength(2);
    for (const s of sources) expect(s).toMatchObject({ src: expect.stringMatching(/^\/jobs\/[\w-]+\/images\/0$/), width: 32, hidden: false });
    const [cachedId, baselineId] = sources.map((s) => s.src.split('/')[2]!);
    const cached = (await app.inject({ method: 'GET', url: `/jobs/${cachedId}` })).json().result.report;
    const baseline = (await app.inject({ method: 'GET', url: `/jobs/${baselineId}` })).json().result.report;
    expect(cached).toMatchObject({ policy: 'fora:2', seed: 1, steps: STEPS });
    expect(baseline).toMatchObject({ policy: 'none', seed: 1, steps: STEPS });
    expect(await page.textContent('#speedup')).toBe(`${(baseline.inference_ms / cached.inference_ms).toFixed(2)}×`);
    const rgba = async (id: string) => new Uint8ClampedArray(await sharp((await app.inject({ method: 'GET', url: `/jobs/${id}/images/0` })).rawPayload).ensureAlpha().raw().toBuffer());
    const psnr = psnrRgba(await rgba(cachedId!), await rgba(baselineId!));
    expect(await page.textContent('#psnr')).toBe(Number.isFinite(psnr) ? `${psnr.toFixed(2)} dB` : '∞ (identical)');
    expect(await page.textContent('#status')).toMatch(/^Done: /);

    // The router heat map follows the threshold field.
    await page.fill('#router-tau', '0.9');
    await page.click('#router-show');
    await page.waitForFunction(() => document.getElementById('router-summary')!.textContent!.includes('tau 0.9'));
    expect(await page.$$eval('#router-table tbody tr', (rows) => rows.length)).toBe(router.steps);
    await page.fill('#router-tau', '0.1');
    await page.click('#router-show');
    await page.waitForFunction(() => document.getElementById('router-summary')!.textContent!.includes('tau 0.1'));

    expect(pageErrors).toEqual([]);
    await mkdir(new URL('.', SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT.pathname, fullPage: true });
  }, 120_000);

  it('follows a router\'s step count and shows the API\'s reason for a refused request', async () => {
    await page.selectOption('#policy', 'router');
    await page.waitForFunction((steps) => (document.getElementById('steps') as HTMLInputElement).value === String(steps), router.steps);
    expect(await page.isVisible('#tau')).toBe(true);
    expect(await page.isVisible('#policy-args')).toBe(false);
    await page.fill('#steps', String(STEPS));
    await page.click('#generate');
    await page.waitForFunction(() => document.getElementById('form-error')!.textContent !== '');
    expect(await page.textContent('#form-error')).toContain(`trained for ${router.steps} steps, the request has ${STEPS}`);
    expect(await page.isEnabled('#generate')).toBe(true);
  }, 30_000);

  it('a text model swaps the class for a prompt and generates from it', async () => {
    pageErrors.length = 0; // the refused request before logged its 400
    await page.selectOption('#model', 'pixart-mnist');
    expect(await page.isVisible('#class-field')).toBe(false);
    expect(await page.isVisible('#prompt')).toBe(true);
    await page.fill('#prompt', 'a large 3 in the top right corner');
    await page.selectOption('#policy', 'fora');
    await page.fill('#policy-args', '2');
    await page.fill('#steps', '4');
    await page.fill('#seed', '2');
    const posted = page.waitForRequest((r) => r.method() === 'POST' && r.url().endsWith('/generate'));
    await page.click('#generate');
    expect((await posted).postDataJSON()).toMatchObject({ model: 'pixart-mnist', prompt: 'a large 3 in the top right corner', steps: 4 });
    await page.waitForFunction(() => /^Done: /.test(document.getElementById('status')!.textContent ?? '') || document.getElementById('form-error')!.textContent !== '', null, { timeout: 60_000 });
    expect(await page.textContent('#form-error')).toBe('');
    const src = await page.getAttribute('#cached-image', 'src');
    const job = (await app.inject({ method: 'GET', url: `/jobs/${src!.split('/')[2]}` })).json();
    expect(job).toMatchObject({ model: 'pixart-mnist', state: 'completed', result: { report: { policy: 'fora:2', steps: 4, seed: 2 } } });
    expect(pageErrors).toEqual([]);
  }, 90_000);
});
