import { referenceOps } from '../helpers/reference.js';
import { describe, expect, it } from 'vitest';
import { CachedExecutor } from '../../src/cache/executor.js';
import { buildPlainStep } from '../../src/cache/step-graph.js';
import { createDenoiser, pixartDenoiser } from '../../src/models/denoiser.js';
import { randomTensor } from '../../src/models/init.js';
import {
  buildPixArt, PIXART_XL_2_1024, PIXART_XL_2_256, pixartConfigFromDiffusers, pixartOtherMacs, pixartSlots, type PixArtConfig,
} from '../../src/models/pixart.js';
import { initPixArtWeights } from '../../src/models/pixart-init.js';
import { plainHooks, macs } from '../../src/models/sublayer.js';
import { Weights } from '../../src/models/weights.js';
import { GraphBuilder } from '../../src/onnx/builder.js';
import { Session } from '../../src/onnx/session.js';
import { Rng } from '../../src/tensor/rng.js';
import { tensor, type HostTensor } from '../../src/tensor/tensor.js';
import type { HarmonicaError } from '../../src/util/errors.js';

/** PixArt-alpha's structure with tiny widths: 8x8x4 latent, patch 2 (16 tokens), 2 blocks, 6 caption tokens. */
const TINY: PixArtConfig = {
  sampleSize: 8, patchSize: 2, inChannels: 4, outChannels: 8, hidden: 32, depth: 2, heads: 4, mlpRatio: 4,
  captionChannels: 16, maxTokens: 6, interpolationScale: 1, useAdditionalConditions: false, normEps: 1e-6,
};
/** Like the 1024px model: micro-conditions (width divisible by 3) and scaled positions. */
const TINY_CONDITIONED: PixArtConfig = { ...TINY, hidden: 48, interpolationScale: 2, useAdditionalConditions: true };

/** Random weights under exactly the diffusers `PixArtTransformer2DModel` keys and shapes (biases random too). */
function tinyCheckpoint(cfg: PixArtConfig, seed = 1, std = 0.15): Map<string, HostTensor> {
  const rng = new Rng(seed);
  const d = cfg.hidden;
  const p = cfg.patchSize;
  const w = new Map<string, HostTensor>();
  const rand = (name: string, shape: number[]) => w.set(name, randomTensor(shape, rng, 'float32', std));
  const linear = (name: string, inF: number, outF: number) => {
    rand(`${name}.weight`, [outF, inF]);
    rand(`${name}.bias`, [outF]);
  };
  rand('pos_embed.proj.weight', [d, cfg.inChannels, p, p]);
  rand('pos_embed.proj.bias', [d]);
  const embedder = (name: string, width: number) => {
    linear(`${name}.linear_1`, 256, width);
    linear(`${name}.linear_2`, width, width);
  };
  embedder('adaln_single.emb.timestep_embedder', d);
  if (cfg.useAdditionalConditions) {
    embedder('adaln_single.emb.resolution_embedder', d / 3);
    embedder('adaln_single.emb.aspect_ratio_embedder', d / 3);
  }
  linear('adaln_single.linear', d, 6 * d);
  linear('caption_projection.linear_1', cfg.captionChannels, d);
  linear('caption_projection.linear_2', d, d);
  for (let i = 0; i < cfg.depth; i++) {
    const k = `transformer_blocks.${i}`;
    rand(`${k}.scale_shift_table`, [6, d]);
    for (const a of ['attn1', 'attn2']) for (const n of ['to_q', 'to_k', 'to_v', 'to_out.0']) linear(`${k}.${a}.${n}`, d, d);
    linear(`${k}.ff.net.0.proj`, d, 4 * d);
    linear(`${k}.ff.net.2`, 4 * d, d);
  }
  rand('scale_shift_table', [2, d]);
  linear('proj_out', d, p * p * cfg.outChannels);
  return w;
}

const B = 2;
/** Sample 0 uses all caption tokens, sample 1 only the first 3 (the rest is padding). */
const MASK = [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0];

