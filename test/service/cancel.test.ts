import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createStack, parseSse, pollJob, slowEngines, type Stack } from './stack.js';

let stack: Stack;
const post = (body: object, headers: Record<string, string> = {}) => stack.app.inject({ method: 'POST', url: '/generate', payload: body, headers });
const slowJob = { model: 'tiny-dit', class_label: 2, steps: 40 };

beforeAll(async () => {
  stack = await createStack('cancel');
  // 40 steps x 250 ms: a job runs ~10 s unless canceled; a 1-step job ~250 ms.
  await stack.worker({ engines: slowEngines(stack.engines, 250) });
});

afterAll(async () => {
  await stack?.close();
});

describe('cancel', () => {
  it('stops a running job on its worker, and a waiting job is removed', async () => {
    const running = (await post(slowJob)).json().id as string;
    const waiting = (await post(slowJob)).json().id as string;
    await pollJob(stack.app, running, (v) => v.state === 'running');

    const w = await stack.app.inject({ method: 'POST', url: `/jobs/${waiting}/cancel` });
    expect(w.statusCode).toBe(200);
    expect(w.json().state).toBe('canceled');

    // A client following the running job: idle stretches carry heartbeats (every 200 ms here).
    const stream = stack.app.inject({ method: 'GET', url: `/jobs/${running}/events` });
    await new Promise((resolve) => setTimeout(resolve, 600));
    const t0 = Date.now();
    const r = await stack.app.inject({ method: 'POST', url: `/jobs/${running}/cancel` });
    expect(r.statusCode).toBe(202);
    const view = await pollJob(stack.app, running, (v) => v.state !== 'running');
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(view, JSON.stringify(view.error)).toMatchObject({ state: "canceled", error: { code: "CANCELED" }, result: null });

    const followed = (await stream).body;
    expect(followed).toContain(': heartbeat\n\n');
    const events = parseSse(followed);
    expect(events.map((e) => e.event)).toEqual(['queued', 'started', 'canceled']);
    // The waiting job never reached a worker.
    const waitingEvents = parseSse((await stack.app.inject({ method: 'GET', url: `/jobs/${waiting}/events` })).body);
    expect(waitingEvents.map((e) => e.event)).toEqual(['queued', 'canceled']);
    expect(await stack.app.services.queue.getJob(waiting)).toBeUndefined();
  });

  it('answers 202 when the job outlasts Prefer: wait', async () => {
    const t0 = Date.now();
    const res = await post(slowJob, { prefer: 'wait=1' });
    expect(res.statusCode).toBe(202);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
    expect(['queued', 'running']).toContain(res.json().state);
    expect((await stack.app.inject({ method: 'POST', url: `/jobs/${res.json().id}/cancel` })).statusCode).toBe(202);
    await pollJob(stack.app, res.json().id, (v) => v.state === 'canceled');
  });

  it('refuses to cancel a finished job with 409', async () => {
    const done = await post({ ...slowJob, steps: 1 }, { prefer: 'wait=20' });
    expect(done.json().state).toBe('completed');
    const res = await stack.app.inject({ method: 'POST', url: `/jobs/${done.json().id}/cancel` });
    expect(res.statusCode).toBe(409);
    expect(res.json().code).toBe('ALREADY_FINISHED');
  });

  it('counts canceled jobs in /metrics', async () => {
    const body = (await stack.app.inject({ method: 'GET', url: '/metrics' })).body;
    expect(body).toMatch(/harmonica_jobs_total\{status="canceled"\} 3/);
  });
});
