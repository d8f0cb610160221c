import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { checkRedis } from '../../src/service/redis.js';

/** A port nothing listens on right now (the OS picks it). */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  server.close();
  await once(server, 'close');
  return port;
}

/**
 * A throwaway redis-server of its own (no persistence) that a test may kill and start again on
 * the same port, so the shared Redis on 6379 is never disturbed.
 */
export class RedisServer {
  private proc: ChildProcess | null = null;

  private constructor(readonly port: number) {}

  static async start(): Promise<RedisServer> {
    const server = new RedisServer(await freePort());
    await server.restart();
    return server;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Starts the server (again) and resolves once it answers a PING. */
  async restart(timeoutMs = 10_000): Promise<void> {
    if (this.proc) throw new Error('redis-server is already running');
    const proc = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    this.proc = proc;
    proc.once('exit', () => {
      if (this.proc === proc) this.proc = null;
    });
    const until = Date.now() + timeoutMs;
    for (;;) {
      try {
        return await checkRedis(this.url, 500);
      } catch (err) {
        if (!this.proc || Date.now() > until) throw err;
        await sleep(50);
      }
    }
  }

  /** Kills the server (SIGKILL: a crash, not a clean shutdown) and waits for it to exit. */
  async kill(): Promise<void> {
    const proc = this.proc;
    if (!proc) return;
    const exited = once(proc, 'exit');
    proc.kill('SIGKILL');
    await exited;
  }
}
