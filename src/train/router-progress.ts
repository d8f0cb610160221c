import { existsSync, readFileSync } from 'node:fs';
import { rename, writeFile } from 'node:fs/promises';
import type { AdamWState } from './optim.js';
import { HarmonicaError } from '../util/errors.js';

/**
 * When router training has converged: the hard schedule (decisions at tau) of the last
 * window differs from the one `patience` windows earlier in at most `maxChanged` of the
 * trainable slots. The decisions are what inference uses, so once they stop moving more
 * updates only shift logits that are already on one side of tau.
 */
export const PLATEAU_DEFAULTS = {
  /** Updates per logged window. */
  window: 200,
  /** Windows between the two schedules compared. */
  patience: 5,
  /** Fraction of trainable slots allowed to flip over `patience` windows. */
  maxChanged: 0.005,
};

export interface PlateauRule {
  window: number;
  patience: number;
  maxChanged: number;
}

/** One window of updates, as logged and stored in the artifact. */
export interface TrainingWindow {
  /** Updates done at the end of the window. */
  update: number;
  /** Mean data loss (lambda not applied) over the window's updates. */
  dataLoss: number;
  /** Cache usage ratio of the hard schedule at tau. */
  cur: number;
  /** Fraction of trainable logits with 0.1 < sigmoid(P) < 0.9: mixes that training and inference see differently. */
  undecided: number;
  /** Fraction of trainable slots whose decision at tau flipped since the previous window. */
  changed: number;
  seconds: number;
}

/** Everything a resumed run needs to continue exactly where the checkpoint was written. */
export interface RouterCheckpoint {
  format: 'harmonica-router-checkpoint/1';
  /** The options that must match for a resume (method, model hash, steps, beta, ...). */
  identity: Record<string, unknown>;
  update: number;
  /** Episodes (trajectories for HarmoniCa, single updates for LTC) started so far. */
  episode: number;
  logits: number[][];
  /** One AdamW per trainable row (null for rows that never train), as torch keeps one per router parameter. */
  adam: (AdamWState | null)[];
  lambda: number[];
  windows: TrainingWindow[];
  /** Decisions at the end of each window, for the plateau rule. */
  schedules: boolean[][][];
  seconds: number;
  plateauAt: number | null;
}

/** The window log and the plateau test, fed one update at a time. */
export class WindowLog {
  private lossSum = 0;
  private count = 0;

  constructor(
    private readonly rule: PlateauRule,
    readonly windows: TrainingWindow[] = [],
    readonly schedules: boolean[][][] = [],
  ) {}

  /** Adds an update's data loss; at a window's end, records it and returns the window. */
  add(update: number, dataLoss: number, measure: () => Omit<TrainingWindow, 'update' | 'dataLoss' | 'changed'> & { schedule: boolean[][]; trainable: boolean[] }): TrainingWindow | null {
    this.lossSum += dataLoss;
    this.count++;
    if (update % this.rule.window !== 0) return null;
    const { schedule, trainable, ...m } = measure();
    const previous = this.schedules.at(-1);
    const window: TrainingWindow = { update, dataLoss: this.lossSum / this.count, ...m, changed: previous ? flipped(previous, schedule, trainable) : 1 };
    this.windows.push(window);
    this.schedules.push(schedule);
    this.lossSum = 0;
    this.count = 0;
    return window;
  }

  /** True once the last schedule is within `maxChanged` of the one `patience` windows before it. */
  plateaued(trainable: boolean[]): boolean {
    const k = this.schedules.length - 1 - this.rule.patience;
    if (k < 0) return false;
    return flipped(this.schedules[k]!, this.schedules.at(-1)!, trainable) <= this.rule.maxChanged;
  }
}

/** Fraction of the trainable rows' slots whose decision differs between two schedules. */
function flipped(a: boolean[][], b: boolean[][], trainable: boolean[]): number {
  let changed = 0;
  let total = 0;
  a.forEach((row, i) => {
    if (!trainable[i]) return;
    row.forEach((v, s) => {
      total++;
      if (v !== b[i]![s]) changed++;
    });
  });
  return total ? changed / total : 0;
}

export async function saveCheckpoint(path: string, checkpoint: RouterCheckpoint): Promise<void> {
  // Written beside and renamed, so an interrupted write never leaves a half checkpoint.
  const tmp = `${path}.tmp`;
  const plain = { ...checkpoint, adam: checkpoint.adam.map((s) => s && { t: s.t, m: { P: [...s.m.P!] }, v: { P: [...s.v.P!] } }) };
  await writeFile(tmp, JSON.stringify(plain));
  await rename(tmp, path);
}

/**
 * The checkpoint at `path`, refused unless it was written by a run with the same identity
 * (a resume must not silently mix two trainings).
 */
export function loadCheckpoint(path: string, identity: Record<string, unknown>): RouterCheckpoint {
  if (!existsSync(path)) throw new HarmonicaError('BAD_INPUT', `--resume: no checkpoint at ${path}; start without --resume`);
  let c: RouterCheckpoint;
  try {
    c = JSON.parse(readFileSync(path, 'utf8')) as RouterCheckpoint;
  } catch (err) {
    throw new HarmonicaError('BAD_INPUT', `--resume: checkpoint is not valid JSON (${(err as Error).message})`);
  }
  if (c.format !== 'harmonica-router-checkpoint/1') throw new HarmonicaError('BAD_INPUT', '--resume: not a router training checkpoint');
  for (const [k, v] of Object.entries(identity)) {
    if (JSON.stringify(c.identity[k]) !== JSON.stringify(v)) {
      throw new HarmonicaError('BAD_INPUT', `--resume: the checkpoint was trained with ${k} ${JSON.stringify(c.identity[k])}, this run asks for ${JSON.stringify(v)}`);
    }
  }
  const toF32 = (s: { t: number; m: { P: number[] }; v: { P: number[] } } | null): AdamWState | null =>
    s && { t: s.t, m: { P: Float32Array.from(s.m.P) }, v: { P: Float32Array.from(s.v.P) } };
  return { ...c, adam: (c.adam as unknown as Parameters<typeof toF32>[0][]).map(toF32) };
}
