import { writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDenoiser } from '../../src/models/denoiser.js';
import { tinyDitPackage } from '../helpers/packages.js';
import { createStack, parseSse, type Stack } from './stack.js';

let stack: Stack;
const post = (body: object, headers: Record<string, string> = {}) => stack.app.inject({ method: 'POST', url: '/generate', payload: body, headers });

beforeAll(async () => {
  const pkg = await tinyDitPackage(3, 'tiny-dit');
  // A router trained "for" this model: 4 steps, every slot reused after step 0 except step 2.
  const slots = createDenoiser(pkg.manifest.family, pkg.manifest.config).slots.map((s) => s.name);
  const logits = [0, 1, 2, 3].map((step) => slots.map(() => (step === 2 ? 5 : -5)));
  await mkdir(join(pkg.dir, 'routers'));
  await writeFile(join(pkg.dir, 'routers', 'good.json'), JSON.stringify({
    format: 'harmonica-router/1', method: 'harmonica', model: { id: pkg.manifest.id, sha256: pkg.sha256 }, sampler: 'ddim', steps: 4, cfgScale: 1.5, sublayers: slots, logits, tau: 0.1,
  }));
  stack = await createStack('generate', {}, pkg);
  await stack.worker();
});

afterAll(async () => {
  await stack?.close();
});

