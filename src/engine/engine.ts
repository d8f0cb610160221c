import { availableParallelism, cpus } from 'node:os';
import { join } from 'node:path';
import { CachedExecutor, parsePolicy, type CachePolicy } from '../cache/index.js';
import { resolveRouterSpec } from '../cache/router.js';
import { macSpeedup } from '../cache/macs.js';
import { staticSchedule, storeMask } from '../cache/policy.js';
import { splitGuided, dropLearnedSigma, duplicateForCfg } from '../diffusion/cfg.js';
import { createSampler, initialNoise } from '../diffusion/sampler.js';
import { isOriginalDitLayout, originalDitToDiffusers } from '../models/checkpoints/dit.js';
import { createDenoiser, type Denoiser } from '../models/denoiser.js';
import type { DitConfig } from '../models/dit.js';
import { buildVaeDecoder, vaeConfigFromDiffusers } from '../models/vae.js';
import { TextTokenizer } from '../models/tokenizer.js';
import { parseComponentPrecision, type ComponentPrecision, type Precision } from '../models/precision.js';
import { Weights } from '../models/weights.js';
import { GraphBuilder } from '../onnx/builder.js';
import { CompiledCache, openGraph, type CompiledModel } from '../onnx/compiled-cache.js';
import type { Session, SessionConfig } from '../onnx/session.js';
import { Rng } from '../tensor/rng.js';
import { SafetensorsFileSync } from '../tensor/safetensors.js';
import { tensor, type HostTensor } from '../tensor/tensor.js';
import { defaultCacheDir } from '../util/cache-dir.js';
import { HarmonicaError } from '../util/errors.js';
import { ClassConditioning, TextConditioning, type Conditioning } from './conditioning.js';
import { openModelPackage, WEIGHTS_FILE, type ModelPackage } from './package.js';

/** Request limits, shared by the CLI and the HTTP API. */
export const LIMITS = { maxSteps: 1000, maxImages: 8, maxCfg: 30 };

export interface GenerateRequest {
  /** Class-conditional models. */
  classLabel?: number;
  /** Text-conditional models; the negative prompt conditions the guidance rows (default ""). */
  prompt?: string;
  negativePrompt?: string;
  steps?: number;
  sampler?: string;
  /** Classifier-free guidance scale; 1 disables guidance (no unconditional half). */
  cfg?: number;
  seed?: number;
  n?: number;
  /** Cache policy spec, e.g. `none`, `fora:2`, `router:file.json@0.1`. */
  cache?: string;
}

export interface StepEvent {
  step: number;
  total: number;
  ms: number;
  computed: number;
  reused: number;
  /** Which slots computed at this step, in slot order (the row of the report's decisions). */
  decisions: readonly boolean[];
}

/** A request with every default filled in. */
export type ResolvedRequest = Required<Omit<GenerateRequest, 'classLabel' | 'prompt' | 'negativePrompt'>> & Pick<GenerateRequest, 'classLabel' | 'prompt' | 'negativePrompt'>;

export interface GenerateReport {
  model: string;
  modelSha256: string;
  policy: string;
  sampler: string;
  steps: number;
  cfg: number;
  seed: number;
  n: number;
  stepsMs: number[];
  /** Inference time: the denoising loop and decoding. */
  totalMs: number;
  computedSlots: number;
  reusedSlots: number;
  /** Cache usage ratio: reused slots / (steps x slots). */
  cur: number;
  macSpeedup: number;
  /** Per step, which slots computed (for heat maps). */
  decisions: boolean[][];
  machine: string;
  /** Engine.open: reading the manifest and checking file hashes. */
  openMs: number;
  /** Time this request waited for sessions to be built or loaded (0 once they are warm). */
  sessionsMs: number;
  /** Whether the step graph came from the compiled-model cache ('off': no cache directory). */
  compiledCache: 'hit' | 'miss' | 'off';
  /** Peak resident memory of the process so far (mapped weight files included). */
  peakRssMb: number;
  /** How each component's matrix weights ran (precision.ts). */
  precision: ComponentPrecision;
  /** e.g. promptTokens and promptTruncated for text models. */
  notes: Record<string, unknown>;
}

export interface GenerateResult {
  /** [C, H, W] in [-1, 1] each. */
  images: HostTensor[];
  report: GenerateReport;
}

export interface GenerateOptions {
  onStep?: (e: StepEvent) => void;
  signal?: AbortSignal;
}

