/**
 * The playground page: a request form filled from GET /models, the cached job followed live
 * over SSE (step counter, per-step ms, the steps x sublayers map of computed and reused
 * sublayers), then its image beside an uncached job's image from the same seed, with the
 * measured speedup and the PSNR between the two. A router's logits and decisions on request.
 */
import { ApiError, cancelJob, getCatalog, getJob, getRouter, submit, type Catalog, type GenerateBody, type JobResult, type JobView, type Model, type RouterView } from './api.js';
import { cssColor, drawGrid, mix } from './heatmap.js';
import { followJob, type ProgressEvent } from './follow.js';
import { psnrRgba } from './psnr.js';

/** Arguments a policy starts with and what they mean (names as GET /models lists them). */
const POLICY_HELP: Record<string, { args: string; hint: string }> = {
  none: { args: '', hint: 'Every sublayer computes at every step.' },
  fora: { args: '2', hint: 'N: every sublayer computes every N steps and is reused in between (FORA).' },
  'delta-dit': { args: '10,4', hint: 'b,k[,N]: all compute every N steps (default 2); in between the rear k blocks reuse before step b, the front k from b on (Delta-DiT).' },
  teacache: { args: '0.1', hint: 'Threshold on the accumulated, rescaled change of the first block\'s input (TeaCache; the model needs a calibration).' },
  'first-block': { args: '0.1', hint: 'Threshold on the relative change of block 0\'s residual (First-Block-Cache).' },
  router: { args: '', hint: '' },
};

const MAX_SEED = 2 ** 31;

function $<T extends HTMLElement = HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page has no #${id}`);
  return el as T;
}

const ui = {
  form: $<HTMLFormElement>('request'),
  model: $<HTMLSelectElement>('model'),
  classField: $('class-field'),
  classLabel: $<HTMLSelectElement>('class-label'),
  promptField: $('prompt-field'),
  prompt: $<HTMLTextAreaElement>('prompt'),
  negativeField: $('negative-field'),
  negative: $<HTMLInputElement>('negative-prompt'),
  steps: $<HTMLInputElement>('steps'),
  seed: $<HTMLInputElement>('seed'),
  guidance: $<HTMLInputElement>('guidance'),
  sampler: $<HTMLSelectElement>('sampler'),
  policy: $<HTMLSelectElement>('policy'),
  argsField: $('policy-args-field'),
  args: $<HTMLInputElement>('policy-args'),
  policyHint: $('policy-hint'),
  routerField: $('router-field'),
  router: $<HTMLSelectElement>('router'),
  routerHint: $('router-hint'),
  tauField: $('tau-field'),
  tau: $<HTMLInputElement>('tau'),
  compare: $<HTMLInputElement>('compare'),
  generate: $<HTMLButtonElement>('generate'),
  cancel: $<HTMLButtonElement>('cancel'),
  error: $('form-error'),
  live: $('live'),
  status: $('status'),
  stepCounter: $('step-counter'),
  stepMs: $('step-ms'),
  meanMs: $('mean-ms'),
  slotCounts: $('slot-counts'),
  stepMap: $<HTMLCanvasElement>('step-map'),
  stepTable: $<HTMLTableElement>('step-table'),
  cachedImage: $<HTMLImageElement>('cached-image'),
  cachedPlaceholder: $('cached-placeholder'),
  cachedCaption: $('cached-caption'),
  baselineImage: $<HTMLImageElement>('baseline-image'),
  baselinePlaceholder: $('baseline-placeholder'),
  baselineCaption: $('baseline-caption'),
  speedup: $('speedup'),
  psnr: $('psnr'),
  cur: $('cur'),
  macSpeedup: $('mac-speedup'),
  routerForm: $<HTMLFormElement>('router-form'),
  routerPick: $<HTMLSelectElement>('router-pick'),
  routerTau: $<HTMLInputElement>('router-tau'),
  routerShow: $<HTMLButtonElement>('router-show'),
  routerSummary: $('router-summary'),
  routerMap: $<HTMLCanvasElement>('router-map'),
  routerTable: $<HTMLTableElement>('router-table'),
};

let catalog: Catalog = { models: [], policies: [], samplers: [] };
/** Jobs of the run in progress, for Cancel. */
let running: JobView[] = [];
const routerViews = new Map<string, Promise<RouterView>>();

