import ort from 'onnxruntime-node';
import { availableParallelism } from 'node:os';
import type { DType } from '../tensor/dtype.js';
import { tensor, type HostTensor } from '../tensor/tensor.js';
import { log as defaultLog, type Logger } from '../util/log.js';
import type { Graph } from './ir.js';
import { serializeModel } from './writer.js';

export type Device = 'cpu' | 'cuda';

export interface SessionConfig {
  /** Intra-op threads; default: all cores. */
  threads?: number;
  device?: Device;
  optimization?: 'disabled' | 'basic' | 'extended' | 'all';
  /** Let idle ORT threads spin (lower latency for one session run back to back). */
  spin?: boolean;
  logger?: Logger;
}

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
  ) {}

  static async create(model: Graph | Uint8Array | string, config: SessionConfig = {}): Promise<Session> {
    const logger = config.logger ?? defaultLog;
    const source = typeof model === 'string' || model instanceof Uint8Array ? model : serializeModel(model);
    const options: ort.InferenceSession.SessionOptions = {
      intraOpNumThreads: config.threads ?? availableParallelism(),
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: config.optimization ?? 'all',
      logSeverityLevel: 3, // errors only: ORT warns about every unused constant it folds away
      // Idle pool threads would otherwise spin after each run and steal the cores from the
      // next session's run (several sessions alternate in a denoising loop).
      extra: { session: { intra_op: { allow_spinning: config.spin ? '1' : '0' } } },
    };
    const open = (providers: string[]) =>
      typeof source === 'string'
        ? ort.InferenceSession.create(source, { ...options, executionProviders: providers })
        : ort.InferenceSession.create(source, { ...options, executionProviders: providers });
    if (config.device === 'cuda') {
      // With ['cuda', 'cpu'] onnxruntime-node throws instead of falling back, so fall back here.
      try {
        return new Session(await open(['cuda', 'cpu']), 'cuda');
      } catch (err) {
        logger.warn({ err: (err as Error).message }, 'CUDA execution provider unavailable, falling back to CPU');
      }
    }
    return new Session(await open(['cpu']), 'cpu');
  }

  get inputNames(): readonly string[] {
    return this.inner.inputNames;
  }

  get outputNames(): readonly string[] {
    return this.inner.outputNames;
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
