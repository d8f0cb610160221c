import { DelayedError, UnrecoverableError, type Job } from 'bullmq';
import type { StepEvent } from '../src/engine/engine.js';
import { encodeImage } from '../src/engine/image.js';
import { cacheSpec } from '../src/service/cache-choice.js';
import type { ModelCatalog } from '../src/service/catalog.js';
import type { EventLog } from '../src/service/events.js';
import { CANCELED, CONTENT_TYPES, decisionMask, failureReason, type GenerateJobData, type GenerateJobResult, type JobReport } from '../src/service/job.js';
import type { Metrics } from '../src/service/metrics.js';
import type { ResultStore } from '../src/service/results.js';
import { HarmonicaError } from '../src/util/errors.js';
import type { Logger } from '../src/util/log.js';
import type { EngineSource } from './engines.js';

/** The abort reason with which a worker shutting down hands its job back to the queue. */
export const SHUTDOWN = 'worker shutdown';

export interface ProcessorDeps {
  catalog: ModelCatalog;
  engines: EngineSource;
  events: EventLog;
  results: ResultStore;
  metrics: Metrics;
  /** Whether the API asked to cancel this job before the worker took it. */
  isCancelRequested(jobId: string): Promise<boolean>;
  workerName: string;
  log: Logger;
}

export type GenerateJob = Job<GenerateJobData, GenerateJobResult>;

const ms = (from: number) => Math.round((performance.now() - from) * 1000) / 1000;

/**
 * The job as a plain async function, separate from the BullMQ Worker wiring, so tests and the
 * CLI can call it directly. Progress goes to BullMQ (job.updateProgress) and to the job's
 * event log; images go to Redis as raw bytes; BullMQ keeps only the small report.
 */
export function createProcessor(deps: ProcessorDeps) {
  return async function processGenerateJob(job: GenerateJob, token?: string, signal?: AbortSignal): Promise<GenerateJobResult> {
    const id = job.id!;
    const data = job.data;
    const taken = performance.now();
    const queueWaitMs = Math.max(0, Date.now() - job.timestamp);
    const labels = { model: data.model };
    const log = deps.log.child({ job: id, requestId: data.requestId });
    if (await deps.isCancelRequested(id)) throw new UnrecoverableError(failureReason(CANCELED, 'canceled before it started'));
    deps.metrics.queueWait.observe(labels, queueWaitMs / 1000);
    await deps.events.append(id, 'started', { worker: deps.workerName, attempt: job.attemptsStarted, queue_wait_ms: queueWaitMs });

    // onStep is synchronous; the writes it starts are chained to keep their order and awaited
    // before the job returns, so `progress` events always precede `completed`.
    let firstStepMs: number | undefined;
    let writes = Promise.resolve();
    const onStep = (e: StepEvent) => {
      firstStepMs ??= ms(taken);
      deps.metrics.stepDuration.observe(labels, e.ms / 1000);
      // mask: one '1' (computed) or '0' (reused) per sublayer, in the order GET /models lists them.
      const progress = { step: e.step, total: e.total, step_ms: e.ms, computed: e.computed, reused: e.reused, mask: decisionMask(e.decisions) };
      writes = writes
        .then(() => Promise.all([job.updateProgress(progress), deps.events.append(id, 'progress', progress)]))
        .then(() => {}, (err: unknown) => log.warn({ err }, 'progress write failed'));
    };

    let generated;
    try {
      const engine = await deps.engines.get(data.model);
      const request = { ...data.request, cache: cacheSpec(data.cache, deps.catalog.get(data.model).dir) };
      generated = await engine.generate(request, { onStep, signal });
      signal?.throwIfAborted();
    } catch (err) {
      await writes;
      throw await jobError(err, job, token, signal);
    }
    await writes;
    const { images, report } = generated;

    const encodeStart = performance.now();
    const encoded = await Promise.all(images.map((img) => encodeImage(img, data.outputFormat)));
    const encodeMs = ms(encodeStart);
    await deps.results.store(id, encoded);

    deps.metrics.inferenceDuration.observe(labels, report.totalMs / 1000);
    deps.metrics.timeToFirstStep.observe(labels, (firstStepMs ?? 0) / 1000);
    deps.metrics.encodeDuration.observe(labels, encodeMs / 1000);
    deps.metrics.images.inc(labels, images.length);
    deps.metrics.slotsComputed.inc(labels, report.computedSlots);
    deps.metrics.slotsReused.inc(labels, report.reusedSlots);
    const full: JobReport = {
      model: report.model, model_sha256: report.modelSha256, policy: data.cache.policy, router: data.cache.router ?? null,
      tau: data.cache.tau ?? null, sampler: report.sampler, steps: report.steps, guidance_scale: report.cfg, seed: report.seed, n: report.n,
      queue_wait_ms: queueWaitMs, time_to_first_step_ms: firstStepMs ?? 0, steps_ms: report.stepsMs, inference_ms: report.totalMs, encode_ms: encodeMs,
      cur: report.cur, mac_speedup: report.macSpeedup, computed_slots: report.computedSlots, reused_slots: report.reusedSlots,
      machine: report.machine, worker: deps.workerName, attempt: job.attemptsStarted, notes: report.notes,
    };
    log.info({ ms: ms(taken), steps: report.steps, cur: report.cur }, 'job completed');
    return { images: encoded.map((bytes, index) => ({ index, content_type: CONTENT_TYPES[data.outputFormat], bytes: bytes.length })), report: full };
  };
}

/**
 * What a failed attempt becomes. A cancel ends the job; a shutdown hands it back to the queue
 * for another worker; a request error will not go better on retry. Anything else (an ORT
 * crash) fails with its message.
 */
async function jobError(err: unknown, job: GenerateJob, token: string | undefined, signal: AbortSignal | undefined): Promise<Error> {
  if (signal?.aborted) {
    if (signal.reason === SHUTDOWN && token) {
      await job.moveToDelayed(Date.now(), token);
      return new DelayedError();
    }
    return new UnrecoverableError(failureReason(CANCELED, String(signal.reason ?? 'canceled')));
  }
  if (err instanceof HarmonicaError) return new UnrecoverableError(failureReason(err.code, err.message));
  return err instanceof Error ? err : new Error(String(err));
}
