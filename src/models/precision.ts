import { HarmonicaError } from '../util/errors.js';

/**
 * How a model component keeps its matrix weights in the graph:
 * - fp32: float32 MatMuls (fp16/bf16 checkpoints are widened once, by ORT, at session start);
 * - fp16: float16 MatMuls (for CUDA; ONNX Runtime's CPU provider has no fp16 MatMul);
 * - int8: weight-only int8, per output feature (com.microsoft::DynamicQuantizeMatMul);
 * - int4: weight-only 4-bit in blocks of 32 (com.microsoft::MatMulNBits).
 * Norms, biases, tables and convolutions stay float32 in every mode.
 */
export const PRECISIONS = ['fp32', 'fp16', 'int8', 'int4'] as const;
export type Precision = (typeof PRECISIONS)[number];

/** Precision per component of a model package. */
export interface ComponentPrecision {
  /** The denoising transformer (DiT / PixArt). */
  transformer?: Precision;
  /** The T5 text encoder of text-conditional models. */
  textEncoder?: Precision;
}

export const COMPONENTS = ['transformer', 'textEncoder'] as const;

/** Checks a user-given precision; `field` names it in the error. */
export function parsePrecision(value: unknown, field: string): Precision {
  if (typeof value === 'string' && (PRECISIONS as readonly string[]).includes(value)) return value as Precision;
  throw new HarmonicaError('BAD_INPUT', `${field} must be one of ${PRECISIONS.join(', ')}, got ${JSON.stringify(value)}`);
}

/** Checks a `{ transformer, textEncoder }` object (unknown keys are refused, not ignored). */
export function parseComponentPrecision(value: unknown, field = 'precision'): ComponentPrecision {
  if (value === undefined) return {};
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new HarmonicaError('BAD_INPUT', `${field} must be an object with ${COMPONENTS.join(' and/or ')}`);
  }
  const out: ComponentPrecision = {};
  for (const [key, v] of Object.entries(value)) {
    if (!(COMPONENTS as readonly string[]).includes(key)) throw new HarmonicaError('BAD_INPUT', `${field}.${key} is not a component (known: ${COMPONENTS.join(', ')})`);
    if (v !== undefined) out[key as (typeof COMPONENTS)[number]] = parsePrecision(v, `${field}.${key}`);
  }
  return out;
}