const model = (): Model => catalog.models.find((m) => m.id === ui.model.value) ?? catalog.models[0]!;
const fmtMs = (ms: number) => `${ms < 10 ? ms.toFixed(2) : ms.toFixed(1)} ms`;
const message = (err: unknown) => (err instanceof ApiError || err instanceof Error ? err.message : String(err));

function options(select: HTMLSelectElement, items: readonly { value: string; label: string }[], selected?: string): void {
  select.replaceChildren(...items.map(({ value, label }) => new Option(label, value, false, value === selected)));
}

function routerView(modelId: string, router: string, tau?: number): Promise<RouterView> {
  const key = `${modelId}/${router}/${tau ?? ''}`;
  let view = routerViews.get(key);
  if (!view) {
    view = getRouter(modelId, router, tau);
    view.catch(() => routerViews.delete(key));
    routerViews.set(key, view);
  }
  return view;
}

// ---- the request form ----

async function showModel(): Promise<void> {
  const m = model();
  const byClass = m.conditioning === 'class';
  ui.classField.hidden = !byClass;
  ui.promptField.hidden = byClass;
  ui.negativeField.hidden = byClass;
  ui.prompt.required = !byClass;
  if (byClass) options(ui.classLabel, (m.classes ?? []).map((name, i) => ({ value: String(i), label: name === String(i) ? name : `${i}: ${name}` })));
  ui.steps.value = String(m.defaults.steps);
  ui.guidance.value = String(m.defaults.guidance_scale);
  options(ui.sampler, catalog.samplers.map((s) => ({ value: s, label: s })), m.defaults.sampler);
  const routers = m.routers.map((r) => ({ value: r, label: r }));
  options(ui.router, routers);
  options(ui.routerPick, routers);
  ui.routerPick.disabled = ui.routerShow.disabled = routers.length === 0;
  const policies = catalog.policies.filter((p) => p !== 'router' || routers.length > 0);
  const preferred = routers.length > 0 ? 'router' : policies.includes('fora') ? 'fora' : 'none';
  options(ui.policy, policies.map((p) => ({ value: p, label: p })), preferred);
  await showPolicy();
  drawStepMap([], Number(ui.steps.value));
  if (routers.length > 0) await showRouter();
  else {
    ui.routerSummary.textContent = `${m.id} has no routers.`;
    drawRouter(null);
  }
}

async function showPolicy(): Promise<void> {
  const policy = ui.policy.value;
  const help = POLICY_HELP[policy] ?? { args: '', hint: '' };
  const isRouter = policy === 'router';
  ui.argsField.hidden = isRouter || policy === 'none';
  ui.args.value = help.args;
  ui.policyHint.textContent = help.hint;
  ui.routerField.hidden = !isRouter;
  ui.tauField.hidden = !isRouter;
  if (isRouter) await pickRouter();
}

/** A router is trained for a step count: the form follows it. */
async function pickRouter(): Promise<void> {
  const name = ui.router.value;
  if (!name) return;
  try {
    const view = await routerView(model().id, name);
    // The user may have moved on while the router loaded.
    if (ui.policy.value !== 'router' || ui.router.value !== name) return;
    ui.steps.value = String(view.steps);
    ui.routerHint.textContent = `${view.method === 'ltc' ? 'Learning-to-Cache' : 'HarmoniCa'} router for ${view.steps} ${view.sampler} steps (guidance ${view.cfg_scale} in training); its tau is ${view.default_tau}.`;
  } catch (err) {
    ui.routerHint.textContent = `Cannot read this router: ${message(err)}`;
  }
}

function cacheChoice(): GenerateBody['cache'] {
  const policy = ui.policy.value;
  if (policy === 'router') return { policy, router: ui.router.value, ...(ui.tau.value ? { tau: Number(ui.tau.value) } : {}) };
  const args = ui.args.value.trim();
  return { policy: args ? `${policy}:${args}` : policy };
}

function requestBody(): GenerateBody {
  const m = model();
  return {
    model: m.id,
    ...(m.conditioning === 'class'
      ? { class_label: Number(ui.classLabel.value) }
      : { prompt: ui.prompt.value, ...(ui.negative.value ? { negative_prompt: ui.negative.value } : {}) }),
    steps: Number(ui.steps.value),
    sampler: ui.sampler.value,
    guidance_scale: Number(ui.guidance.value),
    seed: Number(ui.seed.value),
    cache: cacheChoice(),
  };
}

// ---- the live view ----