export interface EngineOptions extends SessionConfig {
  /** Compiled models and file hashes (default: defaultCacheDir(); null keeps nothing on disk). */
  cacheDir?: string | null;
  /** Per component; default fp32 everywhere. */
  precision?: ComponentPrecision;
}

/** Image encoders write 1 (gray) or 3 (RGB) channels; anything else is a latent for a VAE. */
const IMAGE_CHANNELS = [1, 3];

/**
 * Loads a model package once, keeps its sessions warm and runs generation requests. Weights
 * are read only to build a graph: a graph found in the compiled-model cache needs none, and
 * ORT maps its weights from the cached file.
 */
export class Engine {
  private readonly executors = new Map<string, Promise<CachedExecutor>>();
  private readonly decoders = new Map<number, Promise<Session>>();
  private busy: Promise<unknown> = Promise.resolve();
  private pinned: Weights | null = null;
  /** `cpu` once a session fell back from CUDA. */
  private device: 'cpu' | 'cuda';

  private constructor(
    readonly pkg: ModelPackage,
    readonly model: Denoiser,
    private readonly vae: { load: () => Weights; config: ReturnType<typeof vaeConfigFromDiffusers>; key: Record<string, unknown> } | null,
    readonly conditioning: Conditioning,
    private readonly session: SessionConfig,
    private readonly compiled: CompiledModel,
    /** Engine.open's own time: manifest, hashes, tokenizer. */
    readonly openMs: number,
    /** How each component's matrix weights run (every component named). */
    readonly precision: ComponentPrecision,
  ) {
    this.device = session.device ?? 'cpu';
  }

  static async open(nameOrDir: string, options: EngineOptions = {}): Promise<Engine> {
    const t0 = performance.now();
    const { cacheDir = defaultCacheDir(), precision: asked, ...session } = options;
    const precision = parseComponentPrecision(asked);
    const config: SessionConfig = { threads: availableParallelism(), ...session };
    for (const [component, p] of Object.entries(precision)) {
      if (p === 'fp16' && config.device !== 'cuda') {
        throw new HarmonicaError('BAD_INPUT', `precision.${component} fp16 runs float16 MatMuls, which ONNX Runtime has on CUDA only: use device cuda, or fp32, int8 or int4 on the CPU`);
      }
    }
    const pkg = await openModelPackage(nameOrDir, cacheDir);
    const m = pkg.manifest;
    const cache = cacheDir ? new CompiledCache(cacheDir) : null;
    const model = createDenoiser(m.family, m.config);
    if (precision.textEncoder && model.conditioning !== 'text') throw new HarmonicaError('BAD_INPUT', `precision.textEncoder: ${m.id} is class-conditional and has no text encoder`);
    const used: ComponentPrecision = { transformer: precision.transformer ?? 'fp32', ...(model.conditioning === 'text' ? { textEncoder: precision.textEncoder ?? 'fp32' } : {}) };
    const load = (file: string, p?: Precision) => () => Weights.load(join(pkg.dir, file), p, `${m.id}/${file}`);
    const vae = m.vae ? { load: load(m.vae.weights), config: vaeConfigFromDiffusers(m.vae.config), key: { vae: m.files[m.vae.weights], config: m.vae.config } } : null;
    let conditioning: Conditioning;
    if (model.conditioning === 'text') {
      const te = m.textEncoder;
      if (!te) throw new HarmonicaError('BAD_CONFIG', `${m.id}: a text-conditional model needs "textEncoder" in its manifest`);
      const tokenizer = await TextTokenizer.load(join(pkg.dir, te.tokenizer));
      const [, h, w] = model.latentShape;
      const scale = vae ? 8 : 1;
      const micro = (m.config as { useAdditionalConditions?: boolean }).useAdditionalConditions ? [h * scale, w * scale] as [number, number] : null;
      const encoder = { cache, key: { t5: m.files[te.weights], config: te.config, maxLength: te.maxLength, precision: used.textEncoder } };
      conditioning = new TextConditioning(m.id, { config: te.config, loadWeights: load(te.weights, used.textEncoder), tokenizer, maxLength: te.maxLength }, config, micro, encoder);
    } else {
      conditioning = new ClassConditioning(m.id, (m.config as { numClasses: number }).numClasses);
    }
    const compiled = { cache, key: { weights: pkg.sha256, family: m.family, layout: m.layout, config: m.config, precision: used.transformer } };
    return new Engine(pkg, model, vae, conditioning, config, compiled, performance.now() - t0, used);
  }

