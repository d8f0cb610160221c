import type { GenerateRequest } from '../engine/engine.js';

export type OutputFormat = 'png' | 'webp';

export const CONTENT_TYPES: Record<OutputFormat, string> = { png: 'image/png', webp: 'image/webp' };

/** The cache part of a request: a policy name (with its arguments), or a router by name. */
export interface CacheChoice {
  policy: string;
  router?: string;
  tau?: number;
}

/**
 * What a BullMQ job carries: parameters only, a few hundred bytes. The cache stays a choice
 * rather than a path, because the router file lives in the worker's copy of the model package.
 */
export interface GenerateJobData {
  /** Model id from the catalog. */
  model: string;
  /** Every default filled in (the seed too), so the job alone reproduces the images. */
  request: Required<Omit<GenerateRequest, 'cache' | 'classLabel' | 'prompt' | 'negativePrompt'>> & Pick<GenerateRequest, 'classLabel' | 'prompt' | 'negativePrompt'>;
  cache: CacheChoice;
  outputFormat: OutputFormat;
  requestId: string;
}

/** The latency and cache report of one job (snake_case: it is sent as is over HTTP). */
export interface JobReport {
  model: string;
  model_sha256: string;
  policy: string;
  router: string | null;
  tau: number | null;
  sampler: string;
  steps: number;
  guidance_scale: number;
  seed: number;
  n: number;
  /** Enqueue to the worker taking the job. */
  queue_wait_ms: number;
  /** Worker taking the job to the end of the first denoising step (model load, conditioning, step 1). */
  time_to_first_step_ms: number;
  steps_ms: number[];
  /** Denoising loop and decoding, as the engine measures it. */
  inference_ms: number;
  encode_ms: number;
  cur: number;
  mac_speedup: number;
  computed_slots: number;
  reused_slots: number;
  machine: string;
  worker: string;
  attempt: number;
  notes: Record<string, unknown>;
}

/**
 * One step's cache decisions as a string, one character per sublayer in slot order: '1'
 * computed, '0' reused. Progress events and router views carry it: compact in JSON and SSE.
 */
export function decisionMask(decisions: readonly boolean[]): string {
  return decisions.map((computed) => (computed ? '1' : '0')).join('');
}

/** BullMQ's return value: the images themselves are in Redis under Keys.image. */
export interface GenerateJobResult {
  images: { index: number; content_type: string; bytes: number }[];
  report: JobReport;
}

/** A failed job's reason is stored as "CODE: message" so that any reader can tell cancels apart. */
export const CANCELED = 'CANCELED';

export function failureReason(code: string, message: string): string {
  return `${code}: ${message}`;
}

export function parseFailure(reason: string | undefined): { code: string; message: string } {
  const m = /^([A-Z_]+): ([\s\S]*)$/.exec(reason ?? '');
  return m ? { code: m[1]!, message: m[2]! } : { code: 'INTERNAL', message: reason ?? 'unknown failure' };
}