describe('POST /generate', () => {
  let jobId = '';

  it('streams the job on the same request with Accept: text/event-stream, events in order', async () => {
    const res = await post({ model: 'tiny-dit', class_label: 3, steps: 4, seed: 1, n: 2, cache: { policy: 'fora:2' } }, { accept: 'text/event-stream' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/event-stream/);
    expect(res.headers.location).toMatch(/^\/jobs\//);
    jobId = String(res.headers.location).slice('/jobs/'.length);
    const events = parseSse(res.body);
    expect(events.map((e) => e.event)).toEqual(['queued', 'started', 'progress', 'progress', 'progress', 'progress', 'completed']);
    expect(events.map((e) => e.id)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    const progress = events.filter((e) => e.event === 'progress').map((e) => e.data);
    expect(progress.map((p) => p.step)).toEqual([1, 2, 3, 4]);
    expect(progress.map((p) => [p.computed, p.reused])).toEqual([[4, 0], [0, 4], [4, 0], [0, 4]]);
    // One character per sublayer, in the order GET /models lists them: 1 computed, 0 reused.
    expect(progress.map((p) => p.mask)).toEqual(['1111', '0000', '1111', '0000']);
    for (const p of progress) expect(p).toMatchObject({ total: 4, step_ms: expect.any(Number) });
    const completed = events.at(-1)!.data as { images: { url: string }[]; report: Record<string, unknown> };
    expect(completed.images.map((i) => i.url)).toEqual([`/jobs/${jobId}/images/0`, `/jobs/${jobId}/images/1`]);
    expect(completed.report).toMatchObject({ model: 'tiny-dit', seed: 1, steps: 4, n: 2, cur: 0.5, computed_slots: 8, reused_slots: 8, policy: 'fora:2' });
  });

  it('keeps the result: GET /jobs/:id with the full report, images as PNG bytes', async () => {
    const view = (await stack.app.inject({ method: 'GET', url: `/jobs/${jobId}` })).json();
    expect(view).toMatchObject({ id: jobId, model: 'tiny-dit', state: 'completed', progress: { step: 4, total: 4 }, error: null });
    const report = view.result.report;
    for (const key of ['queue_wait_ms', 'time_to_first_step_ms', 'inference_ms', 'encode_ms', 'mac_speedup']) expect(report[key], key).toBeGreaterThan(0);
    expect(report.steps_ms).toHaveLength(4);
    expect(report).toMatchObject({ sampler: 'ddim', guidance_scale: 1.5, model_sha256: stack.pkg.sha256, router: null, attempt: 1, machine: expect.any(String), worker: expect.any(String) });
    const image = await stack.app.inject({ method: 'GET', url: `/jobs/${jobId}/images/1` });
    expect(image.statusCode).toBe(200);
    expect(image.headers['content-type']).toBe('image/png');
    expect(await sharp(image.rawPayload).metadata()).toMatchObject({ format: 'png', width: 8, height: 8 });
    expect((await stack.app.inject({ method: 'GET', url: `/jobs/${jobId}/images/2` })).statusCode).toBe(404);
  });

  it('replays the events after Last-Event-ID', async () => {
    const res = await stack.app.inject({ method: 'GET', url: `/jobs/${jobId}/events`, headers: { 'last-event-id': '5' } });
    expect(parseSse(res.body).map((e) => [e.id, e.event])).toEqual([[6, 'progress'], [7, 'completed']]);
  });

  it('answers 200 with the result under Prefer: wait, here with a router named by the model', async () => {
    const res = await post({ model: 'tiny-dit', class_label: 5, steps: 4, cache: { policy: 'router', router: 'good' } }, { prefer: 'wait=30' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['preference-applied']).toBe('wait=30');
    const view = res.json();
    expect(view.state).toBe('completed');
    // Steps 0 and 2 compute (the first step always does): half the slots are reused.
    expect(view.result.report).toMatchObject({ router: 'good', policy: 'router', cur: 0.5, seed: expect.any(Number) });
  });

  it('maps an Idempotency-Key to one job; the same key with another body is 422', async () => {
    const body = { model: 'tiny-dit', class_label: 1, steps: 2, seed: 9, output_format: 'webp' };
    const first = await post(body, { 'idempotency-key': 'order-42' });
    expect(first.statusCode).toBe(202);
    const again = await post({ ...body }, { 'idempotency-key': 'order-42', prefer: 'wait=30' });
    expect(again.json().id).toBe(first.json().id);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.json().state).toBe('completed');
    const other = await post({ ...body, seed: 10 }, { 'idempotency-key': 'order-42' });
    expect(other.statusCode).toBe(422);
    expect(other.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(other.json()).toMatchObject({ status: 422, code: 'IDEMPOTENCY_KEY_REUSED' });
    const image = await stack.app.inject({ method: 'GET', url: `/jobs/${first.json().id}/images/0` });
    expect(image.headers['content-type']).toBe('image/webp');
    const counts = await stack.app.services.queue.getJobCounts('completed', 'waiting', 'active');
    expect(counts).toEqual({ completed: 3, waiting: 0, active: 0 });
  });
});

describe('POST /v1/images/generations', () => {
  it('maps an OpenAI request onto a job; a class model takes a class as the prompt', async () => {
    const res = await stack.app.inject({ method: 'POST', url: '/v1/images/generations', payload: { prompt: '7', n: 2, size: '8x8', response_format: 'b64_json', user: 'ignored' } });
    expect(res.statusCode).toBe(200);
    const data = res.json().data as { b64_json: string }[];
    expect(data).toHaveLength(2);
    expect(await sharp(Buffer.from(data[0]!.b64_json, 'base64')).metadata()).toMatchObject({ format: 'png', width: 8 });
    const bad = await stack.app.inject({ method: 'POST', url: '/v1/images/generations', payload: { prompt: 'a cat' } });
    expect(bad.statusCode).toBe(400);
    expect((await stack.app.inject({ method: 'POST', url: '/v1/images/generations', payload: { prompt: '7', size: '256x256' } })).statusCode).toBe(400);
  });
});

describe('operations', () => {
  it('/metrics exposes the service metrics', async () => {
    const res = await stack.app.inject({ method: 'GET', url: '/metrics' });
    expect(res.statusCode).toBe(200);
    for (const name of [
      'harmonica_queue_wait_seconds_bucket', 'harmonica_time_to_first_step_seconds_bucket', 'harmonica_step_duration_seconds_bucket',
      'harmonica_inference_duration_seconds_bucket', 'harmonica_http_request_duration_seconds_bucket', 'harmonica_images_total',
      'harmonica_jobs_total{status="completed"}', 'harmonica_queue_depth{state="waiting"}', 'harmonica_cache_slots_computed_total', 'harmonica_cache_slots_reused_total',
    ]) expect(res.body, name).toContain(name);
    expect(res.body).toMatch(/harmonica_images_total\{model="tiny-dit"\} 6/);
    expect(res.body).toMatch(/harmonica_queue_depth\{state="completed"\} 4/);
  });

  it('/readyz is ready with a worker; /models lists the model', async () => {
    expect((await stack.app.inject({ method: 'GET', url: '/readyz' })).json()).toEqual({ status: 'ready', workers: 1 });
    const models = (await stack.app.inject({ method: 'GET', url: '/models' })).json();
    expect(models.models[0]).toMatchObject({ id: 'tiny-dit', conditioning: 'class', image_shape: [1, 8, 8], routers: ['good'], sublayers: ['blocks.0.attn', 'blocks.0.mlp', 'blocks.1.attn', 'blocks.1.mlp'] });
    expect(models.policies).toContain('fora');
  });
});