function drawStepMap(progress: readonly (ProgressEvent | undefined)[], total: number): void {
  const computed = cssColor('--computed', '#1e3a8a');
  const reused = cssColor('--reused', '#f5c04a');
  const sublayers = model().sublayers;
  const maxMs = Math.max(0, ...progress.map((p) => p?.step_ms ?? 0));
  drawGrid(ui.stepMap, {
    sublayers,
    rows: total,
    cell(row, col) {
      const p = progress[row];
      if (!p) return null;
      // Without a mask (an older server) only all-computed or all-reused steps can be drawn.
      const bit = p.mask?.[col] ?? (p.reused === 0 ? '1' : p.computed === 0 ? '0' : '?');
      return { fill: bit === '1' ? computed : bit === '0' ? reused : '#9aa0a6' };
    },
    note(row) {
      const p = progress[row];
      return p ? { bar: maxMs > 0 ? p.step_ms / maxMs : 0, text: fmtMs(p.step_ms) } : null;
    },
  });
  const seen = progress.filter((p): p is ProgressEvent => p !== undefined);
  const c = seen.reduce((a, p) => a + p.computed, 0);
  const r = seen.reduce((a, p) => a + p.reused, 0);
  ui.stepMap.setAttribute('aria-label', seen.length
    ? `Cache decisions of ${seen.length} of ${total} steps over ${sublayers.length} sublayers: ${c} computed, ${r} reused. The table below has the numbers.`
    : `Steps by sublayers: no steps yet (${total} steps, ${sublayers.length} sublayers).`);
}

function resetRun(body: GenerateBody): void {
  ui.error.textContent = '';
  ui.stepCounter.textContent = `0 / ${body.steps}`;
  ui.stepMs.textContent = ui.meanMs.textContent = ui.slotCounts.textContent = '–';
  ui.stepTable.tBodies[0]!.replaceChildren();
  for (const [img, placeholder] of [[ui.cachedImage, ui.cachedPlaceholder], [ui.baselineImage, ui.baselinePlaceholder]] as const) {
    img.hidden = true;
    img.removeAttribute('src');
    placeholder.hidden = false;
    placeholder.textContent = 'waiting…';
  }
  ui.cachedCaption.textContent = `Cache: ${describeCache(body.cache)}`;
  ui.baselineCaption.textContent = 'Without cache, same seed';
  for (const dd of [ui.speedup, ui.psnr, ui.cur, ui.macSpeedup]) dd.textContent = '–';
  drawStepMap([], body.steps);
}

function describeCache(cache: GenerateBody['cache']): string {
  return cache.policy === 'router' ? `router ${cache.router}${cache.tau === undefined ? '' : ` at tau ${cache.tau}`}` : cache.policy;
}

function addStepRow(p: ProgressEvent): void {
  const row = ui.stepTable.tBodies[0]!.insertRow();
  const cells = [String(p.step), p.step_ms.toFixed(2), String(p.computed), String(p.reused), p.mask ?? ''];
  cells.forEach((text, i) => {
    const cell = i === 0 ? document.createElement('th') : row.insertCell();
    if (i === 0) {
      cell.setAttribute('scope', 'row');
      row.append(cell);
    }
    cell.textContent = text;
    if (i === 4) cell.className = 'mask';
  });
}

/**
 * Follows one job to its end. Resolves with the result; rejects with the failure. When the
 * stream is refused (the job expired, or the API answered an error) the job's own view
 * decides, so a result that exists is never lost to a broken stream.
 */
function follow(job: JobView, onProgress: (p: ProgressEvent) => void, onReconnect: (lastId: number) => void): Promise<JobResult> {
  return new Promise((resolve, reject) => {
    followJob(job.urls.events, {
      event(type, data) {
        if (type === 'progress') onProgress(data as unknown as ProgressEvent);
        else if (type === 'completed') resolve(data as unknown as JobResult);
        else if (type === 'failed' || type === 'canceled') reject(new Error(`${type}: ${String(data.message ?? data.code ?? '')}`));
      },
      reconnecting: onReconnect,
      lost() {
        getJob(job.urls.self).then((view) => {
          if (view.result) resolve(view.result);
          else reject(new Error(view.error ? `${view.state}: ${view.error.message}` : `lost the event stream of job ${job.id} (${view.state})`));
        }, reject);
      },
    });
  });
}

async function showImage(result: JobResult, img: HTMLImageElement, placeholder: HTMLElement, alt: string): Promise<void> {
  const first = result.images[0];
  if (!first) throw new Error('the job returned no image');
  img.alt = alt;
  img.src = first.url;
  await img.decode();
  img.hidden = false;
  placeholder.hidden = true;
}

