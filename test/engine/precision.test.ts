import { describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import { psnr } from '../../src/eval/metrics.js';
import { tinyDitPackage, tinyPixArtPackage } from '../helpers/packages.js';

describe('engine precision per component', () => {
  // Tiny random model, 6 steps (measured: int8 28.8 dB, int4 23.5 dB against fp32).
  it('a DiT at int8 and int4 generates close to fp32 and says so in the report', async () => {
    const dir = (await tinyDitPackage()).dir;
    const req = { classLabel: 3, seed: 2 };
    const fp32 = await (await Engine.open(dir, { threads: 1 })).generate(req);
    expect(fp32.report.precision).toEqual({ transformer: 'fp32' });
    for (const [p, bound] of [['int8', 25], ['int4', 18]] as const) {
      const q = await (await Engine.open(dir, { threads: 1 }, { precision: { transformer: p } })).generate(req);
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
    const q = await (await Engine.open(dir, { threads: 1 }, { precision: { textEncoder: 'int8' } })).generate(req);
    expect(q.report.precision).toEqual({ transformer: 'fp32', textEncoder: 'int8' });
    expect(psnr(q.images[0]!.data as Float32Array, fp32.images[0]!.data as Float32Array)).toBeGreaterThan(30);
  });

  it('refuses fp16 on the CPU, a text encoder precision for a class model, and unknown values', async () => {
    const dir = (await tinyDitPackage()).dir;
    await expect(Engine.open(dir, { threads: 1 }, { precision: { transformer: 'fp16' } })).rejects.toMatchObject({ code: 'BAD_INPUT', message: expect.stringMatching(/precision.transformer fp16 .* CUDA only/) });
    await expect(Engine.open(dir, { threads: 1 }, { precision: { textEncoder: 'int8' } })).rejects.toThrow(/precision.textEncoder: .* has no text encoder/);
    await expect(Engine.open(dir, { threads: 1 }, { precision: { transformer: 'int3' as never } })).rejects.toThrow(/precision.transformer must be one of fp32, fp16, int8, int4/);
  });
});
