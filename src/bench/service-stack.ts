import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { QUEUE_NAME } from '../service/config.js';
import { checkRedis, connectRedis, deletePrefix } from '../service/redis.js';
import { log } from '../util/log.js';

const CLI = fileURLToPath(new URL('../../bin/harmonica.js', import.meta.url));

export interface ServiceStackOptions {
  redisUrl: string;
  model: string;
  workers: number;
  /** ORT intra-op threads per worker. */
  threads?: number;
  /** Extra environment of the API process (MAX_QUEUE_DEPTH, ...). */
  apiEnv?: Record<string, string>;
}

/** The API and its workers as separate processes on loopback, as a deployment runs them. */
export interface ServiceStack {
  /** http://127.0.0.1:<port> */
  url: string;
  /** This stack's own Redis key prefix: its jobs are the only ones in its queue. */
  prefix: string;
  redis: Redis;
  queue: Queue;
  /** SIGTERM to every process, then the stack's keys are deleted. */
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  server.close();
  await once(server, 'close');
  return port;
}

/** Resolves once /readyz reports `workers` workers; rejects if a process exits first. */
async function waitReady(url: string, workers: number, procs: ChildProcess[], timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const dead = procs.find((p) => p.exitCode !== null || p.signalCode !== null);
    if (dead) throw new Error(`a service process exited during start-up (${dead.spawnargs.slice(2).join(' ')})`);
    const ready = await fetch(`${url}/readyz`).then((r) => r.json() as Promise<{ workers?: number }>, () => null);
    if ((ready?.workers ?? 0) >= workers) return;
    if (Date.now() > until) throw new Error(`the service was not ready with ${workers} workers after ${timeoutMs / 1000} s`);
    await sleep(200);
  }
}

async function stopProcess(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = once(proc, 'exit');
  proc.kill('SIGTERM');
  // The grace period given at spawn plus start-up slack; then it is killed.
  const timer = setTimeout(() => proc.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(timer);
}

/**
 * Starts `harmonica serve` and `workers` x `harmonica worker` under a fresh key prefix. Their
 * logs (warnings and up) go to this process's stderr.
 */
export async function startServiceStack(o: ServiceStackOptions): Promise<ServiceStack> {
  await checkRedis(o.redisUrl);
  const prefix = `bench-${randomUUID().slice(0, 8)}`;
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const common = ['--redis', o.redisUrl, '--model', o.model, '--prefix', prefix, '--grace', '5000'];
  const env = { ...process.env, LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn', RATE_LIMIT_PER_MINUTE: '0' };
  const run = (args: string[], extraEnv: Record<string, string> = {}) =>
    spawn(process.execPath, [CLI, ...args], { env: { ...env, ...extraEnv }, stdio: ['ignore', 'inherit', 'inherit'] });
  const procs = [run(['serve', '--host', '127.0.0.1', '--port', String(port), ...common], o.apiEnv)];
  for (let i = 0; i < o.workers; i++) {
    procs.push(run(['worker', ...common, '--name', `bench-worker-${i + 1}`, ...(o.threads ? ['--threads', String(o.threads)] : [])]));
  }
  const redis = connectRedis(o.redisUrl);
  const queue = new Queue(QUEUE_NAME, { connection: redis, prefix });
  const stop = async () => {
    await Promise.all(procs.map(stopProcess));
    await queue.close();
    await deletePrefix(redis, prefix);
    await redis.quit();
  };
  try {
    await waitReady(url, o.workers, procs, 120_000);
  } catch (err) {
    await stop();
    throw err;
  }
  log.info({ url, prefix, workers: o.workers, model: o.model }, 'service stack ready');
  return { url, prefix, redis, queue, stop };
}