function pixels(img: HTMLImageElement): Uint8ClampedArray {
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  if (!ctx) throw new Error('no 2d canvas');
  ctx.drawImage(img, 0, 0);
  return ctx.getImageData(0, 0, canvas.width, canvas.height).data;
}

function subject(body: GenerateBody): string {
  const m = model();
  return m.conditioning === 'class' ? `class ${m.classes?.[body.class_label ?? 0] ?? body.class_label}` : `"${body.prompt ?? ''}"`;
}

async function generate(): Promise<void> {
  const body = requestBody();
  const compare = ui.compare.checked && body.cache.policy !== 'none';
  resetRun(body);
  ui.generate.disabled = true;
  ui.live.setAttribute('aria-busy', 'true');
  const progress: (ProgressEvent | undefined)[] = [];
  try {
    ui.status.textContent = 'Submitting…';
    // The cached job first, so a single worker runs it first and the live view starts at once.
    const cached = await submit(body);
    const baseline = compare ? await submit({ ...body, cache: { policy: 'none' } }) : null;
    running = baseline ? [cached, baseline] : [cached];
    ui.cancel.disabled = false;
    ui.status.textContent = `Job ${cached.id} queued.`;
    if (!baseline) {
      ui.baselinePlaceholder.textContent = body.cache.policy === 'none' ? 'the policy is none' : 'not requested';
    }

    let cachedDone = false;
    const cachedResult = follow(cached, (p) => {
      progress[p.step - 1] = p;
      const seen = progress.filter((q): q is ProgressEvent => q !== undefined);
      ui.stepCounter.textContent = `${p.step} / ${p.total}`;
      ui.stepMs.textContent = fmtMs(p.step_ms);
      ui.meanMs.textContent = fmtMs(seen.reduce((a, q) => a + q.step_ms, 0) / seen.length);
      ui.slotCounts.textContent = `${seen.reduce((a, q) => a + q.computed, 0)} / ${seen.reduce((a, q) => a + q.reused, 0)}`;
      ui.status.textContent = `Step ${p.step} of ${p.total}: ${fmtMs(p.step_ms)}, ${p.computed} sublayers computed, ${p.reused} reused.`;
      addStepRow(p);
      drawStepMap(progress, p.total);
    }, (lastId) => {
      ui.status.textContent = `Connection lost; reconnecting (resumes after event ${lastId})…`;
    }).then(async (result) => {
      cachedDone = true;
      const r = result.report;
      await showImage(result, ui.cachedImage, ui.cachedPlaceholder, `Generated image, ${subject(body)}, seed ${r.seed}, with cache ${describeCache(body.cache)}`);
      ui.cachedCaption.textContent = `Cache: ${describeCache(body.cache)} · ${fmtMs(r.inference_ms)} inference`;
      ui.cur.textContent = r.cur.toFixed(3);
      ui.macSpeedup.textContent = `${r.mac_speedup.toFixed(2)}×`;
      ui.status.textContent = baseline ? 'Cached image ready; waiting for the uncached one…' : `Done in ${fmtMs(r.inference_ms)} of inference.`;
      return result;
    });
    const baselineResult = baseline
      ? follow(baseline, (p) => {
        if (cachedDone) ui.status.textContent = `Uncached job: step ${p.step} of ${p.total}.`;
      }, () => {}).then(async (result) => {
        await showImage(result, ui.baselineImage, ui.baselinePlaceholder, `Generated image, ${subject(body)}, seed ${result.report.seed}, without cache`);
        ui.baselineCaption.textContent = `Without cache, same seed · ${fmtMs(result.report.inference_ms)} inference`;
        return result;
      })
      : null;

    const [c, b] = await Promise.all([cachedResult, baselineResult]);
    if (b) {
      const speedup = b.report.inference_ms / c.report.inference_ms;
      const psnr = psnrRgba(pixels(ui.cachedImage), pixels(ui.baselineImage));
      ui.speedup.textContent = `${speedup.toFixed(2)}×`;
      ui.psnr.textContent = Number.isFinite(psnr) ? `${psnr.toFixed(2)} dB` : '∞ (identical)';
      ui.status.textContent = `Done: ${speedup.toFixed(2)}× the uncached speed, PSNR ${ui.psnr.textContent} against the uncached image.`;
    }
  } catch (err) {
    ui.error.textContent = message(err);
    ui.status.textContent = `Stopped: ${message(err)}`;
    // Without the cached image the other job has nothing to be compared with.
    await cancel();
  } finally {
    running = [];
    ui.generate.disabled = false;
    ui.cancel.disabled = true;
    ui.live.removeAttribute('aria-busy');
  }
}

