import type { Command } from 'commander';
import { exitWith, optionsFromEnv, serve, work } from '../service/main.js';
import { int } from './report.js';

interface CommonFlags {
  redis?: string;
  model: string[];
  prefix?: string;
  threads?: number;
  device?: 'cpu' | 'cuda';
  grace?: number;
}

const collect = (value: string, previous: string[]) => [...previous, value];

/** Flags override the environment (REDIS_URL, MODELS, PORT, ...; see src/service/main.ts). */
function common(flags: CommonFlags) {
  const env = optionsFromEnv();
  return {
    ...env,
    redisUrl: flags.redis ?? env.redisUrl,
    models: flags.model.length ? flags.model : env.models,
    threads: flags.threads ?? env.threads,
    device: flags.device ?? env.device,
    graceMs: flags.grace ?? env.graceMs,
    config: { ...env.config, ...(flags.prefix ? { prefix: flags.prefix } : {}) },
  };
}

function withCommonFlags(command: Command): Command {
  return command
    .option('--redis <url>', 'Redis URL (default: REDIS_URL or redis://127.0.0.1:6379)')
    .option('--model <name|dir>', 'a model to serve; repeat for several (default: MODELS or dit-mnist)', collect, [])
    .option('--prefix <prefix>', 'Redis key prefix (default: HARMONICA_PREFIX or harmonica)')
    .option('--threads <n>', 'ORT intra-op threads', int)
    .option('--device <device>', 'cpu | cuda')
    .option('--grace <ms>', 'on SIGTERM, let the active job finish this long before handing it back', int);
}

export function registerServe(program: Command): void {
  withCommonFlags(program.command('serve').description('run the HTTP API (Redis queue); --with-worker also runs a worker in-process'))
    .option('--host <host>', 'listen address (default: HOST or 0.0.0.0)')
    .option('--port <port>', 'listen port (default: PORT or 3000)', int)
    .option('--with-worker', 'also run one worker in this process')
    .action(async (flags: CommonFlags & { host?: string; port?: number; withWorker?: boolean }) => {
      const o = common(flags);
      await serve({ ...o, host: flags.host ?? o.host, port: flags.port ?? o.port, withWorker: !!flags.withWorker }).catch(exitWith);
    });

  withCommonFlags(program.command('worker').description('run a queue worker: takes generation jobs from Redis and runs them'))
    .option('--metrics-port <port>', 'serve Prometheus /metrics on this port (default: METRICS_PORT or off)', int)
    .option('--name <name>', 'worker name shown in reports (default: host:pid)')
    .action(async (flags: CommonFlags & { metricsPort?: number; name?: string }) => {
      const o = common(flags);
      await work({ ...o, metricsPort: flags.metricsPort ?? o.metricsPort, name: flags.name }).catch(exitWith);
    });
}
