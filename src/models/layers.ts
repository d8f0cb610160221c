import type { GraphBuilder } from '../onnx/builder.js';
import type { Value } from '../onnx/ir.js';

/**
 * Pieces shared by DiT, PixArt-alpha and the benchmarks, written once. Weights are stored
 * [in, out] in our graphs (diffusers stores nn.Linear as [out, in]; loaders transpose).
 */

export interface LinearParams {
  /** Float [in, out] (float32, or float16 for fp16 MatMuls), or the data of a quantized weight. */
  weight: Value;
  bias?: Value | null;
  /** Set for weight-only quantized weights, applied through ORT's quantized MatMuls. */
  quant?: QuantizedLinear;
}

/** int8: `weight` int8 [in, out] with per-column scales; int4: `weight` packed [out, blocks, blockSize / 2]. */
export type QuantizedLinear =
  | { kind: 'int8'; scales: Value }
  | { kind: 'int4'; scales: Value; zeroPoints: Value; inFeatures: number; blockSize: number; accuracyLevel: number };

export function outFeatures(p: LinearParams): number {
  return p.quant?.kind === 'int4' ? p.weight.shape[0]! : p.weight.shape[1]!;
}

export interface AttentionParams {
  q: LinearParams;
  k: LinearParams;
  v: LinearParams;
  out: LinearParams;
}

export interface MlpParams {
  fc1: LinearParams;
  fc2: LinearParams;
}

/** DiT blocks norm without affine parameters; adaLN supplies shift and scale. */
export const ADALN_NORM_EPS = 1e-6;

export function linear(b: GraphBuilder, x: Value, p: LinearParams): Value {
  const q = p.quant;
  let y: Value;
  if (q?.kind === 'int8') y = b.dynamicQuantizeMatMul(x, p.weight, q.scales);
  else if (q?.kind === 'int4') {
    y = b.matMulNBits(x, p.weight, q.scales, q.zeroPoints, { k: q.inFeatures, n: outFeatures(p), bits: 4, blockSize: q.blockSize, accuracyLevel: q.accuracyLevel });
  } else if (p.weight.dtype !== x.dtype) y = b.cast(b.matmul(b.cast(x, p.weight.dtype), p.weight), x.dtype); // fp16 MatMuls
  else y = b.matmul(x, p.weight);
  return p.bias ? b.add(y, p.bias) : y;
}

/** x * (1 + scale) + shift, with per-sample [B, D] modulation broadcast over tokens. */
export function modulate(b: GraphBuilder, x: Value, shift: Value, scale: Value): Value {
  return b.add(b.mul(x, b.add(b.unsqueeze(scale, [1]), 1)), b.unsqueeze(shift, [1]));
}

/** [B, T, H*D] -> [B, H, T, D], or [B, H, D, T] with `keysFirst` (ready for q @ k^T). */
function splitHeads(b: GraphBuilder, x: Value, heads: number, keysFirst = false): Value {
  const [batch, tokens, width] = x.shape as [number, number, number];
  return b.transpose(b.reshape(x, [batch, tokens, heads, width / heads]), keysFirst ? [0, 2, 3, 1] : [0, 2, 1, 3]);
}

/**
 * Multi-head scaled dot-product attention of `x` over `context` (self-attention when
 * `context` is x). `mask` is an additive bias broadcast to [B, H, Tq, Tk] (0 or -inf-like).
 */
export function attention(b: GraphBuilder, x: Value, context: Value, p: AttentionParams, heads: number, mask?: Value): Value {
  const [batch, tokens, width] = x.shape as [number, number, number];
  const headDim = outFeatures(p.q) / heads;
  const q = splitHeads(b, linear(b, x, p.q), heads);
  const kT = splitHeads(b, linear(b, context, p.k), heads, true);
  const v = splitHeads(b, linear(b, context, p.v), heads);
  let scores = b.mul(b.matmul(q, kT), 1 / Math.sqrt(headDim));
  if (mask) scores = b.add(scores, mask);
  const mixed = b.matmul(b.softmax(scores, -1), v);
  const merged = b.reshape(b.transpose(mixed, [0, 2, 1, 3]), [batch, tokens, heads * headDim]);
  const out = linear(b, merged, p.out);
  if (out.shape[2] !== width) throw new Error(`attention output width ${out.shape[2]} differs from input width ${width}`);
  return out;
}

export function mlp(b: GraphBuilder, x: Value, p: MlpParams, approximate: 'none' | 'tanh' = 'tanh'): Value {
  return linear(b, b.gelu(linear(b, x, p.fc1), approximate), p.fc2);
}

export interface AdaLNBlockParams {
  attn: AttentionParams;
  mlp: MlpParams;
  /** SiLU(c) -> 6 * hidden: shift/scale/gate for attention, then for the MLP. */
  adaLN: LinearParams;
}

/** The six adaLN-Zero modulation vectors of a DiT block, each [B, D]. */
export function adaLNModulation(b: GraphBuilder, c: Value, p: LinearParams): Value[] {
  const width = outFeatures(p) / 6;
  return b.split(linear(b, b.silu(c), p), [width, width, width, width, width, width], 1);
}

/** The gated residual of a DiT block: x + gate * sublayer, gate [B, D] over tokens. */
export function gatedResidual(b: GraphBuilder, x: Value, gate: Value, sublayer: Value): Value {
  return b.add(x, b.mul(b.unsqueeze(gate, [1]), sublayer));
}

/**
 * One DiT block (adaLN-Zero): x += gate_msa * Attn(modulate(LN(x))),
 * x += gate_mlp * MLP(modulate(LN(x))). Returns the two raw sublayer outputs too, since
 * caching stores them before the gate.
 */
export function ditBlock(b: GraphBuilder, x: Value, c: Value, p: AdaLNBlockParams, heads: number): { out: Value; attn: Value; mlp: Value } {
  const [shiftMsa, scaleMsa, gateMsa, shiftMlp, scaleMlp, gateMlp] = adaLNModulation(b, c, p.adaLN) as [Value, Value, Value, Value, Value, Value];
  const attnIn = modulate(b, b.layerNorm(x, null, null, { epsilon: ADALN_NORM_EPS }), shiftMsa, scaleMsa);
  const attnOut = b.scope('attn', () => attention(b, attnIn, attnIn, p.attn, heads));
  const h = gatedResidual(b, x, gateMsa, attnOut);
  const mlpIn = modulate(b, b.layerNorm(h, null, null, { epsilon: ADALN_NORM_EPS }), shiftMlp, scaleMlp);
  const mlpOut = b.scope('mlp', () => mlp(b, mlpIn, p.mlp));
  return { out: gatedResidual(b, h, gateMlp, mlpOut), attn: attnOut, mlp: mlpOut };
}