  get id(): string {
    return this.pkg.manifest.id;
  }

  /**
   * The denoiser's weights (canonical diffusers keys), read from the package on first access
   * and kept (training builds several graphs from them).
   */
  get weights(): Weights {
    return (this.pinned ??= this.readWeights());
  }

  /** A fresh read, dropped once the graph is built, unless someone holds `weights`. */
  private readWeights(): Weights {
    if (this.pinned) return this.pinned;
    const m = this.pkg.manifest;
    // Read tensor by tensor as the graph is built (quantized ones never whole); the original
    // DiT layout is remapped, so it is read whole.
    const file = SafetensorsFileSync.open(join(this.pkg.dir, WEIGHTS_FILE));
    const original = m.family === 'dit' && (m.layout === 'original' || isOriginalDitLayout(file.names()));
    return new Weights(original ? originalDitToDiffusers(file.readAll(), m.config as unknown as DitConfig) : file, `${m.id}/${WEIGHTS_FILE}`, this.precision.transformer);
  }

  /** Where this engine runs, for reports: `cpu` when CUDA was asked for and fell back. */
  get machine(): string {
    return `${cpus().length} x ${cpus()[0]?.model ?? 'CPU'}, ${this.device}`;
  }

  /** The step executor for `batch` rows; `tokens`: a caption length other than the model's (forward). */
  private executor(batch: number, tokens?: number): Promise<CachedExecutor> {
    const m = this.pkg.manifest;
    const other = tokens !== undefined && tokens !== (m.config as { maxTokens?: number }).maxTokens;
    const key = other ? `${batch}x${tokens}` : String(batch);
    let e = this.executors.get(key);
    if (!e) {
      const config = other ? { ...m.config, maxTokens: tokens } : m.config;
      const model = other ? createDenoiser(m.family, config) : this.model;
      e = CachedExecutor.create(model, () => this.readWeights(), batch, this.session, { ...this.compiled, key: { ...this.compiled.key, config } });
      this.executors.set(key, e);
    }
    return e;
  }

  private decoder(batch: number): Promise<Session> {
    let d = this.decoders.get(batch);
    if (!d) {
      const vae = this.vae!;
      const [c, h, w] = this.model.latentShape;
      const build = () => {
        const b = new GraphBuilder('vae_decoder');
        b.output(buildVaeDecoder(b, vae.load(), vae.config, b.input('latents', 'float32', [batch, c, h, w])), 'image');
        return b.graph;
      };
      this.decoders.set(batch, (d = openGraph(this.compiled.cache, { ...vae.key, graph: 'vae_decoder', batch, latent: [c, h, w] }, build, this.session).then((o) => o.session)));
    }
    return d;
  }

  /** Fills defaults and rejects bad requests before any work starts. */
  resolve(req: GenerateRequest): ResolvedRequest {
    const d = this.pkg.manifest.defaults;
    const r: ResolvedRequest = {
      classLabel: req.classLabel, prompt: req.prompt, negativePrompt: req.negativePrompt,
      steps: req.steps ?? d.steps, sampler: req.sampler ?? d.sampler, cfg: req.cfg ?? d.cfg, seed: req.seed ?? 0, n: req.n ?? 1, cache: resolveRouterSpec(req.cache ?? 'none', this.pkg.dir),
    };
    const bad = (msg: string) => new HarmonicaError('BAD_INPUT', msg);
    // From the manifest alone: the service validates requests without loading the engine.
    const m = this.pkg.manifest;
    const channels = (m.config as { inChannels: number }).inChannels;
    if (!m.vae && !IMAGE_CHANNELS.includes(channels)) {
      throw new HarmonicaError('BAD_CONFIG', `${m.id} makes ${channels}-channel latents and its package has no VAE to decode them: convert it again with --vae DIR (a diffusers AutoencoderKL folder)`);
    }
    this.conditioning.validate(r);
    if (!Number.isInteger(r.steps) || r.steps < 1 || r.steps > LIMITS.maxSteps) throw bad(`steps must be an integer in 1..${LIMITS.maxSteps}, got ${r.steps}`);
    if (!Number.isInteger(r.n) || r.n < 1 || r.n > LIMITS.maxImages) throw bad(`n must be an integer in 1..${LIMITS.maxImages}, got ${r.n}`);
    if (!(r.cfg >= 1 && r.cfg <= LIMITS.maxCfg)) throw bad(`cfg must be in [1, ${LIMITS.maxCfg}], got ${r.cfg}`);
    if (!Number.isSafeInteger(r.seed) || r.seed < 0) throw bad(`seed must be a non-negative integer, got ${r.seed}`);
    return r;
  }

