import ort from 'onnxruntime-node';
import { mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DType } from '../tensor/dtype.js';
import { tensor, type HostTensor } from '../tensor/tensor.js';
import { log as defaultLog, type Logger } from '../util/log.js';
import type { Graph } from './ir.js';
import { initializerBytes, PROTOBUF_LIMIT, saveModel, serializeModel } from './writer.js';

export type Device = 'cpu' | 'cuda';

export interface SessionConfig {
  /** Intra-op threads; default: all cores. */
  threads?: number;
  device?: Device;
  optimization?: 'disabled' | 'basic' | 'extended' | 'all';
  /** Let idle ORT threads spin (lower latency for one session run back to back). */
  spin?: boolean;
  logger?: Logger;
  /**
   * A graph whose weights pass this many bytes is written to a model file with its weights
   * as external data and opened from there (default: near the 2 GiB protobuf limit).
   */
  externalDataBytes?: number;
}

/** Where to open a model from: the graph itself, its serialized bytes, or a file on disk. */
export type ModelSource = Graph | Uint8Array | string;

/** An input as the session declares it (dimensions ORT does not know are -1). */
export interface SessionInput {
  name: string;
  dtype: DType;
  shape: number[];
}

export const DEFAULT_EXTERNAL_DATA_BYTES = PROTOBUF_LIMIT - (64 << 20);

/** Element types ORT's JavaScript API can exchange. */
const ORT_TYPES: Partial<Record<DType, ort.Tensor.Type>> = {
  float64: 'float64', float32: 'float32', float16: 'float16', int64: 'int64', int32: 'int32',
  int16: 'int16', int8: 'int8', uint64: 'uint64', uint32: 'uint32', uint16: 'uint16', uint8: 'uint8', bool: 'bool',
};

export function toOrt(t: HostTensor): ort.Tensor {
  const type = ORT_TYPES[t.dtype];
  if (!type) throw new Error(`onnxruntime-node cannot take ${t.dtype} tensors; cast to float32 first`);
  return new ort.Tensor(type, t.data as never, [...t.shape]);
}

export function fromOrt(t: ort.Tensor): HostTensor {
  const dtype = (Object.keys(ORT_TYPES) as DType[]).find((d) => ORT_TYPES[d] === t.type);
  if (!dtype) throw new Error(`unsupported ORT output type ${t.type}`);
  return tensor(dtype, t.dims as number[], t.data as never);
}

/** One ONNX Runtime inference session over a graph we built (or a model file). */
export class Session {
  private constructor(
    private readonly inner: ort.InferenceSession,
    readonly device: Device,
    /** Whether ORT maps the weights from a file (external data) rather than holding a copy. */
    readonly weightsMapped: boolean,
  ) {}

  /**
   * Opens a session. A graph past `externalDataBytes` of weights goes through a temporary
   * model file with external data (one protobuf message cannot exceed 2 GiB); the file is
   * removed once ORT holds it (mapped files stay readable after unlinking).
   */
  static async create(model: ModelSource, config: SessionConfig = {}): Promise<Session> {
    if (typeof model === 'string' || model instanceof Uint8Array) return Session.open(model, config, false);
    if (initializerBytes(model) <= (config.externalDataBytes ?? DEFAULT_EXTERNAL_DATA_BYTES)) return Session.open(serializeModel(model), config, false);
    const dir = await mkdtemp(join(tmpdir(), 'harmonica-model-'));
    try {
      const path = join(dir, 'model.onnx');
      await saveModel(model, path, 0);
      return await Session.open(path, config, true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /**
   * `mapWeights`: the model file keeps its weights as external data; ORT then maps that file
   * instead of copying it, which it does only without prepacking (prepacked weights are a
   * private copy: +1x the weights in memory, for 5-15% faster matmuls).
   */
  static async open(source: Uint8Array | string, config: SessionConfig, mapWeights: boolean): Promise<Session> {
    const logger = config.logger ?? defaultLog;
    const session: Record<string, unknown> = { intra_op: { allow_spinning: config.spin ? '1' : '0' } };
    if (mapWeights) session.disable_prepacking = '1';
    const options: ort.InferenceSession.SessionOptions = {
      intraOpNumThreads: config.threads ?? availableParallelism(),
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: config.optimization ?? 'all',
      logSeverityLevel: 3, // errors only: ORT warns about every unused constant it folds away
      // Idle pool threads would otherwise spin after each run and steal the cores from the
      // next session's run (several sessions alternate in a denoising loop).
      extra: { session },
    };
    const open = (providers: string[]) =>
      typeof source === 'string'
        ? ort.InferenceSession.create(source, { ...options, executionProviders: providers })
        : ort.InferenceSession.create(source, { ...options, executionProviders: providers });
    if (config.device === 'cuda') {
      // With ['cuda', 'cpu'] onnxruntime-node throws instead of falling back, so fall back here.
      try {
        return new Session(await open(['cuda', 'cpu']), 'cuda', mapWeights);
      } catch (err) {
        logger.warn({ err: (err as Error).message }, 'CUDA execution provider unavailable, falling back to CPU');
      }
    }
    return new Session(await open(['cpu']), 'cpu', mapWeights);
  }

  get inputNames(): readonly string[] {
    return this.inner.inputNames;
  }

  get outputNames(): readonly string[] {
    return this.inner.outputNames;
  }

  /** The tensor inputs with their element types and shapes, as the model file declares them. */
  get inputs(): SessionInput[] {
    return this.inner.inputMetadata.flatMap((m) => {
      if (!m.isTensor) return [];
      const dtype = (Object.keys(ORT_TYPES) as DType[]).find((d) => ORT_TYPES[d] === m.type);
      if (!dtype) throw new Error(`unsupported ORT input type ${m.type}`);
      return [{ name: m.name, dtype, shape: m.shape.map((d) => (typeof d === 'number' ? d : -1)) }];
    });
  }

  async run(feeds: Record<string, HostTensor>, fetches?: readonly string[]): Promise<Record<string, HostTensor>> {
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [name, t] of Object.entries(feeds)) ortFeeds[name] = toOrt(t);
    const results = fetches ? await this.inner.run(ortFeeds, [...fetches]) : await this.inner.run(ortFeeds);
    const out: Record<string, HostTensor> = {};
    for (const [name, t] of Object.entries(results)) out[name] = fromOrt(t);
    return out;
  }

  async release(): Promise<void> {
    await this.inner.release();
  }
}