async function cancel(): Promise<void> {
  ui.cancel.disabled = true;
  // A job that already ended answers 409: nothing to do.
  await Promise.all(running.map((job) => cancelJob(job.urls.cancel).catch(() => undefined)));
}

// ---- the router view ----

function drawRouter(view: RouterView | null): void {
  const p0 = cssColor('--p0', '#f7f4f9');
  const p1 = cssColor('--p1', '#3f007d');
  const table = ui.routerTable;
  table.tHead!.replaceChildren();
  table.tBodies[0]!.replaceChildren();
  if (!view) {
    drawGrid(ui.routerMap, { sublayers: model().sublayers, rows: 0, cell: () => null });
    ui.routerMap.setAttribute('aria-label', 'Router logits: none shown');
    return;
  }
  drawGrid(ui.routerMap, {
    sublayers: view.sublayers,
    rows: view.steps,
    cell(row, col) {
      const p = 1 / (1 + Math.exp(-view.logits[row]![col]!));
      const computed = view.decisions[row]![col] === '1';
      return { fill: mix(p0, p1, p), dot: computed ? (p > 0.5 ? '#ffffff' : '#1a1a1a') : undefined };
    },
  });
  const computed = view.decisions.join('').split('').filter((c) => c === '1').length;
  ui.routerMap.setAttribute('aria-label', `Router ${view.id}: ${view.steps} steps by ${view.sublayers.length} sublayers; at tau ${view.tau} it computes ${computed} and reuses ${view.steps * view.sublayers.length - computed}. The table below has the logits.`);
  const head = table.tHead!.insertRow();
  for (const name of ['Step', ...view.sublayers]) {
    const th = document.createElement('th');
    th.scope = 'col';
    th.textContent = name;
    head.append(th);
  }
  view.logits.forEach((row, step) => {
    const tr = table.tBodies[0]!.insertRow();
    const th = document.createElement('th');
    th.scope = 'row';
    th.textContent = String(step + 1);
    tr.append(th);
    row.forEach((logit, s) => {
      tr.insertCell().textContent = `${logit.toFixed(2)}${view.decisions[step]![s] === '1' ? '*' : ''}`;
    });
  });
}

async function showRouter(): Promise<void> {
  const name = ui.routerPick.value;
  if (!name) return;
  const tau = ui.routerTau.value ? Number(ui.routerTau.value) : undefined;
  try {
    const view = await routerView(model().id, name, tau);
    if (!ui.routerTau.value) ui.routerTau.value = String(view.tau);
    drawRouter(view);
    ui.routerSummary.textContent = `${view.id}: ${view.method === 'ltc' ? 'Learning-to-Cache' : 'HarmoniCa'} router for ${view.steps} ${view.sampler} steps. `
      + `At tau ${view.tau} it reuses ${(view.cur * 100).toFixed(1)}% of the sublayer evaluations (CUR ${view.cur.toFixed(3)}).`;
  } catch (err) {
    ui.routerSummary.textContent = `Cannot show router ${name}: ${message(err)}`;
    drawRouter(null);
  }
}

// ---- start ----

async function start(): Promise<void> {
  ui.seed.max = String(MAX_SEED - 1);
  ui.seed.value = String(Math.floor(Math.random() * MAX_SEED));
  ui.model.addEventListener('change', () => void showModel());
  ui.policy.addEventListener('change', () => void showPolicy());
  ui.router.addEventListener('change', () => void pickRouter());
  ui.form.addEventListener('submit', (e) => {
    e.preventDefault();
    void generate();
  });
  ui.cancel.addEventListener('click', () => void cancel());
  ui.routerForm.addEventListener('submit', (e) => {
    e.preventDefault();
    void showRouter();
  });
  ui.routerPick.addEventListener('change', () => {
    ui.routerTau.value = '';
    void showRouter();
  });
  try {
    catalog = await getCatalog();
  } catch (err) {
    ui.error.textContent = `Cannot list the models: ${message(err)}`;
    ui.generate.disabled = true;
    return;
  }
  options(ui.model, catalog.models.map((m) => ({ value: m.id, label: `${m.id} (${m.family}, ${m.conditioning})` })));
  await showModel();
  // For scripts and tests: the form is filled and the first router drawn.
  document.body.dataset.ready = 'true';
}

void start();
