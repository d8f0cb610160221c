import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { initT5Weights } from '../../src/models/t5-init.js';
import { buildT5Encoder, relativePositionBucket, relativePositionBuckets, t5ConfigFromHf, type T5Config } from '../../src/models/t5.js';
import { Weights } from '../../src/models/weights.js';
import { GraphBuilder } from '../../src/onnx/builder.js';
import { Session } from '../../src/onnx/session.js';
import { Rng } from '../../src/tensor/rng.js';
import { writeSafetensors } from '../../src/tensor/safetensors.js';
import { tensor, type HostTensor } from '../../src/tensor/tensor.js';

const dirs: string[] = [];
afterAll(async () => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

/**
 * Tiny T5 v1.1. 8 buckets over max distance 16 (instead of 32/128) so that a sequence of 8
 * tokens reaches the log-spaced buckets as well as the exact ones.
 */
const TINY: T5Config = {
  vocabSize: 50, dModel: 16, dKv: 4, dFf: 32, numLayers: 2, numHeads: 4,
  relativeAttentionNumBuckets: 8, relativeAttentionMaxDistance: 16, layerNormEpsilon: 1e-6,
  feedForwardProj: 'gated-gelu', maxLength: 8,
};

/** T5 v1.0 style: ReLU feed-forward, and heads * dKv (32) wider than dModel (16). */
const TINY_RELU: T5Config = { ...TINY, dKv: 8, feedForwardProj: 'relu' };

// ---- float64 reference: transformers' T5EncoderModel.forward in naive loops ------------------

/** The transformers formula in plain float64 (no float32 rounding; fine away from bucket edges). */
function refBucket(rel: number, numBuckets: number, maxDistance: number): number {
  const half = numBuckets / 2;
  let bucket = rel > 0 ? half : 0;
  const n = Math.abs(rel);
  const maxExact = half / 2;
  if (n < maxExact) return bucket + n;
  bucket += Math.min(maxExact + Math.floor((Math.log(n / maxExact) / Math.log(maxDistance / maxExact)) * (half - maxExact)), half - 1);
  return bucket;
}

function reference(ckpt: Map<string, HostTensor>, cfg: T5Config, ids: number[][], mask: number[][]): number[][][] {
  const w = (name: string) => Float64Array.from(ckpt.get(name)!.data as Float32Array);
  /** y = W x with W stored [out, in]. */
  const lin = (W: Float64Array, x: number[]): number[] => {
    const out = W.length / x.length;
    return Array.from({ length: out }, (_, o) => x.reduce((s, xi, i) => s + W[o * x.length + i]! * xi, 0));
  };
  const rms = (x: number[], g: Float64Array) => {
    const ms = x.reduce((s, v) => s + v * v, 0) / x.length;
    return x.map((v, i) => (v / Math.sqrt(ms + cfg.layerNormEpsilon)) * g[i]!);
  };
  const geluNew = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
  const { dModel: D, dKv, numHeads: H, relativeAttentionNumBuckets: NB } = cfg;
  const shared = w('shared.weight');
  const relBias = w('encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight');

  return ids.map((row, bi) => {
    const L = row.length;
    let h = row.map((id) => Array.from(shared.subarray(id * D, (id + 1) * D)));
    for (let i = 0; i < cfg.numLayers; i++) {
      const p = `encoder.block.${i}.layer`;
      const normed = h.map((x) => rms(x, w(`${p}.0.layer_norm.weight`)));
      const [q, k, v] = ['q', 'k', 'v'].map((m) => normed.map((x) => lin(w(`${p}.0.SelfAttention.${m}.weight`), x)));
      const mixed = Array.from({ length: L }, () => new Array<number>(H * dKv).fill(0));
      for (let head = 0; head < H; head++) {
        for (let qi = 0; qi < L; qi++) {
          const scores = Array.from({ length: L }, (_, ki) => {
            let s = 0;
            for (let d = 0; d < dKv; d++) s += q![qi]![head * dKv + d]! * k![ki]![head * dKv + d]!;
            const bucket = refBucket(ki - qi, NB, cfg.relativeAttentionMaxDistance);
            return s + relBias[bucket * H + head]! + (mask[bi]![ki] ? 0 : -3.4028234663852886e38);
          });
          const max = Math.max(...scores);
          const e = scores.map((s) => Math.exp(s - max));
          const z = e.reduce((a, b) => a + b, 0);
          for (let ki = 0; ki < L; ki++) {
            for (let d = 0; d < dKv; d++) mixed[qi]![head * dKv + d]! += (e[ki]! / z) * v![ki]![head * dKv + d]!;
          }
        }
      }
      h = h.map((x, t) => {
        const attn = lin(w(`${p}.0.SelfAttention.o.weight`), mixed[t]!);
        return x.map((xv, j) => xv + attn[j]!);
      });
      const ff = `${p}.1.DenseReluDense`;
      h = h.map((x) => {
        const n = rms(x, w(`${p}.1.layer_norm.weight`));
        const act = cfg.feedForwardProj === 'gated-gelu'
          ? lin(w(`${ff}.wi_0.weight`), n).map((g, j) => geluNew(g) * lin(w(`${ff}.wi_1.weight`), n)[j]!)
          : lin(w(`${ff}.wi.weight`), n).map((a) => Math.max(a, 0));
        const y = lin(w(`${ff}.wo.weight`), act);
        return x.map((xv, j) => xv + y[j]!);
      });
    }
    return h.map((x) => rms(x, w('encoder.final_layer_norm.weight')));
  });
}

// ---- graph -------------------------------------------------------------------------------------

async function runGraph(weights: Weights, cfg: T5Config, ids: number[][], mask: number[][]): Promise<Float32Array> {
  const [B, L] = [ids.length, ids[0]!.length];
  const b = new GraphBuilder('t5');
  const inputIds = b.input('input_ids', 'int64', [B, L]);
  const attentionMask = b.input('attention_mask', 'int64', [B, L]);
  b.output(buildT5Encoder(b, weights, cfg, inputIds, attentionMask), 'hidden');
  const s = await Session.create(b.graph, { threads: 1 });
  try {
    const out = await s.run({ input_ids: tensor('int64', [B, L], ids.flat()), attention_mask: tensor('int64', [B, L], mask.flat()) });
    expect(out.hidden!.shape).toEqual([B, L, cfg.dModel]);
    return out.hidden!.data as Float32Array;
  } finally {
    await s.release();
  }
}

function maxAbsDiff(got: Float32Array, want: number[][][]): number {
  const flat = want.flat(2);
  expect(got.length).toBe(flat.length);
  return flat.reduce((m, v, i) => Math.max(m, Math.abs(v - got[i]!)), 0);
}

async function saveAndLoad(ckpt: Map<string, HostTensor>): Promise<Weights> {
  const dir = await mkdtemp(join(tmpdir(), 't5-'));
  dirs.push(dir);
  const path = join(dir, 'model.safetensors');
  await writeSafetensors(path, ckpt);
  return Weights.load(path);
}

// Sample 0 uses all 8 positions; sample 1 has 5 real tokens (the last one EOS = 1) and 3 pads.
const IDS = [[12, 7, 33, 49, 3, 21, 8, 1], [5, 44, 17, 9, 1, 0, 0, 0]];
const MASK = [[1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0, 0]];

describe('T5 relative position buckets', () => {
  it('matches hand-computed buckets (32 buckets, max distance 128, bidirectional)', () => {
    // 16 buckets per direction, positive (key after query) offsets in 16..31; |n| < 8 exact,
    // else 8 + floor(log(n/8) / log(16) * 8), clamped to 15.
    const cases: [number, number][] = [
      [0, 0], [1, 17], [-1, 1], [7, 23], [-7, 7],
      [8, 24], [-8, 8], // log(1) = 0
      [15, 25], // log(1.875)/log(16)*8 = 1.81
      [16, 26], [-16, 10], // exactly 2: an edge, on the upper side as in float32 torch
      [20, 26], [-20, 10], // log(2.5)/log(16)*8 = 2.64
      [64, 30], // exactly 6
      [127, 31], // 7.98
      [128, 31], [200, 31], [-200, 15], [-100000, 15],
    ];
    for (const [rel, bucket] of cases) expect([rel, relativePositionBucket(rel, true, 32, 128)]).toEqual([rel, bucket]);
  });

  it('is unidirectional when asked (decoder-style: only past offsets)', () => {
    expect(relativePositionBucket(5, false, 32, 128)).toBe(0);
    expect(relativePositionBucket(-5, false, 32, 128)).toBe(5);
    expect(relativePositionBucket(-20, false, 32, 128)).toBe(16 + Math.floor((Math.log(20 / 16) / Math.log(8)) * 16));
  });

  it('lays the [L, L] table out as key - query', () => {
    const t = relativePositionBuckets(3, 32, 128);
    expect(t.dtype).toBe('int64');
    expect(Array.from(t.data as BigInt64Array, Number)).toEqual([0, 17, 18, 1, 0, 17, 2, 1, 0]);
  });
});

describe('T5 config', () => {
  it("reads PixArt-alpha's T5 v1.1 XXL config.json", () => {
    const cfg = t5ConfigFromHf({
      model_type: 't5', d_model: 4096, d_kv: 64, d_ff: 10240, num_layers: 24, num_decoder_layers: 24, num_heads: 64,
      relative_attention_num_buckets: 32, feed_forward_proj: 'gated-gelu', vocab_size: 32128, layer_norm_epsilon: 1e-6,
      dense_act_fn: 'gelu_new', is_gated_act: true,
    });
    expect(cfg).toEqual({
      vocabSize: 32128, dModel: 4096, dKv: 64, dFf: 10240, numLayers: 24, numHeads: 64,
      relativeAttentionNumBuckets: 32, relativeAttentionMaxDistance: 128, layerNormEpsilon: 1e-6,
      feedForwardProj: 'gated-gelu', maxLength: 120,
    });
  });

  it('refuses what it cannot build, with BAD_CONFIG', () => {
    const base = { d_model: 16, d_kv: 4, d_ff: 32, num_layers: 2, num_heads: 4, vocab_size: 50 };
    expect(t5ConfigFromHf(base, 8).feedForwardProj).toBe('relu'); // transformers' default
    expect(() => t5ConfigFromHf({ ...base, feed_forward_proj: 'gated-silu' })).toThrow(/feed_forward_proj "gated-silu" is not supported/);
    expect(() => t5ConfigFromHf({ ...base, d_model: undefined })).toThrow(expect.objectContaining({ code: 'BAD_CONFIG', message: expect.stringMatching(/d_model/) }));
    expect(() => t5ConfigFromHf({ ...base, num_heads: 2.5 })).toThrow(/num_heads must be a positive integer/);
    expect(() => t5ConfigFromHf({ ...base, model_type: 'umt5' })).toThrow(/model_type "umt5"/);
    expect(() => t5ConfigFromHf({ ...base, relative_attention_num_buckets: 7 })).toThrow(/even/);
    expect(() => t5ConfigFromHf([])).toThrow(/JSON object/);
  });
});

describe('T5 encoder graph', () => {
  it('matches the float64 reference (T5 v1.1 gated-gelu), padding included', async () => {
    const ckpt = initT5Weights(TINY, 1);
    const weights = await saveAndLoad(ckpt);
    const got = await runGraph(weights, TINY, IDS, MASK);
    expect(maxAbsDiff(got, reference(ckpt, TINY, IDS, MASK))).toBeLessThan(1e-4);
    expect(weights.unused()).toEqual([]);
  });

  it('matches the float64 reference (relu, heads * dKv != dModel)', async () => {
    const ckpt = initT5Weights(TINY_RELU, 2);
    const got = await runGraph(new Weights(ckpt), TINY_RELU, IDS, MASK);
    expect(maxAbsDiff(got, reference(ckpt, TINY_RELU, IDS, MASK))).toBeLessThan(1e-4);
  });

  it('ignores padded keys: real positions do not depend on pad ids, but do depend on the mask', async () => {
    const ckpt = initT5Weights(TINY, 3);
    const weights = new Weights(ckpt);
    const real = (out: Float32Array) => Array.from(out.subarray(TINY.dModel * 8, TINY.dModel * (8 + 5)));
    const base = await runGraph(weights, TINY, IDS, MASK);
    const otherPads = await runGraph(weights, TINY, [IDS[0]!, [5, 44, 17, 9, 1, 30, 31, 32]], MASK);
    const unmasked = await runGraph(weights, TINY, IDS, [MASK[0]!, [1, 1, 1, 1, 1, 1, 1, 1]]);
    const a = real(base);
    expect(real(otherPads).every((v, i) => Math.abs(v - a[i]!) < 1e-6)).toBe(true);
    expect(Math.max(...real(unmasked).map((v, i) => Math.abs(v - a[i]!)))).toBeGreaterThan(1e-2);
  });

  it('accepts a float mask and the encoder.embed_tokens.weight name', async () => {
    const ckpt = initT5Weights(TINY, 4);
    ckpt.set('encoder.embed_tokens.weight', ckpt.get('shared.weight')!);
    ckpt.delete('shared.weight');
    const b = new GraphBuilder('t5');
    const ids = b.input('input_ids', 'int64', [2, 8]);
    const mask = b.input('attention_mask', 'float32', [2, 8]);
    b.output(buildT5Encoder(b, new Weights(ckpt), TINY, ids, mask), 'hidden');
    const s = await Session.create(b.graph, { threads: 1 });
    const out = await s.run({ input_ids: tensor('int64', [2, 8], IDS.flat()), attention_mask: tensor('float32', [2, 8], MASK.flat()) });
    await s.release();
    ckpt.set('shared.weight', ckpt.get('encoder.embed_tokens.weight')!);
    expect(maxAbsDiff(out.hidden!.data as Float32Array, reference(ckpt, TINY, IDS, MASK))).toBeLessThan(1e-4);
  });

  it('names a missing key and a wrong shape', () => {
    const build = (ckpt: Map<string, HostTensor>) => {
      const b = new GraphBuilder('t5');
      buildT5Encoder(b, new Weights(ckpt, 'tiny.safetensors'), TINY, b.input('ids', 'int64', [1, 8]), b.input('mask', 'int64', [1, 8]));
    };
    const missing = initT5Weights(TINY, 5);
    missing.delete('encoder.block.1.layer.0.SelfAttention.k.weight');
    expect(() => build(missing)).toThrow(expect.objectContaining({
      code: 'MISSING_WEIGHT', message: 'tiny.safetensors: missing weight "encoder.block.1.layer.0.SelfAttention.k.weight"',
    }));

    const noEmbedding = initT5Weights(TINY, 5);
    noEmbedding.delete('shared.weight');
    expect(() => build(noEmbedding)).toThrow(expect.objectContaining({ code: 'MISSING_WEIGHT', message: expect.stringMatching(/shared\.weight.*embed_tokens/) }));

    const wrong = initT5Weights(TINY, 5);
    wrong.set('encoder.block.1.layer.1.DenseReluDense.wo.weight', tensor('float32', [TINY.dFf, TINY.dModel]));
    expect(() => build(wrong)).toThrow(expect.objectContaining({
      code: 'WEIGHT_SHAPE', message: 'tiny.safetensors: weight "encoder.block.1.layer.1.DenseReluDense.wo.weight" has shape [32,16], expected [16,32]',
    }));

    const wrongBias = initT5Weights(TINY, 5);
    wrongBias.set('encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight', tensor('float32', [32, TINY.numHeads]));
    expect(() => build(wrongBias)).toThrow(/relative_attention_bias\.weight" has shape \[32,4\], expected \[8,4\]/);
  });
});
