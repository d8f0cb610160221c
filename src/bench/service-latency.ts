import { Engine, type GenerateRequest } from '../engine/engine.js';
import type { JobView } from '../service/job-view.js';
import { Progress } from '../util/progress.js';
import { startServiceStack } from './service-stack.js';
import { median } from './timing.js';

export interface LatencyBenchOptions {
  redisUrl: string;
  model: string;
  classLabel: number;
  /** Default: the model's. */
  steps?: number;
  seed: number;
  /** Timed rounds; each round runs both paths, in alternating order. */
  runs: number;
  /** ORT intra-op threads, the same for the direct engine and the worker. */
  threads?: number;
}

export interface LatencyRow {
  path: string;
  medianMs: number;
  minMs: number;
  maxMs: number;
  /** Median minus the direct Engine.generate median. */
  overheadMs: number;
}

export interface LatencyBenchResult {
  model: string;
  request: Record<string, unknown>;
  runs: number;
  rows: LatencyRow[];
  /** Where the service's time goes, medians of the jobs' own reports. */
  service: { queueWaitMs: number; inferenceMs: number; encodeMs: number };
}

const round = (v: number) => Number(v.toFixed(1));

/**
 * One request, run directly on an Engine in this process and through the service (POST
 * /generate with `Prefer: wait=60` against the API and one worker process), interleaved round
 * by round; the difference of the medians is what HTTP, the queue and the worker add.
 */
export async function benchServiceLatency(o: LatencyBenchOptions): Promise<LatencyBenchResult> {
  const session = o.threads ? { threads: o.threads } : {};
  const engine = await Engine.open(o.model, session);
  const stack = await startServiceStack({ redisUrl: o.redisUrl, model: o.model, workers: 1, threads: o.threads });
  try {
    const direct: GenerateRequest = { classLabel: o.classLabel, steps: o.steps, n: 1, seed: o.seed };
    const body = { model: o.model, class_label: o.classLabel, steps: o.steps, n: 1, seed: o.seed };

    const runDirect = async () => {
      const t0 = performance.now();
      await engine.generate(direct);
      return performance.now() - t0;
    };
    const runService = async () => {
      const t0 = performance.now();
      const res = await fetch(`${stack.url}/generate`, { method: 'POST', headers: { 'content-type': 'application/json', prefer: 'wait=60' }, body: JSON.stringify(body) });
      const view = (await res.json()) as JobView;
      const answered = performance.now() - t0;
      if (res.status !== 200 || view.state !== 'completed' || !view.result) throw new Error(`the service answered ${res.status} with state ${view.state}`);
      const image = await fetch(`${stack.url}${view.result.images[0]!.url}`);
      await image.arrayBuffer();
      return { answered, withImage: performance.now() - t0, report: view.result.report };
    };

    // Round 0 warms up: the worker opens the model on its first job, the engine builds its sessions.
    const times = { direct: [] as number[], answered: [] as number[], withImage: [] as number[] };
    const reports = [];
    const progress = new Progress('bench service latency', o.runs + 1, 'rounds');
    for (let r = 0; r <= o.runs; r++) {
      const serviceFirst = r % 2 === 1;
      const s1 = serviceFirst ? await runService() : null;
      const d = await runDirect();
      const s = s1 ?? (await runService());
      if (r > 0) {
        times.direct.push(d);
        times.answered.push(s.answered);
        times.withImage.push(s.withImage);
        reports.push(s.report);
      }
      progress.tick();
    }

    const base = median(times.direct);
    const row = (path: string, xs: number[]): LatencyRow => ({
      path, medianMs: round(median(xs)), minMs: round(Math.min(...xs)), maxMs: round(Math.max(...xs)), overheadMs: round(median(xs) - base),
    });
    return {
      model: o.model,
      request: body,
      runs: o.runs,
      rows: [
        row('Engine.generate (in process)', times.direct),
        row('POST /generate, Prefer: wait=60 (API + queue + worker)', times.answered),
        row('... then GET /jobs/:id/images/0', times.withImage),
      ],
      service: {
        queueWaitMs: round(median(reports.map((r) => r.queue_wait_ms))),
        inferenceMs: round(median(reports.map((r) => r.inference_ms))),
        encodeMs: round(median(reports.map((r) => r.encode_ms))),
      },
    };
  } finally {
    await stack.stop();
  }
}
