import type { Job } from 'bullmq';
import type { EventLog, JobEvent, JobEventType } from './events.js';
import { CANCELED, parseFailure, type GenerateJobData, type GenerateJobResult, type JobReport } from './job.js';
import type { Services } from './services.js';

export type JobState = 'queued' | 'running' | 'completed' | 'failed' | 'canceled';

export interface ResultView {
  images: { index: number; url: string; content_type: string; bytes: number }[];
  report: JobReport;
}

export interface JobView {
  id: string;
  model: string | null;
  state: JobState;
  progress: { step: number; total: number } | null;
  created_at: string | null;
  started_at: string | null;
  finished_at: string | null;
  result: ResultView | null;
  error: { code: string; message: string } | null;
  urls: { self: string; events: string; cancel: string };
}

type GenerateJob = Job<GenerateJobData, GenerateJobResult>;

export const jobUrls = (id: string) => ({ self: `/jobs/${id}`, events: `/jobs/${id}/events`, cancel: `/jobs/${id}/cancel` });

export function resultView(id: string, result: GenerateJobResult): ResultView {
  return { images: result.images.map((img) => ({ ...img, url: `/jobs/${id}/images/${img.index}` })), report: result.report };
}

const iso = (ms: number | undefined | null) => (ms ? new Date(ms).toISOString() : null);

function stateOf(bull: string, failedReason: string | undefined): JobState | null {
  if (bull === 'active') return 'running';
  if (bull === 'completed') return 'completed';
  if (bull === 'failed') return parseFailure(failedReason).code === CANCELED ? 'canceled' : 'failed';
  if (bull === 'unknown') return null;
  return 'queued';
}

/** The terminal event a finished BullMQ job should have in its log, or null if it has not finished. */
function terminalEvent(job: GenerateJob, state: JobState | null): { type: JobEventType; data: Record<string, unknown> } | null {
  if (state === 'completed') return { type: 'completed', data: { ...resultView(job.id!, job.returnvalue) } };
  if (state === 'failed' || state === 'canceled') return { type: state, data: parseFailure(job.failedReason) };
  return null;
}

/**
 * Writes the terminal event of a finished job unless the log has one. Workers call it when a
 * job ends (their job object is final); SSE readers call settleById on idle ticks, which covers
 * a worker that died between finishing the job and writing the event. The log keeps only the
 * first terminal event.
 */
export async function appendTerminal(events: EventLog, job: GenerateJob, bullState: 'completed' | 'failed'): Promise<void> {
  const terminal = terminalEvent(job, stateOf(bullState, job.failedReason));
  if (terminal) await events.append(job.id!, terminal.type, terminal.data);
}

export async function settleById(s: Services, id: string): Promise<void> {
  // State first: a finished job no longer changes, so the job read after it is complete.
  const state = await s.queue.getJobState(id);
  if (state !== 'completed' && state !== 'failed') return;
  const job = await s.queue.getJob(id);
  if (job) await appendTerminal(s.events, job, state);
}

/** From BullMQ when the job is there; from the event log when it was removed (a canceled waiting job). */
export async function jobView(s: Services, id: string): Promise<JobView | null> {
  // State before job, as in settleById: read the other way round, a job finishing in between
  // would show as failed without its reason.
  const bullState = await s.queue.getJobState(id);
  const job = await s.queue.getJob(id);
  const state = job ? stateOf(bullState, job.failedReason) : null;
  if (job && state) {
    const p = job.progress as { step?: number; total?: number } | number;
    return {
      id, model: job.data.model, state,
      progress: typeof p === 'object' && p.step !== undefined ? { step: p.step, total: p.total ?? job.data.request.steps } : null,
      created_at: iso(job.timestamp), started_at: iso(job.processedOn), finished_at: iso(job.finishedOn),
      result: state === 'completed' ? resultView(id, job.returnvalue) : null,
      error: state === 'failed' || state === 'canceled' ? parseFailure(job.failedReason) : null,
      urls: jobUrls(id),
    };
  }
  return viewFromEvents(id, await s.events.since(id));
}

function viewFromEvents(id: string, events: JobEvent[]): JobView | null {
  const first = events[0];
  const last = events.at(-1);
  if (!first || !last) return null;
  const ended = last.type === 'completed' || last.type === 'failed' || last.type === 'canceled';
  return {
    id, model: typeof first.data.model === 'string' ? first.data.model : null,
    state: ended ? (last.type as JobState) : 'queued',
    progress: null, created_at: null, started_at: null, finished_at: null,
    // A completed event carries the result view, so it outlives BullMQ's copy of the job.
    result: last.type === 'completed' ? (last.data as unknown as ResultView) : null,
    error: last.type === 'failed' || last.type === 'canceled' ? { code: String(last.data.code), message: String(last.data.message) } : null,
    urls: jobUrls(id),
  };
}
