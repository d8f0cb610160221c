/**
 * The public API as the page uses it. Paths are root-relative: the page is served by the API
 * itself, so behind the load balancer every request goes to the same origin.
 */

export interface Model {
  id: string;
  family: string;
  conditioning: 'class' | 'text';
  classes: string[] | null;
  image_shape: number[];
  defaults: { sampler: string; steps: number; guidance_scale: number };
  routers: string[];
  sublayers: string[];
  sha256: string;
}

export interface Catalog {
  models: Model[];
  policies: string[];
  samplers: string[];
}

export interface CacheChoice {
  policy: string;
  router?: string;
  tau?: number;
}

export interface GenerateBody {
  model: string;
  class_label?: number;
  prompt?: string;
  negative_prompt?: string;
  steps: number;
  sampler: string;
  guidance_scale: number;
  seed: number;
  cache: CacheChoice;
}

export interface Report {
  policy: string;
  router: string | null;
  steps: number;
  seed: number;
  steps_ms: number[];
  inference_ms: number;
  cur: number;
  mac_speedup: number;
  computed_slots: number;
  reused_slots: number;
}

export interface JobResult {
  images: { index: number; url: string; content_type: string; bytes: number }[];
  report: Report;
}

export interface JobView {
  id: string;
  state: 'queued' | 'running' | 'completed' | 'failed' | 'canceled';
  result: JobResult | null;
  error: { code: string; message: string } | null;
  urls: { self: string; events: string; cancel: string };
}

export interface RouterView {
  id: string;
  model: string;
  method: 'harmonica' | 'ltc';
  sampler: string;
  steps: number;
  cfg_scale: number;
  tau: number;
  default_tau: number;
  sublayers: string[];
  logits: number[][];
  decisions: string[];
  cur: number;
}

/** A problem+json answer, with its detail as the message. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

async function call<T>(path: string, init?: RequestInit): Promise<T> {
  const res = await fetch(path, { ...init, headers: { accept: 'application/json', ...init?.headers } });
  const body = (await res.json().catch(() => null)) as unknown;
  if (!res.ok) {
    const problem = (body ?? {}) as { code?: string; detail?: string; errors?: { path: string; message: string }[] };
    const fields = problem.errors?.map((e) => `${e.path} ${e.message}`).join('; ');
    throw new ApiError(res.status, problem.code ?? 'HTTP_ERROR', fields || problem.detail || `${path}: HTTP ${res.status}`);
  }
  return body as T;
}

export const getCatalog = () => call<Catalog>('/models');

export const getRouter = (model: string, router: string, tau?: number) =>
  call<RouterView>(`/models/${encodeURIComponent(model)}/routers/${encodeURIComponent(router)}${tau === undefined ? '' : `?tau=${tau}`}`);

export const submit = (body: GenerateBody) =>
  call<JobView>('/generate', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

export const getJob = (url: string) => call<JobView>(url);

export const cancelJob = (url: string) => call<JobView>(url, { method: 'POST' });
