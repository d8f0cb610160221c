import type { Logger } from 'pino';
import { log as defaultLog } from './log.js';

export interface ProgressOptions {
  /** Stream for the live line; a TTY gets a redrawn line, anything else structured logs. */
  stream?: NodeJS.WriteStream;
  logger?: Logger;
  /** Seconds between log records when not on a terminal. */
  logEverySeconds?: number;
}

function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${s.toFixed(0)}s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

/** Progress of a long job with rate and ETA: a redrawn line on a terminal, pino logs otherwise. */
export class Progress {
  private done = 0;
  private readonly start = performance.now();
  private lastLog = 0;
  private readonly stream: NodeJS.WriteStream;
  private readonly logger: Logger;
  private readonly logEveryMs: number;

  constructor(
    readonly label: string,
    readonly total: number,
    readonly unit = 'it',
    options: ProgressOptions = {},
  ) {
    this.stream = options.stream ?? process.stderr;
    this.logger = options.logger ?? defaultLog;
    this.logEveryMs = (options.logEverySeconds ?? 10) * 1000;
  }

  /** Advances by `n` and reports; `fields` (e.g. the loss) go into the line and the log. */
  tick(n = 1, fields: Record<string, number | string> = {}): void {
    this.done += n;
    const elapsed = (performance.now() - this.start) / 1000;
    const rate = this.done / Math.max(elapsed, 1e-9);
    const eta = (this.total - this.done) / rate;
    const finished = this.done >= this.total;
    if (this.stream.isTTY) {
      const extra = Object.entries(fields).map(([k, v]) => `${k} ${typeof v === 'number' ? v.toPrecision(4) : v}`).join('  ');
      const line = `${this.label} ${this.done}/${this.total} ${rate.toFixed(2)} ${this.unit}/s ETA ${formatSeconds(eta)} ${extra}`;
      this.stream.write(`\r\x1b[K${line}${finished ? '\n' : ''}`);
    } else if (finished || performance.now() - this.lastLog >= this.logEveryMs) {
      this.lastLog = performance.now();
      this.logger.info({ task: this.label, done: this.done, total: this.total, rate: Number(rate.toFixed(3)), unit: this.unit, etaSeconds: Math.round(eta), ...fields }, 'progress');
    }
  }
}
