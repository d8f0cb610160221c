import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import { psnr } from '../../src/eval/metrics.js';
import { buildT5Encoder, t5ConfigFromHf } from '../../src/models/t5.js';
import { TextTokenizer } from '../../src/models/tokenizer.js';
import { Weights } from '../../src/models/weights.js';
import { GraphBuilder } from '../../src/onnx/builder.js';
import { Session } from '../../src/onnx/session.js';
import { tensor } from '../../src/tensor/tensor.js';
import { tinyDitPackage, tinyPixArtPackage } from '../helpers/packages.js';

describe('engine precision per component', () => {
  // Tiny random model, 6 steps (measured: int8 28.8 dB, int4 23.5 dB against fp32).
  it('a DiT at int8 and int4 generates close to fp32 and says so in the report', async () => {
    const dir = (await tinyDitPackage()).dir;
    const req = { classLabel: 3, seed: 2 };
    const fp32 = await (await Engine.open(dir, { threads: 1 })).generate(req);
    expect(fp32.report.precision).toEqual({ transformer: 'fp32' });
    for (const [p, bound] of [['int8', 25], ['int4', 18]] as const) {
      const q = await (await Engine.open(dir, { threads: 1, precision: { transformer: p } })).generate(req);
      expect(q.report.precision).toEqual({ transformer: p });
      const db = psnr(q.images[0]!.data as Float32Array, fp32.images[0]!.data as Float32Array);
      expect(db).toBeGreaterThan(bound);
      expect(db).toBeLessThan(Infinity);
    }
  });

  it('a text model takes its T5 encoder at int8', async () => {
    const dir = (await tinyPixArtPackage()).dir;
    const req = { prompt: 'a digit', seed: 1 };
    const fp32 = await (await Engine.open(dir, { threads: 1 })).generate(req);
    const q = await (await Engine.open(dir, { threads: 1, precision: { textEncoder: 'int8' } })).generate(req);
    expect(q.report.precision).toEqual({ transformer: 'fp32', textEncoder: 'int8' });
    expect(psnr(q.images[0]!.data as Float32Array, fp32.images[0]!.data as Float32Array)).toBeGreaterThan(30);
  });

  it('refuses fp16 on the CPU, a text encoder precision for a class model, and unknown values', async () => {
    const dir = (await tinyDitPackage()).dir;
    await expect(Engine.open(dir, { threads: 1, precision: { transformer: 'fp16' } })).rejects.toMatchObject({ code: 'BAD_INPUT', message: expect.stringMatching(/precision.transformer fp16 .* CUDA only/) });
    await expect(Engine.open(dir, { threads: 1, precision: { textEncoder: 'int8' } })).rejects.toThrow(/precision.textEncoder: .* has no text encoder/);
    await expect(Engine.open(dir, { threads: 1, precision: { transformer: 'int3' as never } })).rejects.toThrow(/precision.transformer must be one of fp32, fp16, int8, int4/);
  });
});

describe('text conditioning', () => {
  it('encodes each distinct prompt once with a batch-1 encoder and tiles the rows: equal to a batch graph', async () => {
    const engine = await Engine.open((await tinyPixArtPackage()).dir, { threads: 1 });
    const te = engine.pkg.manifest.textEncoder!;
    const { feeds } = await engine.conditioning.build({ prompt: 'a digit', negativePrompt: 'blurry', n: 2 }, 4);
    const hidden = feeds.encoder_hidden_states!;
    const L = te.maxLength;
    // The same prompts through one graph of batch 4.
    const tokenizer = await TextTokenizer.load(join(engine.pkg.dir, te.tokenizer));
    const rows = ['a digit', 'a digit', 'blurry', 'blurry'].map((p) => tokenizer.encode(p, L));
    const b = new GraphBuilder('t5');
    b.output(buildT5Encoder(b, Weights.load(join(engine.pkg.dir, te.weights)), t5ConfigFromHf(te.config, L), b.input('ids', 'int64', [4, L]), b.input('mask', 'int64', [4, L])), 'h');
    const session = await Session.create(b.graph, { threads: 1 });
    const ref = (await session.run({ ids: tensor('int64', [4, L], rows.flatMap((r) => r.ids)), mask: tensor('int64', [4, L], rows.flatMap((r) => r.mask)) })).h!;
    expect(hidden.shape).toEqual(ref.shape);
    const a = hidden.data as Float32Array;
    const r = ref.data as Float32Array;
    let worst = 0;
    for (let i = 0; i < r.length; i++) worst = Math.max(worst, Math.abs(a[i]! - r[i]!));
    expect(worst).toBeLessThan(1e-5);
    const width = r.length / 4;
    expect(a.subarray(0, width)).toEqual(a.subarray(width, 2 * width));
    expect(a.subarray(0, width)).not.toEqual(a.subarray(2 * width, 3 * width));
  });
});
