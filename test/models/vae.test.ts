import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { GraphBuilder } from '../../src/onnx/builder.js';
import { Session } from '../../src/onnx/session.js';
import { Rng } from '../../src/tensor/rng.js';
import { writeSafetensors } from '../../src/tensor/safetensors.js';
import { tensor, type HostTensor } from '../../src/tensor/tensor.js';
import { buildVaeDecoder, SD_VAE_CONFIG, vaeConfigFromDiffusers, type VaeConfig } from '../../src/models/vae.js';
import { Weights } from '../../src/models/weights.js';
import { initVaeWeights } from '../../src/models/vae-init.js';
import { HarmonicaError } from '../../src/util/errors.js';

const dirs: string[] = [];
afterAll(async () => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

/** Two up blocks (one 2x upsample), a width change in the second, four groups of 2 and 4 channels. */
const TINY: VaeConfig = {
  latentChannels: 4,
  outChannels: 3,
  blockOutChannels: [8, 16],
  layersPerBlock: 1,
  normNumGroups: 4,
  scalingFactor: 0.18215,
  midBlockAddAttention: true,
};

type Checkpoint = Map<string, HostTensor>;
const randomCheckpoint = initVaeWeights;

/** The same checkpoint as diffusers < 0.15 saved it (AttentionBlock names). */
function withLegacyAttentionNames(ckpt: Checkpoint): Checkpoint {
  const renames: Record<string, string> = { to_q: 'query', to_k: 'key', to_v: 'value', 'to_out.0': 'proj_attn' };
  const out: Checkpoint = new Map();
  for (const [name, t] of ckpt) {
    const m = /^(decoder\.mid_block\.attentions\.0)\.(to_q|to_k|to_v|to_out\.0)\.(weight|bias)$/.exec(name);
    out.set(m ? `${m[1]}.${renames[m[2]!]}.${m[3]}` : name, t);
  }
  return out;
}

// ---- reference decoder: naive float64 loops over [N, C, H, W] ---------------------------

interface Arr {
  shape: [number, number, number, number];
  data: Float64Array;
}

function param(ckpt: Checkpoint, name: string): Float64Array {
  const t = ckpt.get(name);
  if (!t) throw new Error(`reference: no ${name}`);
  return Float64Array.from(t.data as Float32Array);
}

function conv2d(x: Arr, w: Float64Array, bias: Float64Array, cout: number, k: number): Arr {
  const [n, cin, h, wd] = x.shape;
  const pad = (k - 1) / 2;
  const out = new Float64Array(n * cout * h * wd);
  for (let b = 0; b < n; b++) {
    for (let o = 0; o < cout; o++) {
      for (let y = 0; y < h; y++) {
        for (let xx = 0; xx < wd; xx++) {
          let s = bias[o]!;
          for (let c = 0; c < cin; c++) {
            for (let ky = 0; ky < k; ky++) {
              for (let kx = 0; kx < k; kx++) {
                const iy = y + ky - pad;
                const ix = xx + kx - pad;
                if (iy < 0 || iy >= h || ix < 0 || ix >= wd) continue;
                s += w[((o * cin + c) * k + ky) * k + kx]! * x.data[((b * cin + c) * h + iy) * wd + ix]!;
              }
            }
          }
          out[((b * cout + o) * h + y) * wd + xx] = s;
        }
      }
    }
  }
  return { shape: [n, cout, h, wd], data: out };
}

function convRef(ckpt: Checkpoint, x: Arr, name: string): Arr {
  const t = ckpt.get(`${name}.weight`)!;
  const [cout, , k] = t.shape as [number, number, number];
  return conv2d(x, param(ckpt, `${name}.weight`), param(ckpt, `${name}.bias`), cout, k);
}

/** torch.nn.GroupNorm: biased variance over each group's channels and positions, eps 1e-6. */
function groupNormRef(ckpt: Checkpoint, x: Arr, name: string, groups: number): Arr {
  const [n, c, h, w] = x.shape;
  const gamma = param(ckpt, `${name}.weight`);
  const beta = param(ckpt, `${name}.bias`);
  const per = (c / groups) * h * w;
  const out = new Float64Array(x.data.length);
  for (let b = 0; b < n; b++) {
    for (let g = 0; g < groups; g++) {
      const start = (b * c + g * (c / groups)) * h * w;
      let mean = 0;
      for (let i = 0; i < per; i++) mean += x.data[start + i]!;
      mean /= per;
      let variance = 0;
      for (let i = 0; i < per; i++) variance += (x.data[start + i]! - mean) ** 2;
      variance /= per;
      for (let i = 0; i < per; i++) {
        const ch = g * (c / groups) + Math.floor(i / (h * w));
        out[start + i] = ((x.data[start + i]! - mean) / Math.sqrt(variance + 1e-6)) * gamma[ch]! + beta[ch]!;
      }
    }
  }
  return { shape: x.shape, data: out };
}

function siluRef(x: Arr): Arr {
  return { shape: x.shape, data: x.data.map((v) => v / (1 + Math.exp(-v))) };
}

function addRef(a: Arr, b: Arr): Arr {
  return { shape: a.shape, data: a.data.map((v, i) => v + b.data[i]!) };
}

function upsample2xRef(x: Arr): Arr {
  const [n, c, h, w] = x.shape;
  const out = new Float64Array(n * c * 4 * h * w);
  for (let p = 0; p < n * c; p++) {
    for (let y = 0; y < 2 * h; y++) {
      for (let xx = 0; xx < 2 * w; xx++) out[(p * 2 * h + y) * 2 * w + xx] = x.data[(p * h + (y >> 1)) * w + (xx >> 1)]!;
    }
  }
  return { shape: [n, c, 2 * h, 2 * w], data: out };
}

function resnetRef(ckpt: Checkpoint, cfg: VaeConfig, x: Arr, name: string): Arr {
  let h = convRef(ckpt, siluRef(groupNormRef(ckpt, x, `${name}.norm1`, cfg.normNumGroups)), `${name}.conv1`);
  h = convRef(ckpt, siluRef(groupNormRef(ckpt, h, `${name}.norm2`, cfg.normNumGroups)), `${name}.conv2`);
  const shortcut = ckpt.has(`${name}.conv_shortcut.weight`) ? convRef(ckpt, x, `${name}.conv_shortcut`) : x;
  return addRef(shortcut, h);
}

/** Single-head attention over positions, written out per token (no matrices shared with the graph code). */
function attentionRef(ckpt: Checkpoint, cfg: VaeConfig, x: Arr, name: string): Arr {
  const [n, c, h, w] = x.shape;
  const t = h * w;
  const normed = groupNormRef(ckpt, x, `${name}.group_norm`, cfg.normNumGroups);
  const project = (src: (b: number, tok: number, ch: number) => number, layer: string) => {
    const wt = param(ckpt, `${name}.${layer}.weight`); // [out, in], as nn.Linear stores it
    const bias = param(ckpt, `${name}.${layer}.bias`);
    const out = new Float64Array(n * t * c);
    for (let b = 0; b < n; b++) {
      for (let tok = 0; tok < t; tok++) {
        for (let o = 0; o < c; o++) {
          let s = bias[o]!;
          for (let i = 0; i < c; i++) s += wt[o * c + i]! * src(b, tok, i);
          out[(b * t + tok) * c + o] = s;
        }
      }
    }
    return out;
  };
  const fromMap = (b: number, tok: number, ch: number) => normed.data[(b * c + ch) * t + tok]!;
  const q = project(fromMap, 'to_q');
  const k = project(fromMap, 'to_k');
  const v = project(fromMap, 'to_v');
  const mixed = new Float64Array(n * t * c);
  for (let b = 0; b < n; b++) {
    for (let i = 0; i < t; i++) {
      const scores = new Float64Array(t);
      for (let j = 0; j < t; j++) {
        let s = 0;
        for (let ch = 0; ch < c; ch++) s += q[(b * t + i) * c + ch]! * k[(b * t + j) * c + ch]!;
        scores[j] = s / Math.sqrt(c);
      }
      const max = Math.max(...scores);
      const e = scores.map((s) => Math.exp(s - max));
      const total = e.reduce((a, b2) => a + b2, 0);
      for (let j = 0; j < t; j++) {
        for (let ch = 0; ch < c; ch++) mixed[(b * t + i) * c + ch]! += (e[j]! / total) * v[(b * t + j) * c + ch]!;
      }
    }
  }
  const out = project((b, tok, ch) => mixed[(b * t + tok) * c + ch]!, 'to_out.0');
  const back = new Float64Array(x.data.length);
  for (let b = 0; b < n; b++) for (let tok = 0; tok < t; tok++) for (let ch = 0; ch < c; ch++) back[(b * c + ch) * t + tok] = out[(b * t + tok) * c + ch]!;
  return addRef(x, { shape: x.shape, data: back });
}

function decoderRef(ckpt: Checkpoint, cfg: VaeConfig, latents: Arr): Arr {
  let x: Arr = { shape: latents.shape, data: latents.data.map((v) => v / cfg.scalingFactor) };
  x = convRef(ckpt, x, 'post_quant_conv');
  x = convRef(ckpt, x, 'decoder.conv_in');
  x = resnetRef(ckpt, cfg, x, 'decoder.mid_block.resnets.0');
  if (cfg.midBlockAddAttention) x = attentionRef(ckpt, cfg, x, 'decoder.mid_block.attentions.0');
  x = resnetRef(ckpt, cfg, x, 'decoder.mid_block.resnets.1');
  for (let i = 0; i < cfg.blockOutChannels.length; i++) {
    for (let j = 0; j <= cfg.layersPerBlock; j++) x = resnetRef(ckpt, cfg, x, `decoder.up_blocks.${i}.resnets.${j}`);
    if (i < cfg.blockOutChannels.length - 1) x = convRef(ckpt, upsample2xRef(x), `decoder.up_blocks.${i}.upsamplers.0.conv`);
  }
  x = siluRef(groupNormRef(ckpt, x, 'decoder.conv_norm_out', cfg.normNumGroups));
  return convRef(ckpt, x, 'decoder.conv_out');
}

// ---- running the graph -------------------------------------------------------------------

/** float32 ONNX vs float64 loops; observed ~1e-6 on outputs spanning ~3. */
const TOLERANCE = 1e-5;

const LATENT_SHAPE: [number, number, number, number] = [2, 4, 4, 4];

/** Latents as a sampler produces them: about unit variance (that is what scalingFactor is for). */
function randomLatents(seed: number): HostTensor {
  const data = new Rng(seed).fillNormal(new Float32Array(LATENT_SHAPE.reduce((a, b) => a * b, 1)), 0, 1);
  return tensor('float32', LATENT_SHAPE, data);
}

async function decode(w: Weights, cfg: VaeConfig, latents: HostTensor): Promise<HostTensor> {
  const b = new GraphBuilder('vae_decoder');
  const x = b.input('latents', 'float32', latents.shape);
  b.output(buildVaeDecoder(b, w, cfg, x), 'image');
  const session = await Session.create(b.graph, { threads: 2 });
  try {
    return (await session.run({ latents }))['image']!;
  } finally {
    await session.release();
  }
}

async function saveAndLoad(ckpt: Checkpoint): Promise<Weights> {
  const dir = await mkdtemp(join(tmpdir(), 'vae-'));
  dirs.push(dir);
  const path = join(dir, 'diffusion_pytorch_model.safetensors');
  await writeSafetensors(path, ckpt);
  return Weights.load(path);
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

function expectError(fn: () => unknown, code: string, message: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(HarmonicaError);
  expect((caught as HarmonicaError).code).toBe(code);
  expect((caught as HarmonicaError).message).toMatch(message);
}

describe('VAE decoder (diffusers AutoencoderKL)', () => {
  const ckpt = randomCheckpoint(TINY, 1);
  const latents = randomLatents(2);
  const reference = decoderRef(ckpt, TINY, { shape: LATENT_SHAPE, data: Float64Array.from(latents.data as Float32Array) });

  it('matches the float64 reference, reading every decoder key and no encoder key', async () => {
    const w = await saveAndLoad(ckpt);
    const image = await decode(w, TINY, latents);
    expect(image.shape).toEqual([2, 3, 8, 8]);
    // The reference is not trivially small or constant, so the comparison means something.
    const spread = Math.max(...reference.data) - Math.min(...reference.data);
    expect(spread).toBeGreaterThan(1);
    expect(maxAbsDiff(image.data as Float32Array, reference.data)).toBeLessThan(TOLERANCE);
    expect(w.unused().sort()).toEqual(['encoder.conv_in.bias', 'encoder.conv_in.weight', 'quant_conv.bias', 'quant_conv.weight']);
  });

  it('normalizes with eps 1e-6, which shows once a group\'s variance is small', async () => {
    // conv_in scaled down 1000x: the mid block's first GroupNorm sees a variance near 3e-5,
    // where eps 1e-5 (torch's default) instead of 1e-6 would shrink its output by ~10%.
    const quiet = new Map(ckpt);
    const convIn = ckpt.get('decoder.conv_in.weight')!;
    quiet.set('decoder.conv_in.weight', tensor('float32', convIn.shape, (convIn.data as Float32Array).map((v) => v * 1e-3)));
    quiet.set('decoder.conv_in.bias', tensor('float32', [16]));
    const image = await decode(new Weights(quiet), TINY, latents);
    const ref = decoderRef(quiet, TINY, { shape: LATENT_SHAPE, data: Float64Array.from(latents.data as Float32Array) });
    expect(maxAbsDiff(image.data as Float32Array, ref.data)).toBeLessThan(TOLERANCE);
  });

  it('divides the latents by the scaling factor inside the graph', async () => {
    // Same weights, half the scaling factor: the graph must agree with latents doubled.
    const w = new Weights(ckpt);
    const halved = await decode(w, { ...TINY, scalingFactor: TINY.scalingFactor / 2 }, latents);
    const doubled = tensor('float32', LATENT_SHAPE, (latents.data as Float32Array).map((v) => 2 * v));
    const viaInput = await decode(new Weights(ckpt), TINY, doubled);
    expect(maxAbsDiff(halved.data as Float32Array, viaInput.data as Float32Array)).toBeLessThan(1e-5);
    expect(maxAbsDiff(halved.data as Float32Array, reference.data)).toBeGreaterThan(1e-2);
  });

  it('gives the same image from the legacy attention key names (query/key/value/proj_attn)', async () => {
    const legacy = withLegacyAttentionNames(ckpt);
    expect(legacy.has('decoder.mid_block.attentions.0.proj_attn.weight')).toBe(true);
    expect(legacy.has('decoder.mid_block.attentions.0.to_q.weight')).toBe(false);
    const w = await saveAndLoad(legacy);
    const image = await decode(w, TINY, latents);
    expect(maxAbsDiff(image.data as Float32Array, reference.data)).toBeLessThan(TOLERANCE);
    expect(w.unused().filter((n) => n.startsWith('decoder.'))).toEqual([]);
  });

  it('skips the mid-block attention when mid_block_add_attention is false', async () => {
    const cfg = { ...TINY, midBlockAddAttention: false };
    const plain = randomCheckpoint(cfg, 3);
    expect([...plain.keys()].some((n) => n.includes('attentions'))).toBe(false);
    const image = await decode(new Weights(plain), cfg, latents);
    const ref = decoderRef(plain, cfg, { shape: LATENT_SHAPE, data: Float64Array.from(latents.data as Float32Array) });
    expect(maxAbsDiff(image.data as Float32Array, ref.data)).toBeLessThan(TOLERANCE);
  });

  it('names a missing key', () => {
    const broken = new Map(ckpt);
    broken.delete('decoder.up_blocks.1.resnets.0.conv_shortcut.weight');
    const b = new GraphBuilder('vae');
    const x = b.input('latents', 'float32', LATENT_SHAPE);
    expectError(() => buildVaeDecoder(b, new Weights(broken, 'vae.safetensors'), TINY, x), 'MISSING_WEIGHT',
      /vae\.safetensors: missing weight "decoder\.up_blocks\.1\.resnets\.0\.conv_shortcut\.weight"/);
  });

  it('names the current attention key when neither attention layout is present', () => {
    const broken = new Map([...ckpt].filter(([n]) => !n.includes('.to_q.')));
    const b = new GraphBuilder('vae');
    const x = b.input('latents', 'float32', LATENT_SHAPE);
    expectError(() => buildVaeDecoder(b, new Weights(broken), TINY, x), 'MISSING_WEIGHT', /"decoder\.mid_block\.attentions\.0\.to_q\.weight"/);
  });

  it('names a key with the wrong shape', () => {
    const broken = new Map(ckpt);
    broken.set('decoder.mid_block.attentions.0.to_v.weight', tensor('float32', [16, 8]));
    const b = new GraphBuilder('vae');
    const x = b.input('latents', 'float32', LATENT_SHAPE);
    expectError(() => buildVaeDecoder(b, new Weights(broken), TINY, x), 'WEIGHT_SHAPE',
      /weight "decoder\.mid_block\.attentions\.0\.to_v\.weight" has shape \[16,8\], expected \[16,16\]/);
  });

  it('rejects a checkpoint whose widths do not fit the config', () => {
    // A checkpoint made for [8, 32] read with a [8, 16] config fails on the first wide weight.
    const other = randomCheckpoint({ ...TINY, blockOutChannels: [8, 32] }, 4);
    const b = new GraphBuilder('vae');
    const x = b.input('latents', 'float32', LATENT_SHAPE);
    expectError(() => buildVaeDecoder(b, new Weights(other), TINY, x), 'WEIGHT_SHAPE', /"decoder\.conv_in\.weight" has shape \[32,4,3,3\], expected \[16,4,3,3\]/);
  });

  it('rejects latents with the wrong channel count', () => {
    const b = new GraphBuilder('vae');
    const x = b.input('latents', 'float32', [1, 16, 4, 4]);
    expectError(() => buildVaeDecoder(b, new Weights(ckpt), TINY, x), 'BAD_INPUT', /latents must be \[B, 4, h, w\], got \[1,16,4,4\]/);
  });
});

describe('vaeConfigFromDiffusers', () => {
  /** stabilityai/sd-vae-ft-ema config.json (PixArt-alpha's vae/ folder has the same). */
  const SD_VAE_JSON = {
    _class_name: 'AutoencoderKL',
    _diffusers_version: '0.4.2',
    act_fn: 'silu',
    block_out_channels: [128, 256, 512, 512],
    down_block_types: ['DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D'],
    in_channels: 3,
    latent_channels: 4,
    layers_per_block: 2,
    norm_num_groups: 32,
    out_channels: 3,
    sample_size: 256,
    up_block_types: ['UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D'],
  };

  it('reads the SD VAE config (which predates scaling_factor) and newer ones that state it', () => {
    expect(vaeConfigFromDiffusers(SD_VAE_JSON)).toEqual(SD_VAE_CONFIG);
    expect(vaeConfigFromDiffusers({ ...SD_VAE_JSON, scaling_factor: 0.18215 })).toEqual(SD_VAE_CONFIG);
    expect(vaeConfigFromDiffusers({ ...SD_VAE_JSON, scaling_factor: 0.13025, mid_block_add_attention: false }))
      .toEqual({ ...SD_VAE_CONFIG, scalingFactor: 0.13025, midBlockAddAttention: false });
  });

  it('fills diffusers defaults for optional keys', () => {
    expect(vaeConfigFromDiffusers({ block_out_channels: [64] })).toEqual({
      latentChannels: 4, outChannels: 3, blockOutChannels: [64], layersPerBlock: 1, normNumGroups: 32, scalingFactor: 0.18215, midBlockAddAttention: true,
    });
  });

  const bad: [string, unknown, RegExp][] = [
    ['not an object', [1, 2], /expected a JSON object/],
    ['another model class', { ...SD_VAE_JSON, scaling_factor: 0.18215, _class_name: 'AutoencoderTiny' }, /AutoencoderTiny/],
    ['string scaling_factor', { ...SD_VAE_JSON, scaling_factor: '0.18215' }, /scaling_factor must be a positive number, got "0.18215"/],
    ['zero scaling_factor', { ...SD_VAE_JSON, scaling_factor: 0 }, /scaling_factor must be a positive number, got 0/],
    ['no block_out_channels', { scaling_factor: 0.18215 }, /block_out_channels must be a non-empty list/],
    ['fractional channels', { ...SD_VAE_JSON, scaling_factor: 0.18215, block_out_channels: [128, 256.5] }, /block_out_channels/],
    ['channels not divisible by groups', { ...SD_VAE_JSON, scaling_factor: 0.18215, block_out_channels: [128, 100, 512, 512] }, /100 is not divisible into norm_num_groups 32/],
    ['string latent_channels', { ...SD_VAE_JSON, scaling_factor: 0.18215, latent_channels: '4' }, /latent_channels must be a positive integer, got "4"/],
    ['zero layers_per_block', { ...SD_VAE_JSON, scaling_factor: 0.18215, layers_per_block: 0 }, /layers_per_block must be a positive integer/],
    ['non-boolean attention flag', { ...SD_VAE_JSON, scaling_factor: 0.18215, mid_block_add_attention: 'yes' }, /mid_block_add_attention must be a boolean/],
    ['up blocks not matching', { ...SD_VAE_JSON, scaling_factor: 0.18215, up_block_types: ['UpDecoderBlock2D'] }, /up_block_types must be 4 x "UpDecoderBlock2D"/],
    ['another activation', { ...SD_VAE_JSON, scaling_factor: 0.18215, act_fn: 'gelu' }, /act_fn "gelu"/],
    ['spatial norm', { ...SD_VAE_JSON, scaling_factor: 0.18215, norm_type: 'spatial' }, /norm_type "spatial"/],
    ['SD3-style shift', { ...SD_VAE_JSON, scaling_factor: 1.5305, shift_factor: 0.0609 }, /shift_factor 0.0609/],
    ['no post_quant_conv', { ...SD_VAE_JSON, scaling_factor: 0.18215, use_post_quant_conv: false }, /use_post_quant_conv/],
  ];
  it.each(bad)('rejects %s', (_what, json, message) => {
    expectError(() => vaeConfigFromDiffusers(json), 'BAD_CONFIG', message);
  });
});
