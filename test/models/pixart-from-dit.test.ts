import { describe, expect, it } from 'vitest';
import { pixartFromDit } from '../../src/models/checkpoints/pixart-from-dit.js';
import { createDenoiser } from '../../src/models/denoiser.js';
import type { DitConfig } from '../../src/models/dit.js';
import { initDitWeights } from '../../src/models/dit-init.js';
import type { PixArtConfig } from '../../src/models/pixart.js';
import { plainHooks } from '../../src/models/sublayer.js';
import { Weights } from '../../src/models/weights.js';
import { GraphBuilder } from '../../src/onnx/builder.js';
import { Session } from '../../src/onnx/session.js';
import { Rng } from '../../src/tensor/rng.js';
import { tensor, type HostTensor } from '../../src/tensor/tensor.js';

const DIT: DitConfig = { inputSize: 16, patchSize: 4, inChannels: 1, hidden: 32, depth: 2, heads: 2, mlpRatio: 2, numClasses: 3, learnSigma: false, freqShift: 0, mlpNormEps: 1e-6 };
const PIXART: PixArtConfig = {
  sampleSize: 16, patchSize: 4, inChannels: 1, outChannels: 1, hidden: 32, depth: 2, heads: 2, mlpRatio: 2,
  captionChannels: 8, maxTokens: 4, interpolationScale: 1, useAdditionalConditions: false, normEps: 1e-6,
};
const B = 2;

async function forward(family: 'dit' | 'pixart', cfg: DitConfig | PixArtConfig, weights: Map<string, HostTensor>) {
  const model = createDenoiser(family, cfg as never);
  const b = new GraphBuilder(family);
  b.output(model.build(b, new Weights(weights), B, plainHooks(b)).out, 'out');
  const session = await Session.create(b.graph, { threads: 1 });
  const rng = new Rng(4);
  const x = tensor('float32', [B, 1, 16, 16], rng.fillNormal(new Float32Array(B * 256)));
  const caption = { encoder_hidden_states: tensor('float32', [B, 4, 8], rng.fillNormal(new Float32Array(B * 32))), encoder_attention_mask: tensor('float32', [B, 4], [1, 1, 0, 0, 1, 1, 1, 0]) };
  return async (t: number) => {
    const feeds = { x, t: tensor('float32', [B], [t, t]), ...(family === 'dit' ? { y: tensor('int64', [B], [3, 3]) } : caption) };
    return (await session.run(feeds)).out!.data as Float32Array;
  };
}

function relativeError(a: Float32Array, b: Float32Array): number {
  let d = 0;
  let n = 0;
  for (let i = 0; i < a.length; i++) {
    d += (a[i]! - b[i]!) ** 2;
    n += b[i]! ** 2;
  }
  return Math.sqrt(d / n);
}

describe('PixArt-alpha started from a DiT', () => {
  // Random, non-zero DiT weights: every block has its own timestep and class embedder.
  const dit = initDitWeights(DIT, 5, 1);

  it('with one reference timestep, predicts exactly what the DiT predicts there for the null class, whatever the caption', async () => {
    const ditAt = await forward('dit', DIT, dit);
    const pixartAt = await forward('pixart', PIXART, pixartFromDit(dit, DIT, PIXART, 1, [300]));
    expect(relativeError(await pixartAt(300), await ditAt(300))).toBeLessThan(1e-5);
    // Elsewhere only block 0 keeps its exact modulation: close, not equal.
    const away = relativeError(await pixartAt(800), await ditAt(800));
    expect(away).toBeGreaterThan(1e-3);
  });

  it('the default tables (means over the trajectory) fit the DiT better on average than one reference step', async () => {
    const ditAt = await forward('dit', DIT, dit);
    const single = await forward('pixart', PIXART, pixartFromDit(dit, DIT, PIXART, 1, [500]));
    const mean = await forward('pixart', PIXART, pixartFromDit(dit, DIT, PIXART, 1));
    let singleError = 0;
    let meanError = 0;
    for (const t of [50, 250, 500, 750, 950]) {
      const target = await ditAt(t);
      singleError += relativeError(await single(t), target);
      meanError += relativeError(await mean(t), target);
    }
    expect(meanError).toBeLessThan(singleError);
  });

  it('copies the DiT transformer, starts the text path fresh, and refuses models of another shape', () => {
    const w = pixartFromDit(dit, DIT, PIXART, 1);
    expect([...w.get('transformer_blocks.1.attn1.to_q.weight')!.data]).toEqual([...dit.get('transformer_blocks.1.attn1.to_q.weight')!.data]);
    expect([...w.get('proj_out.weight')!.data]).toEqual([...dit.get('proj_out_2.weight')!.data]);
    expect(w.get('transformer_blocks.0.attn2.to_out.0.weight')!.data.every((v) => v === 0)).toBe(true);
    expect(w.get('transformer_blocks.0.scale_shift_table')!.data.every((v) => v === 0)).toBe(true);
    expect(() => pixartFromDit(dit, DIT, { ...PIXART, hidden: 48 }, 1)).toThrow(/cannot start this PixArt from that DiT: hidden 32 vs 48/);
    expect(() => pixartFromDit(dit, { ...DIT, freqShift: 1 }, PIXART, 1)).toThrow(/timestep frequency shift 1 vs 0/);
  });
});
