import { pino, type Logger } from 'pino';

export type { Logger };

/** Structured logs on stderr, so stdout stays free for `--json` output. */
export const log: Logger = pino(
  { name: 'harmonica', level: process.env.LOG_LEVEL ?? (process.env.VITEST ? 'warn' : 'info') },
  pino.destination(2),
);
