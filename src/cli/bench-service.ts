import type { Command } from 'commander';
import { DEFAULT_REDIS_URL } from '../service/redis.js';
import { int, printReport } from './report.js';

interface StackFlags {
  redis?: string;
  model: string;
  class: number;
  threads?: number;
  json?: boolean;
}

function withStackFlags(command: Command): Command {
  return command
    .option('--redis <url>', 'Redis URL (default: REDIS_URL or redis://127.0.0.1:6379)')
    .option('--model <name|dir>', 'model to serve', 'dit-mnist')
    .option('--class <n>', 'class label of every request', int, 7)
    .option('--threads <n>', 'ORT intra-op threads per engine (load: default 1, the workers share the cores)', int)
    .option('--json', 'print one JSON object');
}

const redisUrl = (flags: StackFlags) => flags.redis ?? process.env.REDIS_URL ?? DEFAULT_REDIS_URL;

/**
 * `bench service load|latency`: each starts its own API and worker processes on loopback under
 * a fresh Redis key prefix and stops them at the end. The modules are imported on use, so that
 * the CLI still starts where devDependencies (autocannon) are not installed.
 */
export function registerBenchService(bench: Command): void {
  const service = bench.command('service').description('the HTTP service under load, and its latency against the engine alone');

  withStackFlags(service.command('load'))
    .description('fixed-rate POST /generate load (autocannon) against the API and N worker processes; waits until every accepted job has finished')
    .option('--rate <n>', 'requests per second', int, 200)
    .option('--duration <s>', 'seconds of load', int, 30)
    .option('--connections <n>', 'HTTP connections (autocannon spreads the rate over them)', int, 100)
    .option('--workers <n>', 'worker processes', int, 2)
    .option('--max-queue-depth <n>', 'the API sheds with 503 beyond this many waiting jobs', int, 100)
    .option('--steps <n>', 'denoising steps per request', int, 4)
    .option('--drain-timeout <s>', 'longest wait for the accepted jobs after the load', int, 300)
    .action(async (f: StackFlags & { rate: number; duration: number; connections: number; workers: number; maxQueueDepth: number; steps: number; drainTimeout: number }) => {
      const { benchServiceLoad } = await import('../bench/service-load.js');
      const result = await benchServiceLoad({
        redisUrl: redisUrl(f), model: f.model, classLabel: f.class, workers: f.workers, threads: f.threads ?? 1,
        rate: f.rate, durationS: f.duration, connections: f.connections, maxQueueDepth: f.maxQueueDepth, steps: f.steps, drainTimeoutS: f.drainTimeout,
      });
      printReport({ ...result }, !!f.json);
      if (!result.pass) process.exitCode = 1;
    });

  withStackFlags(service.command('latency'))
    .description('one request run directly on Engine.generate vs through HTTP + queue + worker (Prefer: wait), interleaved; medians')
    .option('--runs <n>', 'timed rounds', int, 7)
    .option('--steps <n>', 'denoising steps (default: the model\'s)', int)
    .option('--seed <n>', 'seed of every request', int, 0)
    .action(async (f: StackFlags & { runs: number; steps?: number; seed: number }) => {
      const { benchServiceLatency } = await import('../bench/service-latency.js');
      const result = await benchServiceLatency({ redisUrl: redisUrl(f), model: f.model, classLabel: f.class, steps: f.steps, seed: f.seed, runs: f.runs, threads: f.threads });
      if (f.json) return printReport({ ...result }, true);
      printReport({ model: result.model, request: result.request, runs: result.runs, service: result.service }, false);
      console.table(result.rows);
    });
}