  /**
   * Generates images. Requests run one at a time: sessions and the executor's cache belong
   * to one trajectory at a time (and ORT already uses every core for one request).
   */
  async generate(request: GenerateRequest, options: GenerateOptions = {}): Promise<GenerateResult> {
    const req = this.resolve(request);
    const run = this.busy.then(() => this.run(req, options));
    this.busy = run.catch(() => undefined);
    return run;
  }

  private async run(req: ResolvedRequest, options: GenerateOptions): Promise<GenerateResult> {
    const policy: CachePolicy = parsePolicy(req.cache);
    const slots = this.model.slots;
    policy.start({ steps: req.steps, sampler: req.sampler, slots, model: { id: this.id, sha256: this.pkg.sha256 }, modelDir: this.pkg.dir });
    // Pixel-space models clip the predicted x0 to the image range at every step, as ADM/DDPM
    // sample images; latents (decoded by a VAE) are not clipped, as in DiT.
    const sampler = createSampler(req.sampler, { steps: req.steps, clipX0: this.vae ? undefined : 1 });
    const [c, h, w] = this.model.latentShape;
    const guided = req.cfg > 1;
    const rows = guided ? 2 * req.n : req.n;
    // Sessions first (built, or loaded from the compiled-model cache), timed apart from
    // inference; one after the other, so one graph's host weights are freed before the next
    // is built.
    const t0 = performance.now();
    await this.conditioning.prepare?.(rows);
    const executor = await this.executor(rows);
    if (this.vae) await this.decoder(req.n);
    const sessionsMs = performance.now() - t0;
    if (executor.device === 'cpu') this.device = 'cpu';
    const conditions = await this.conditioning.build(req, rows);
    const rng = new Rng(req.seed);
    let x = initialNoise(req.n * c * h * w, rng.fork('noise'));
    const stepRng = rng.fork('sampler');
    executor.reset();
    const start = performance.now();
    const stepsMs: number[] = [];
    const decisions: boolean[][] = [];
    // A static schedule tells up front which fresh outputs a later step reuses; only those
    // are copied out of ORT.
    const schedule = policy.static ? staticSchedule(policy, req.steps, slots.length) : null;
    const store = schedule ? storeMask(schedule) : null;
    for (let i = 0; i < req.steps; i++) {
      options.signal?.throwIfAborted();
      const t0 = performance.now();
      const timestep = sampler.timesteps[i]!;
      const input = tensor('float32', [rows, c, h, w], guided ? duplicateForCfg(x) : x);
      const feeds = { ...conditions.feeds, x: input, t: tensor('float32', [rows], new Array<number>(rows).fill(timestep)) };
      const mask = schedule ? schedule[i]! : policy.decide(i, policy.probes.length ? await executor.probe(feeds, policy.probes) : {});
      const { out, computed } = await executor.step(feeds, mask, store ? store[i]! : true);
      const o = out.data as Float32Array;
      const eps = guided ? splitGuided(o, req.n, this.model.outChannels, c, h * w, req.cfg) : dropLearnedSigma(o, req.n, this.model.outChannels, c, h * w);
      x = sampler.step(i, x, eps, stepRng);
      const ms = performance.now() - t0;
      stepsMs.push(ms);
      decisions.push(computed);
      const nComputed = computed.filter(Boolean).length;
      options.onStep?.({ step: i + 1, total: req.steps, ms, computed: nComputed, reused: slots.length - nComputed, decisions: computed });
    }
    const images = await this.decode(x, req.n);
    const totalMs = performance.now() - start;
    const computedSlots = decisions.flat().filter(Boolean).length;
    const reusedSlots = decisions.length * slots.length - computedSlots;
    return {
      images,
      report: {
        model: this.id, modelSha256: this.pkg.sha256, policy: policy.spec, sampler: req.sampler, steps: req.steps, cfg: req.cfg,
        seed: req.seed, n: req.n, stepsMs, totalMs, computedSlots, reusedSlots, cur: reusedSlots / (decisions.length * slots.length),
        macSpeedup: macSpeedup(this.model, decisions), decisions, machine: this.machine, precision: this.precision,
        openMs: this.openMs, sessionsMs, compiledCache: executor.cacheOutcome, peakRssMb: Math.round(process.resourceUsage().maxRSS / 1024),
        notes: conditions.notes,
      },
    };
  }