function feeds(cfg: PixArtConfig, seed = 9): Record<string, HostTensor> {
  const rng = new Rng(seed);
  const f: Record<string, HostTensor> = {
    x: randomTensor([B, cfg.inChannels, cfg.sampleSize, cfg.sampleSize], rng),
    t: tensor('float32', [B], [999, 37]),
    encoder_hidden_states: randomTensor([B, cfg.maxTokens, cfg.captionChannels], rng),
    encoder_attention_mask: tensor('float32', [B, cfg.maxTokens], MASK),
  };
  if (cfg.useAdditionalConditions) {
    f.resolution = tensor('float32', [B, 2], [1024, 1024, 768, 1344]);
    f.aspect_ratio = tensor('float32', [B, 1], [1, 768 / 1344]);
  }
  return f;
}

async function run(cfg: PixArtConfig, weights: Map<string, HostTensor>, f: Record<string, HostTensor>): Promise<Float32Array> {
  const s = await Session.create(buildPlainStep(pixartDenoiser(cfg), new Weights(weights), B).graph, { threads: 1 });
  try {
    return (await s.run(f)).out!.data as Float32Array;
  } finally {
    await s.release();
  }
}

/** Naive float64 forward of diffusers' PixArtTransformer2DModel (ada_norm_single blocks), one sample at a time. */
function referencePixArt(cfg: PixArtConfig, w: Map<string, HostTensor>, f: Record<string, HostTensor>): Float64Array {
  const data = (k: string) => f[k]!.data as Float32Array;
  const { hidden: d, patchSize: p, inChannels: C, sampleSize: S, heads, outChannels: outC, maxTokens: L, captionChannels: E } = cfg;
  const g = S / p;
  const T = g * g;
  const { get, lin, silu, gelu, ln, modulate } = referenceOps(w, d);
  /** Multi-head attention of queries xq [Tq, d] over context [Tk, d], with an additive bias per key. */
  const attend = (xq: Float64Array, ctx: Float64Array, prefix: string, bias: Float64Array) => {
    const q = lin(xq, `${prefix}.to_q`, d, d), k = lin(ctx, `${prefix}.to_k`, d, d), v = lin(ctx, `${prefix}.to_v`, d, d);
    const tq = xq.length / d, tk = ctx.length / d, hd = d / heads;
    const o = new Float64Array(tq * d);
    for (let hh = 0; hh < heads; hh++) for (let i = 0; i < tq; i++) {
      const sc = new Float64Array(tk);
      for (let j = 0; j < tk; j++) {
        let s = 0;
        for (let z = 0; z < hd; z++) s += q[i * d + hh * hd + z]! * k[j * d + hh * hd + z]!;
        sc[j] = s / Math.sqrt(hd) + bias[j]!;
      }
      const mx = Math.max(...sc);
      const ex = sc.map((s) => Math.exp(s - mx));
      const sum = ex.reduce((a, b) => a + b, 0);
      for (let z = 0; z < hd; z++) {
        let s = 0;
        for (let j = 0; j < tk; j++) s += (ex[j]! / sum) * v[j * d + hh * hd + z]!;
        o[i * d + hh * hd + z] = s;
      }
    }
    return lin(o, `${prefix}.to_out.0`, d, d);
  };
  /** Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0): cat(cos, sin); the arguments in float32 as in diffusers. */
  const sinusoid = (value: number) => {
    const out = new Float64Array(256);
    for (let i = 0; i < 128; i++) {
      const arg = Math.fround(value * Math.fround(Math.exp((-Math.log(10000) * i) / 128)));
      out[i] = Math.cos(arg);
      out[128 + i] = Math.sin(arg);
    }
    return out;
  };
  const embed = (value: number, name: string, width: number) => lin(silu(lin(sinusoid(value), `${name}.linear_1`, 256, width)), `${name}.linear_2`, width, width);
  const posEmbed = (k: number, gh: number, gw: number) => {
    // get_2d_sincos_pos_embed: grid / (grid_size / base_size) / interpolation_scale, base_size = grid here;
    // the first half of the channels encodes the column.
    const pos = (k < d / 2 ? gw : gh) / cfg.interpolationScale;
    const i = k % (d / 2);
    const half = d / 4;
    const omega = 1 / 10000 ** ((i % half) / half);
    return i < half ? Math.sin(pos * omega) : Math.cos(pos * omega);
  };

  const result = new Float64Array(B * outC * S * S);
  const x = data('x');
  for (let n = 0; n < B; n++) {
    const Wp = get('pos_embed.proj.weight');
    const bp = get('pos_embed.proj.bias');
    let h = new Float64Array(T * d);
    for (let gh = 0; gh < g; gh++) for (let gw = 0; gw < g; gw++) for (let k = 0; k < d; k++) {
      let s = bp[k]!;
      for (let c = 0; c < C; c++) for (let i = 0; i < p; i++) for (let j = 0; j < p; j++) {
        s += Wp[((k * C + c) * p + i) * p + j]! * x[((n * C + c) * S + gh * p + i) * S + gw * p + j]!;
      }
      h[(gh * g + gw) * d + k] = s + posEmbed(k, gh, gw);
    }
    // adaLN-single
    const emb = embed(data('t')[n]!, 'adaln_single.emb.timestep_embedder', d);
    if (cfg.useAdditionalConditions) {
      const r = 'adaln_single.emb.resolution_embedder';
      const extra = [...embed(data('resolution')[2 * n]!, r, d / 3), ...embed(data('resolution')[2 * n + 1]!, r, d / 3),
        ...embed(data('aspect_ratio')[n]!, 'adaln_single.emb.aspect_ratio_embedder', d / 3)];
      extra.forEach((e, k) => (emb[k]! += e));
    }
    const shared = lin(silu(emb), 'adaln_single.linear', d, 6 * d);
    // caption projection and mask bias
    const text = Float64Array.from(data('encoder_hidden_states').slice(n * L * E, (n + 1) * L * E));
    const caption = lin(lin(text, 'caption_projection.linear_1', E, d).map(gelu), 'caption_projection.linear_2', d, d);
    const bias = Float64Array.from(data('encoder_attention_mask').slice(n * L, (n + 1) * L), (m) => (1 - m) * -10000);
    for (let blk = 0; blk < cfg.depth; blk++) {
      const k = `transformer_blocks.${blk}`;
      const table = get(`${k}.scale_shift_table`);
      const chunk = (j: number) => Float64Array.from({ length: d }, (_, c) => shared[j * d + c]! + table[j * d + c]!);
      const a = attend(modulate(ln(h, cfg.normEps), chunk(0), chunk(1)), modulate(ln(h, cfg.normEps), chunk(0), chunk(1)), `${k}.attn1`, new Float64Array(T));
      h = h.map((u, i) => u + chunk(2)[i % d]! * a[i]!);
      const cross = attend(h, caption, `${k}.attn2`, bias);
      h = h.map((u, i) => u + cross[i]!);
      const m = modulate(ln(h, cfg.normEps), chunk(3), chunk(4));
      const ff = lin(lin(m, `${k}.ff.net.0.proj`, d, 4 * d).map(gelu), `${k}.ff.net.2`, 4 * d, d);
      h = h.map((u, i) => u + chunk(5)[i % d]! * ff[i]!);
    }
    const table = get('scale_shift_table');
    const shift = emb.map((e, c) => e + table[c]!);
    const scale = emb.map((e, c) => e + table[d + c]!);
    const out = lin(modulate(ln(h, 1e-6), shift, scale), 'proj_out', d, p * p * outC);
    for (let gh = 0; gh < g; gh++) for (let gw = 0; gw < g; gw++) for (let i = 0; i < p; i++) for (let j = 0; j < p; j++) for (let ch = 0; ch < outC; ch++) {
      result[((n * outC + ch) * S + gh * p + i) * S + gw * p + j] = out[(gh * g + gw) * p * p * outC + (i * p + j) * outC + ch]!;
    }
  }
  return result;
}

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
};
const maxAbs = (a: ArrayLike<number>) => maxDiff(a, new Float64Array(a.length));

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return (e as HarmonicaError).code;
  }
  return undefined;
}

