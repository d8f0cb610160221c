import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { referenceOps } from '../helpers/reference.js';
import { describe, expect, it } from 'vitest';
import { buildPlainStep } from '../../src/cache/step-graph.js';
import { diffusersDitToOriginal, originalDitToDiffusers } from '../../src/models/checkpoints/dit.js';
import { ditDenoiser } from '../../src/models/denoiser.js';
import type { DitConfig } from '../../src/models/dit.js';
import { Weights } from '../../src/models/weights.js';
import { randomTensor } from '../../src/models/init.js';
import { Session } from '../../src/onnx/session.js';
import { Rng } from '../../src/tensor/rng.js';
import { readSafetensors, writeSafetensors } from '../../src/tensor/safetensors.js';
import { tensor, type HostTensor } from '../../src/tensor/tensor.js';
import { randomDitCheckpoints, TINY_DIT } from '../helpers/dit-checkpoint.js';

const B = 2;
const feeds = () => ({
  x: randomTensor([B, 4, 8, 8], new Rng(9)),
  t: tensor('float32', [B], [999, 37]),
  y: tensor('int64', [B], [3, TINY_DIT.numClasses]),
});

async function run(cfg: DitConfig, weights: Map<string, HostTensor>) {
  const s = await Session.create(buildPlainStep(ditDenoiser(cfg), new Weights(weights), B).graph, { threads: 1 });
  return (await s.run(feeds())).out!;
}