  private async decode(x: Float32Array, n: number): Promise<HostTensor[]> {
    const [c, h, w] = this.model.latentShape;
    let pixels = tensor('float32', [n, c, h, w], x);
    if (this.vae) pixels = (await (await this.decoder(n)).run({ latents: pixels })).image!;
    const [, pc, ph, pw] = pixels.shape as [number, number, number, number];
    const size = pc * ph * pw;
    const data = pixels.data as Float32Array;
    return Array.from({ length: n }, (_, i) => tensor('float32', [pc, ph, pw], data.slice(i * size, (i + 1) * size)));
  }

  /**
   * One model evaluation on given tensors (the `forward` command): the raw output. Captions
   * may have any length and an integer, boolean or float mask, as diffusers takes them: a
   * shorter caption is padded with masked tokens to the model's length, a longer one runs
   * on a graph built for its length.
   */
  async forward(inputs: Record<string, HostTensor>): Promise<HostTensor> {
    const xIn = inputs.x;
    if (!xIn) throw new HarmonicaError('BAD_INPUT', 'forward needs an input tensor "x" [B, C, H, W]');
    const rows = xIn.shape[0]!;
    const t = inputs.t;
    if (!t || t.shape.length !== 1 || t.shape[0] !== rows) throw new HarmonicaError('BAD_INPUT', `forward needs "t" of shape [${rows}]`);
    const feeds: Record<string, HostTensor> = { ...inputs, t: toFloat32(t) };
    if (inputs.y && inputs.y.dtype !== 'int64') feeds.y = tensor('int64', [...inputs.y.shape], Array.from(inputs.y.data as ArrayLike<number | bigint>, Number));
    let tokens: number | undefined;
    if (this.model.conditioning === 'text') {
      const modelTokens = (this.pkg.manifest.config as { maxTokens: number }).maxTokens;
      const caption = captionFeeds(inputs.encoder_hidden_states, inputs.encoder_attention_mask, rows, modelTokens);
      Object.assign(feeds, caption);
      tokens = caption.encoder_attention_mask.shape[1]!;
    }
    const executor = await this.executor(rows, tokens);
    executor.reset();
    const { out } = await executor.step(feeds, this.model.slots.map(() => true), false);
    return out;
  }
}

/** Any numeric or boolean tensor as float32 (as diffusers casts masks and timesteps). */
function toFloat32(t: HostTensor): HostTensor {
  return t.dtype === 'float32' ? t : tensor('float32', [...t.shape], Array.from(t.data as ArrayLike<number | bigint>, Number));
}

/**
 * `encoder_hidden_states` [B, L, C] and its mask [B, L] (any numeric or boolean type, 1 = real
 * token; all ones when absent) as float32, padded with masked zero tokens to `minTokens`.
 */
function captionFeeds(states: HostTensor | undefined, mask: HostTensor | undefined, rows: number, minTokens: number): { encoder_hidden_states: HostTensor; encoder_attention_mask: HostTensor } {
  if (!states || states.shape.length !== 3 || states.shape[0] !== rows) {
    throw new HarmonicaError('BAD_INPUT', `forward needs "encoder_hidden_states" of shape [${rows}, L, C], got ${states ? `[${states.shape}]` : 'none'}`);
  }
  const [, length, channels] = states.shape as [number, number, number];
  if (mask && (mask.shape.length !== 2 || mask.shape[0] !== rows || mask.shape[1] !== length)) {
    throw new HarmonicaError('BAD_INPUT', `"encoder_attention_mask" must be [${rows}, ${length}] like the caption, got [${mask.shape}]`);
  }
  const tokens = Math.max(length, minTokens);
  const src = toFloat32(states).data as Float32Array;
  const m = mask ? (toFloat32(mask).data as Float32Array) : new Float32Array(rows * length).fill(1);
  const outStates = new Float32Array(rows * tokens * channels);
  const outMask = new Float32Array(rows * tokens);
  for (let r = 0; r < rows; r++) {
    outStates.set(src.subarray(r * length * channels, (r + 1) * length * channels), r * tokens * channels);
    outMask.set(m.subarray(r * length, (r + 1) * length), r * tokens);
  }
  return { encoder_hidden_states: tensor('float32', [rows, tokens, channels], outStates), encoder_attention_mask: tensor('float32', [rows, tokens], outMask) };
}
