import { Counter, Histogram, Registry } from 'prom-client';

/**
 * Prometheus metrics in base units (seconds), labelled by model or status but never by job:
 * per-job labels would grow the series without bound. One Metrics object per registry; an API
 * with an in-process worker shares one.
 */
export interface Metrics {
  registry: Registry;
  queueWait: Histogram<'model'>;
  timeToFirstStep: Histogram<'model'>;
  stepDuration: Histogram<'model'>;
  inferenceDuration: Histogram<'model'>;
  encodeDuration: Histogram<'model'>;
  requestDuration: Histogram<'method' | 'route' | 'status_code'>;
  images: Counter<'model'>;
  jobs: Counter<'status'>;
  slotsComputed: Counter<'model'>;
  slotsReused: Counter<'model'>;
}

export function createMetrics(registry = new Registry()): Metrics {
  const registers = [registry];
  const seconds = (name: string, help: string, buckets: number[]) => new Histogram({ name, help, buckets, labelNames: ['model'] as const, registers });
  return {
    registry,
    queueWait: seconds('harmonica_queue_wait_seconds', 'Time from enqueue to a worker taking the job', [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900]),
    timeToFirstStep: seconds('harmonica_time_to_first_step_seconds', 'Time from a worker taking the job to the end of its first denoising step', [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]),
    stepDuration: seconds('harmonica_step_duration_seconds', 'Duration of one denoising step (one ORT run plus the sampler update)', [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]),
    inferenceDuration: seconds('harmonica_inference_duration_seconds', 'Denoising loop plus decoding of one job', [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]),
    encodeDuration: seconds('harmonica_encode_duration_seconds', 'PNG/WebP encoding of one job\'s images', [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1]),
    requestDuration: new Histogram({
      name: 'harmonica_http_request_duration_seconds', help: 'HTTP request duration by route template',
      labelNames: ['method', 'route', 'status_code'] as const, buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120], registers,
    }),
    images: new Counter({ name: 'harmonica_images_total', help: 'Images generated', labelNames: ['model'] as const, registers }),
    jobs: new Counter({ name: 'harmonica_jobs_total', help: 'Jobs by final (or queued) status', labelNames: ['status'] as const, registers }),
    slotsComputed: new Counter({ name: 'harmonica_cache_slots_computed_total', help: 'Sublayer slots computed (step x slot)', labelNames: ['model'] as const, registers }),
    slotsReused: new Counter({ name: 'harmonica_cache_slots_reused_total', help: 'Sublayer slots served from the feature cache', labelNames: ['model'] as const, registers }),
  };
}