/** Naive float64 DiT forward (original facebookresearch semantics), reading diffusers keys. */
function referenceDit(cfg: DitConfig, w: Map<string, HostTensor>, x: Float32Array, t: number[], y: number[]): Float64Array {
  const { hidden: d, patchSize: p, inChannels: C, inputSize: S, heads } = cfg;
  const g = S / p;
  const T = g * g;
  const outC = 2 * C;
  const { get, lin, silu, gelu, ln, modulate } = referenceOps(w, d);
  const result = new Float64Array(B * outC * S * S);
  for (let n = 0; n < B; n++) {
    // patch embedding + sin-cos position embedding (MAE: first half encodes the column)
    const tokens = new Float64Array(T * d);
    const Wp = get('pos_embed.proj.weight');
    const bp = get('pos_embed.proj.bias');
    const emb1d = (dim: number, pos: number, i: number) => {
      const h = dim / 2;
      const omega = 1 / 10000 ** ((i % h) / h);
      return i < h ? Math.sin(pos * omega) : Math.cos(pos * omega);
    };
    for (let gh = 0; gh < g; gh++) for (let gw = 0; gw < g; gw++) for (let k = 0; k < d; k++) {
      let s = bp[k]!;
      for (let c = 0; c < C; c++) for (let i = 0; i < p; i++) for (let j = 0; j < p; j++) {
        s += Wp[((k * C + c) * p + i) * p + j]! * x[((n * C + c) * S + gh * p + i) * S + gw * p + j]!;
      }
      const pos = k < d / 2 ? emb1d(d / 2, gw, k) : emb1d(d / 2, gh, k - d / 2);
      tokens[(gh * g + gw) * d + k] = s + pos;
    }
    // conditioning: cat(cos, sin) timestep features -> MLP, plus the class embedding
    const half = 128;
    const tf = new Float64Array(256);
    for (let i = 0; i < half; i++) {
      const f = Math.exp((-Math.log(10000) * i) / half);
      tf[i] = Math.cos(t[n]! * f);
      tf[half + i] = Math.sin(t[n]! * f);
    }
    const e = 'transformer_blocks.0.norm1.emb';
    const tEmb = lin(silu(lin(tf, `${e}.timestep_embedder.linear_1`, 256, d)), `${e}.timestep_embedder.linear_2`, d, d);
    const table = get(`${e}.class_embedder.embedding_table.weight`);
    const c = tEmb.map((a, k) => a + table[y[n]! * d + k]!);
    let h = tokens;
    for (let blk = 0; blk < cfg.depth; blk++) {
      const k = `transformer_blocks.${blk}`;
      const mod = lin(silu(c), `${k}.norm1.linear`, d, 6 * d);
      const chunk = (i: number) => mod.slice(i * d, (i + 1) * d);
      const a = modulate(ln(h, 1e-6), chunk(0), chunk(1));
      const q = lin(a, `${k}.attn1.to_q`, d, d), kk = lin(a, `${k}.attn1.to_k`, d, d), v = lin(a, `${k}.attn1.to_v`, d, d);
      const hd = d / heads;
      const att = new Float64Array(T * d);
      for (let hh = 0; hh < heads; hh++) for (let i = 0; i < T; i++) {
        const sc = new Float64Array(T);
        for (let j = 0; j < T; j++) { let s = 0; for (let z = 0; z < hd; z++) s += q[i * d + hh * hd + z]! * kk[j * d + hh * hd + z]!; sc[j] = s / Math.sqrt(hd); }
        const mx = Math.max(...sc);
        const ex = sc.map((s) => Math.exp(s - mx));
        const sum = ex.reduce((u, w2) => u + w2, 0);
        for (let z = 0; z < hd; z++) { let s = 0; for (let j = 0; j < T; j++) s += (ex[j]! / sum) * v[j * d + hh * hd + z]!; att[i * d + hh * hd + z] = s; }
      }
      const ao = lin(att, `${k}.attn1.to_out.0`, d, d);
      h = h.map((u, idx) => u + chunk(2)[idx % d]! * ao[idx]!);
      const m = modulate(ln(h, cfg.mlpNormEps), chunk(3), chunk(4));
      const mo = lin(lin(m, `${k}.ff.net.0.proj`, d, 4 * d).map(gelu), `${k}.ff.net.2`, 4 * d, d);
      h = h.map((u, idx) => u + chunk(5)[idx % d]! * mo[idx]!);
    }
    const fm = lin(silu(c), 'proj_out_1', d, 2 * d);
    const out = lin(modulate(ln(h, 1e-6), fm.slice(0, d), fm.slice(d)), 'proj_out_2', d, p * p * outC);
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

describe('DiT', () => {
  const { original, diffusers } = randomDitCheckpoints(TINY_DIT);

  it('matches a naive float64 reference of the original DiT', async () => {
    const out = await run(TINY_DIT, diffusers);
    const f = feeds();
    const ref = referenceDit(TINY_DIT, diffusers, f.x.data as Float32Array, [999, 37], [3, TINY_DIT.numClasses]);
    expect(out.shape).toEqual([B, 8, 8, 8]);
    expect(maxDiff(out.data as Float32Array, ref)).toBeLessThan(2e-4);
  });

  it('the diffusers and the original layouts of the same weights give the same output (through safetensors files)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'dit-layouts-'));
    await writeSafetensors(join(dir, 'original.safetensors'), original);
    await writeSafetensors(join(dir, 'diffusers.safetensors'), diffusers);
    const fromOriginal = originalDitToDiffusers(await readSafetensors(join(dir, 'original.safetensors')), TINY_DIT);
    const a = await run(TINY_DIT, fromOriginal);
    const b = await run(TINY_DIT, await readSafetensors(join(dir, 'diffusers.safetensors')));
    expect(maxDiff(a.data as Float32Array, b.data as Float32Array)).toBeLessThan(1e-6);
  });

  it('diffusersDitToOriginal inverts the layout change: the original state dict back, key for key', () => {
    const back = diffusersDitToOriginal(diffusers, TINY_DIT);
    expect([...back.keys()].sort()).toEqual([...original.keys()].sort());
    for (const [name, t] of original) {
      expect(back.get(name)!.shape, name).toEqual(t.shape);
      expect(maxDiff(back.get(name)!.data as Float32Array, t.data as Float32Array), name).toBeLessThan(1e-7);
    }
  });

  it("diffusers' timestep frequency shift is a setting and changes the numbers", async () => {
    const a = await run(TINY_DIT, diffusers);
    const b = await run({ ...TINY_DIT, freqShift: 1 }, diffusers);
    expect(maxDiff(a.data as Float32Array, b.data as Float32Array)).toBeGreaterThan(1e-3);
  });

  it('a missing key or a wrong shape names the key', async () => {
    const missing = new Map(diffusers);
    missing.delete('transformer_blocks.1.ff.net.2.weight');
    await expect(run(TINY_DIT, missing)).rejects.toThrow(/missing weight "transformer_blocks.1.ff.net.2.weight"/);
    const wrong = new Map(diffusers);
    wrong.set('transformer_blocks.0.attn1.to_k.weight', tensor('float32', [16, 32]));
    await expect(run(TINY_DIT, wrong)).rejects.toThrow(/"transformer_blocks.0.attn1.to_k.weight" has shape \[16,32\], expected \[32,32\]/);
    const orig = new Map(original);
    orig.delete('blocks.0.attn.qkv.weight');
    expect(() => originalDitToDiffusers(orig, TINY_DIT)).toThrow(/missing weight "blocks.0.attn.qkv.weight"/);
  });

  it('rejects an invalid config and a wrong input shape', () => {
    expect(() => ditDenoiser({ ...TINY_DIT, hidden: 30 })).toThrow(/hidden 30 not divisible by heads 4/);
  });
});