describe('PixArt-alpha', () => {
  for (const [label, cfg] of [['256px-like', TINY], ['1024px-like, with micro-conditions', TINY_CONDITIONED]] as const) {
    it(`matches a naive float64 reference of diffusers' forward (${label})`, async () => {
      const w = tinyCheckpoint(cfg);
      const f = feeds(cfg);
      const out = await run(cfg, w, f);
      const ref = referencePixArt(cfg, w, f);
      expect(out.length).toBe(B * cfg.outChannels * cfg.sampleSize * cfg.sampleSize);
      expect(maxAbs(ref)).toBeGreaterThan(0.5);
      expect(maxDiff(out, ref)).toBeLessThan(1e-4);
    });
  }

  it('reads every tensor of the checkpoint', () => {
    for (const cfg of [TINY, TINY_CONDITIONED]) {
      const w = new Weights(tinyCheckpoint(cfg));
      buildPlainStep(pixartDenoiser(cfg), w, B);
      expect(w.unused()).toEqual([]);
    }
  });

  it('padded caption tokens do not affect the output when masked, real ones do', async () => {
    const cfg = TINY_CONDITIONED;
    const w = tinyCheckpoint(cfg);
    const f = feeds(cfg);
    const base = await run(cfg, w, f);
    const L = cfg.maxTokens, E = cfg.captionChannels;
    const changed = (token: number) => {
      const text = Float32Array.from(f.encoder_hidden_states!.data as Float32Array);
      for (let c = 0; c < E; c++) text[(L + token) * E + c] = 50 + c; // sample 1
      return { ...f, encoder_hidden_states: tensor('float32', [B, L, E], text) };
    };
    expect(maxDiff(await run(cfg, w, changed(4)), base)).toBeLessThan(1e-6); // padding of sample 1
    expect(maxDiff(await run(cfg, w, changed(1)), base)).toBeGreaterThan(1e-2); // a real token
    // Unmasking the padding changes sample 1 only.
    const unmasked = await run(cfg, w, { ...f, encoder_attention_mask: tensor('float32', [B, L], new Array<number>(B * L).fill(1)) });
    const half = base.length / 2;
    expect(maxDiff(unmasked.subarray(0, half), base.subarray(0, half))).toBeLessThan(1e-6);
    expect(maxDiff(unmasked.subarray(half), base.subarray(half))).toBeGreaterThan(1e-2);
  });

  it('the cached executor with every slot computed equals the plain forward, and reuses raw outputs', async () => {
    const cfg = TINY_CONDITIONED;
    const model = pixartDenoiser(cfg);
    const w = tinyCheckpoint(cfg);
    const exec = await CachedExecutor.create(model, new Weights(w), B, { threads: 1 });
    try {
      const all = model.slots.map(() => true);
      for (const seed of [1, 2]) {
        const f = feeds(cfg, seed);
        const got = await exec.step(f, all);
        expect(got.out.shape).toEqual([B, cfg.outChannels, cfg.sampleSize, cfg.sampleSize]);
        expect(maxDiff(got.out.data as Float32Array, await run(cfg, w, f))).toBeLessThan(1e-5);
      }
      // Reusing everything at the same inputs reproduces the step that filled the cache.
      exec.reset();
      const first = await exec.step(feeds(cfg, 3), model.slots.map(() => false));
      const again = await exec.step(feeds(cfg, 3), model.slots.map(() => false));
      expect(again.computed.some(Boolean)).toBe(false);
      expect(maxDiff(again.out.data as Float32Array, first.out.data as Float32Array)).toBeLessThan(1e-6);
      // Reusing only the cross-attention at new inputs differs from computing it.
      const crossReused = model.slots.map((s) => s.kind !== 'cross');
      const reused = await exec.step(feeds(cfg, 4), crossReused);
      expect(maxDiff(reused.out.data as Float32Array, await run(cfg, w, feeds(cfg, 4)))).toBeGreaterThan(1e-3);
    } finally {
      await exec.release();
    }
  });

  it('has three gated slots per block (attn, cross, mlp) with analytic MACs', () => {
    const slots = pixartSlots(TINY);
    expect(slots.map((s) => s.name)).toEqual(['blocks.0.attn', 'blocks.0.cross', 'blocks.0.mlp', 'blocks.1.attn', 'blocks.1.cross', 'blocks.1.mlp']);
    expect(slots.map((s) => s.kind)).toEqual(['attn', 'cross', 'mlp', 'attn', 'cross', 'mlp']);
    expect(slots[1]!.macs).toBe(macs.crossAttention(16, 32, 6, 32));
    // 16 tokens: patch embed 16*16*32, timestep embedder 256*32 + 32*32, adaLN-single 32*192,
    // caption projection 6*16*32 + 6*32*32, output 16*32*32.
    expect(pixartOtherMacs(TINY)).toBe(16 * 16 * 32 + 256 * 32 + 32 * 32 + 32 * 192 + 6 * 16 * 32 + 6 * 32 * 32 + 16 * 32 * 32);
    expect(pixartOtherMacs(TINY_CONDITIONED) - pixartOtherMacs({ ...TINY_CONDITIONED, useAdditionalConditions: false })).toBe(3 * (256 * 16 + 16 * 16));
    // PixArt-XL-2 at 256px: ~0.3 TMACs per evaluation, almost all of it in the gated slots.
    const total = pixartSlots(PIXART_XL_2_256).reduce((a, s) => a + s.macs, 0);
    expect(total / 1e9).toBeGreaterThan(100);
    expect(pixartOtherMacs(PIXART_XL_2_256) / total).toBeLessThan(0.05);
  });

  it('declares text inputs, and micro-conditions only when used', () => {
    const inputNames = (cfg: PixArtConfig) => buildPlainStep(createDenoiser('pixart', cfg), new Weights(tinyCheckpoint(cfg)), B).graph.inputs.map((v) => v.name);
    expect(inputNames(TINY)).toEqual(['x', 't', 'encoder_hidden_states', 'encoder_attention_mask']);
    expect(inputNames(TINY_CONDITIONED)).toEqual(['x', 't', 'encoder_hidden_states', 'encoder_attention_mask', 'resolution', 'aspect_ratio']);
    const model = createDenoiser('pixart', TINY);
    expect([model.family, model.conditioning, model.outChannels, model.latentShape]).toEqual(['pixart', 'text', 8, [4, 8, 8]]);
    expect(model.slots.length).toBe(3 * TINY.depth);
  });

  it('rejects missing weights, wrong shapes, bad inputs and bad configs', () => {
    const build = (cfg: PixArtConfig, w: Map<string, HostTensor>) => () => buildPlainStep(pixartDenoiser(cfg), new Weights(w), B);
    const without = (key: string) => {
      const w = tinyCheckpoint(TINY_CONDITIONED);
      expect(w.delete(key)).toBe(true);
      return w;
    };
    expect(codeOf(build(TINY_CONDITIONED, without('transformer_blocks.1.attn2.to_k.bias')))).toBe('MISSING_WEIGHT');
    expect(codeOf(build(TINY_CONDITIONED, without('adaln_single.emb.aspect_ratio_embedder.linear_2.weight')))).toBe('MISSING_WEIGHT');
    expect(codeOf(build(TINY_CONDITIONED, without('scale_shift_table')))).toBe('MISSING_WEIGHT');
    const wrong = tinyCheckpoint(TINY);
    wrong.set('transformer_blocks.0.scale_shift_table', tensor('float32', [2, TINY.hidden]));
    expect(codeOf(build(TINY, wrong))).toBe('WEIGHT_SHAPE');
    // Weights of a model with another caption width.
    expect(codeOf(build({ ...TINY, captionChannels: 8 }, tinyCheckpoint(TINY)))).toBe('WEIGHT_SHAPE');

    const b = new GraphBuilder('pixart');
    const io = {
      x: b.input('x', 'float32', [B, 4, 8, 8]), t: b.input('t', 'float32', [B]),
      encoderHiddenStates: b.input('text', 'float32', [B, 6, 16]), encoderAttentionMask: b.input('mask', 'float32', [B, 6]),
    };
    const w = new Weights(tinyCheckpoint(TINY_CONDITIONED));
    expect(codeOf(() => buildPixArt(b, w, TINY_CONDITIONED, io, plainHooks(b)))).toBe('BAD_INPUT'); // no resolution
    expect(codeOf(() => buildPixArt(b, w, TINY, { ...io, encoderAttentionMask: b.input('m', 'float32', [B, 5]) }, plainHooks(b)))).toBe('BAD_INPUT');

    expect(codeOf(() => pixartDenoiser({ ...TINY, useAdditionalConditions: true }))).toBe('BAD_CONFIG'); // 32 not divisible by 3
    expect(codeOf(() => pixartDenoiser({ ...TINY, heads: 5 }))).toBe('BAD_CONFIG');
    expect(codeOf(() => pixartDenoiser({ ...TINY, sampleSize: 9 }))).toBe('BAD_CONFIG');
    expect(codeOf(() => createDenoiser('sdxl', TINY))).toBe('BAD_CONFIG');
  });

  it('reads diffusers config.json', () => {
    // transformer/config.json of PixArt-alpha/PixArt-XL-2-1024-MS.
    const xl1024 = {
      _class_name: 'Transformer2DModel', activation_fn: 'gelu-approximate', attention_bias: true, attention_head_dim: 72,
      attention_type: 'default', caption_channels: 4096, cross_attention_dim: 1152, double_self_attention: false, dropout: 0.0,
      in_channels: 4, norm_elementwise_affine: false, norm_eps: 1e-6, norm_num_groups: 32, norm_type: 'ada_norm_single',
      num_attention_heads: 16, num_embeds_ada_norm: 1000, num_layers: 28, num_vector_embeds: null, only_cross_attention: false,
      out_channels: 8, patch_size: 2, sample_size: 128, upcast_attention: false, use_linear_projection: false,
    };
    expect(pixartConfigFromDiffusers(xl1024)).toEqual(PIXART_XL_2_1024);
    expect(pixartConfigFromDiffusers({ ...xl1024, sample_size: 32 })).toEqual(PIXART_XL_2_256);
    // Defaults: interpolation max(sample_size // 64, 1), micro-conditions iff sample_size == 128.
    const c512 = pixartConfigFromDiffusers({ ...xl1024, sample_size: 64 });
    expect([c512.interpolationScale, c512.useAdditionalConditions]).toEqual([1, false]);
    const explicit = pixartConfigFromDiffusers({ ...xl1024, interpolation_scale: 0.5, use_additional_conditions: false, out_channels: null }, 77);
    expect([explicit.interpolationScale, explicit.useAdditionalConditions, explicit.outChannels, explicit.maxTokens]).toEqual([0.5, false, 4, 77]);
    const minimal = pixartConfigFromDiffusers({ sample_size: 32, patch_size: 2, in_channels: 4, caption_channels: 4096 });
    expect(minimal).toEqual(PIXART_XL_2_256);

    expect(codeOf(() => pixartConfigFromDiffusers({ ...xl1024, sample_size: undefined }))).toBe('BAD_CONFIG');
    expect(codeOf(() => pixartConfigFromDiffusers({ ...xl1024, norm_type: 'ada_norm_zero' }))).toBe('BAD_CONFIG');
    expect(codeOf(() => pixartConfigFromDiffusers({ ...xl1024, cross_attention_dim: 768 }))).toBe('BAD_CONFIG');
    expect(codeOf(() => pixartConfigFromDiffusers({ ...xl1024, attention_head_dim: '72' }))).toBe('BAD_CONFIG');
  });

  it('initPixArtWeights writes the diffusers layout the builder reads', async () => {
    for (const cfg of [TINY, TINY_CONDITIONED]) {
      const init = initPixArtWeights(cfg, 5);
      const expected = tinyCheckpoint(cfg);
      expect([...init.keys()].sort()).toEqual([...expected.keys()].sort());
      for (const [k, t] of expected) expect(init.get(k)!.shape).toEqual(t.shape);
    }
    const out = await run(TINY, initPixArtWeights(TINY, 5), feeds(TINY));
    expect(out.every(Number.isFinite)).toBe(true);
    expect(maxAbs(out)).toBeGreaterThan(0.1);
  });
});
