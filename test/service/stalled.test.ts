import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HarmonicaWorker } from '../../workers/worker.js';
import { createStack, parseSse, pollJob, slowEngines, type Stack } from './stack.js';

let stack: Stack;
let child: ChildProcess | undefined;
let rescuer: HarmonicaWorker | undefined;

beforeAll(async () => {
  stack = await createStack('stalled');
});

afterAll(async () => {
  child?.kill('SIGKILL');
  await stack?.close();
});

/** A worker process that a test can kill; resolves once it listens to the queue. */
async function spawnWorker(): Promise<ChildProcess> {
  const script = fileURLToPath(new URL('./fixtures/worker-child.ts', import.meta.url));
  const proc = spawn(process.execPath, ['--import', 'tsx', script], {
    env: { ...process.env, PREFIX: stack.prefix, MODEL_DIR: stack.pkg.dir, STEP_DELAY_MS: '500', LOCK_MS: '1500', LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const [chunk] = (await once(proc.stdout!, 'data')) as [Buffer];
  expect(chunk.toString()).toContain('ready');
  return proc;
}

const eventsOf = async (id: string) => parseSse((await stack.app.inject({ method: 'GET', url: `/jobs/${id}/events` })).body);

describe('worker failure', () => {
  it('a job whose worker is killed mid-job completes once on another worker', async () => {
    child = await spawnWorker();
    const id = (await stack.app.inject({ method: 'POST', url: '/generate', payload: { model: 'tiny-dit', class_label: 4, steps: 20, seed: 2 } })).json().id as string;
    await pollJob(stack.app, id, (v) => v.state === 'running');
    child.kill('SIGKILL');
    await once(child, 'exit');

    // The lock (1.5 s) expires without renewal; this worker's stalled check returns the job to the queue.
    rescuer = await stack.worker({ stalledIntervalMs: 300 });
    const view = await pollJob(stack.app, id, (v) => v.state === 'completed' || v.state === 'failed', 30_000);
    expect(view.state).toBe('completed');
    const events = await eventsOf(id);
    const started = events.filter((e) => e.event === 'started');
    expect(started.map((e) => e.data.worker)).toEqual(['doomed', expect.not.stringMatching(/^doomed$/)]);
    expect(events.filter((e) => e.event === 'completed')).toHaveLength(1);
    expect(events.at(-1)!.event).toBe('completed');
    expect((view as unknown as { result: { report: { attempt: number } } }).result.report.attempt).toBe(2);
    expect(await stack.app.services.queue.getJobCounts('completed', 'failed', 'active', 'waiting')).toEqual({ completed: 1, failed: 0, active: 0, waiting: 0 });
  });

  it('a worker shutting down hands its active job back to the queue', async () => {
    await rescuer?.close(0);
    const leaving = await stack.worker({ engines: slowEngines(stack.engines, 300), name: 'leaving' });
    const id = (await stack.app.inject({ method: 'POST', url: '/generate', payload: { model: 'tiny-dit', class_label: 6, steps: 10 } })).json().id as string;
    await pollJob(stack.app, id, (v) => v.state === 'running');
    // Idle until the job comes back: it is locked by `leaving` until then.
    await stack.worker({ name: 'taker' });
    await leaving.close(0);
    const view = await pollJob(stack.app, id, (v) => v.state === 'completed' || v.state === 'failed');
    expect(view.state).toBe('completed');
    const events = await eventsOf(id);
    expect(events.filter((e) => e.event === 'started').map((e) => e.data.worker)).toEqual(['leaving', 'taker']);
    expect(events.filter((e) => e.event === 'completed')).toHaveLength(1);
  });
});
