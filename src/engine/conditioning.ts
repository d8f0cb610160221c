import { buildT5Encoder, t5ConfigFromHf, type T5Config } from '../models/t5.js';
import { TextTokenizer } from '../models/tokenizer.js';
import type { Weights } from '../models/weights.js';
import { GraphBuilder } from '../onnx/builder.js';
import { openGraph, type CompiledModel } from '../onnx/compiled-cache.js';
import type { Session, SessionConfig } from '../onnx/session.js';
import { tensor, type HostTensor } from '../tensor/tensor.js';
import { HarmonicaError } from '../util/errors.js';

/** Longest prompt accepted before tokenizing (tokens past the encoder's length are cut and reported). */
export const MAX_PROMPT_CHARS = 2000;

export interface ConditionRequest {
  classLabel?: number;
  prompt?: string;
  negativePrompt?: string;
  n: number;
}

export interface Conditions {
  feeds: Record<string, HostTensor>;
  /** Facts for the report, e.g. prompt truncation. */
  notes: Record<string, unknown>;
}

/**
 * Turns a request's condition into the model's extra inputs for `rows` rows: the first n
 * conditional, the rest (classifier-free guidance) unconditional.
 */
export interface Conditioning {
  validate(req: ConditionRequest): void;
  /** Opens what `build` needs for `rows` rows (e.g. the text encoder's session) ahead of it. */
  prepare?(rows: number): Promise<void>;
  build(req: ConditionRequest, rows: number): Promise<Conditions>;
}

const bad = (msg: string) => new HarmonicaError('BAD_INPUT', msg);

/** Class labels; the null class (index numClasses) is the unconditional row. */
export class ClassConditioning implements Conditioning {
  constructor(
    readonly modelId: string,
    readonly numClasses: number,
  ) {}

  validate(req: ConditionRequest): void {
    if (req.prompt !== undefined) throw bad(`${this.modelId} is class-conditional: give a class, not a prompt`);
    const c = req.classLabel;
    if (c === undefined) throw bad(`${this.modelId} needs a class label 0..${this.numClasses - 1}`);
    if (!Number.isInteger(c) || c < 0 || c >= this.numClasses) throw bad(`unknown class ${c}: ${this.modelId} has classes 0..${this.numClasses - 1}`);
  }

  async build(req: ConditionRequest, rows: number): Promise<Conditions> {
    const labels = Array.from({ length: rows }, (_, i) => (i < req.n ? req.classLabel! : this.numClasses));
    return { feeds: { y: tensor('int64', [rows], labels) }, notes: {} };
  }
}

export interface TextEncoderFiles {
  /** transformers config.json of the T5 encoder. */
  config: unknown;
  /** Read only when the encoder graph must be built (not when it comes from the compiled-model cache). */
  loadWeights: () => Weights;
  tokenizer: TextTokenizer;
  maxLength: number;
}

/**
 * Captions through the tokenizer and the T5 encoder; the unconditional rows encode the
 * negative prompt (default empty), as the PixArt-alpha pipeline does.
 */
export class TextConditioning implements Conditioning {
  private readonly config: T5Config;
  private encoderSession: Promise<Session> | null = null;

  constructor(
    readonly modelId: string,
    private readonly files: TextEncoderFiles,
    private readonly session: SessionConfig,
    /** Pixel size [H, W] for models with resolution micro-conditions; null otherwise. */
    private readonly microConditions: [number, number] | null,
    private readonly compiled: CompiledModel = { cache: null, key: {} },
  ) {
    this.config = t5ConfigFromHf(files.config, files.maxLength);
  }

  validate(req: ConditionRequest): void {
    if (req.classLabel !== undefined) throw bad(`${this.modelId} is text-conditional: give a prompt, not a class`);
    if (typeof req.prompt !== 'string') throw bad(`${this.modelId} needs a prompt`);
    for (const text of [req.prompt, req.negativePrompt ?? '']) {
      if (text.length > MAX_PROMPT_CHARS) throw new HarmonicaError('PROMPT_TOO_LONG', `prompt of ${text.length} characters is over the limit of ${MAX_PROMPT_CHARS}`);
    }
  }

  /**
   * One batch-1 encoder session for every request: a request has at most two distinct
   * prompts (the caption and the negative one), and one session means one copy of the
   * encoder's weights in ORT (T5-XXL: 4.7 GB at int8) whatever the batch.
   */
  private encoder(): Promise<Session> {
    if (!this.encoderSession) {
      const L = this.files.maxLength;
      const build = () => {
        const b = new GraphBuilder('t5_encoder');
        const ids = b.input('input_ids', 'int64', [1, L]);
        const mask = b.input('attention_mask', 'int64', [1, L]);
        b.output(buildT5Encoder(b, this.files.loadWeights(), this.config, ids, mask), 'hidden');
        return b.graph;
      };
      const key = { ...this.compiled.key, graph: 't5_encoder', rows: 1, maxLength: L };
      this.encoderSession = openGraph(this.compiled.cache, key, build, this.session).then((o) => o.session);
    }
    return this.encoderSession;
  }

  private async encode(e: { ids: number[]; mask: number[] }): Promise<Float32Array> {
    const L = this.files.maxLength;
    const { hidden } = await (await this.encoder()).run({ input_ids: tensor('int64', [1, L], e.ids), attention_mask: tensor('int64', [1, L], e.mask) });
    return hidden!.data as Float32Array;
  }

  /** The encoder session serves every batch size. */
  async prepare(): Promise<void> {
    await this.encoder();
  }

  async build(req: ConditionRequest, rows: number): Promise<Conditions> {
    const L = this.files.maxLength;
    const positive = this.files.tokenizer.encode(req.prompt!, L);
    const negative = this.files.tokenizer.encode(req.negativePrompt ?? '', L);
    const rowsEncoded = Array.from({ length: rows }, (_, i) => (i < req.n ? positive : negative));
    const pos = await this.encode(positive);
    const neg = rows > req.n ? await this.encode(negative) : pos;
    const width = pos.length;
    const data = new Float32Array(rows * width);
    for (let i = 0; i < rows; i++) data.set(i < req.n ? pos : neg, i * width);
    const hidden = tensor('float32', [rows, L, width / L], data);
    const feeds: Record<string, HostTensor> = {
      encoder_hidden_states: hidden,
      encoder_attention_mask: tensor('float32', [rows, L], rowsEncoded.flatMap((e) => e.mask)),
    };
    if (this.microConditions) {
      const [h, w] = this.microConditions;
      feeds.resolution = tensor('float32', [rows, 2], Array.from({ length: rows }, () => [h, w]).flat());
      feeds.aspect_ratio = tensor('float32', [rows, 1], new Array<number>(rows).fill(h / w));
    }
    return { feeds, notes: { promptTokens: positive.length, promptTruncated: positive.truncated } };
  }
}
