import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import { encodeImage } from '../../src/engine/image.js';
import { ROUTER_FORMAT } from '../../src/cache/router.js';
import { tinyDitPackage } from '../helpers/packages.js';

let engine: Engine;
beforeAll(async () => {
  engine = await Engine.open((await tinyDitPackage()).dir, { threads: 1 });
});

describe('engine (tiny pixel-space DiT)', () => {
  it('the same seed gives identical image bytes; another seed does not', async () => {
    const a = await engine.generate({ classLabel: 7, seed: 11 });
    const b = await engine.generate({ classLabel: 7, seed: 11 });
    const c = await engine.generate({ classLabel: 7, seed: 12 });
    const png = async (r: typeof a) => encodeImage(r.images[0]!);
    expect((await png(a)).equals(await png(b))).toBe(true);
    expect((await png(a)).equals(await png(c))).toBe(false);
    expect(a.images[0]!.shape).toEqual([1, 8, 8]);
    expect(a.report).toMatchObject({ steps: 6, sampler: 'ddim', cfg: 1.5, cur: 0, macSpeedup: 1, reusedSlots: 0, computedSlots: 24 });
    expect(a.report.stepsMs).toHaveLength(6);
  });

  it('fora:2 reuses exactly every odd step and reports CUR and MAC speedup', async () => {
    const steps: number[] = [];
    const r = await engine.generate({ classLabel: 1, seed: 1, cache: 'fora:2' }, { onStep: (e) => steps.push(e.reused) });
    expect(r.report.decisions.map((d) => d.every(Boolean))).toEqual([true, false, true, false, true, false]);
    expect(r.report.decisions.map((d) => d.some(Boolean))).toEqual([true, false, true, false, true, false]);
    expect(steps).toEqual([0, 4, 0, 4, 0, 4]);
    expect(r.report.cur).toBeCloseTo(0.5);
    expect(r.report.macSpeedup).toBeGreaterThan(1.5);
    const plain = await engine.generate({ classLabel: 1, seed: 1 });
    expect(r.images[0]!.data).not.toEqual(plain.images[0]!.data);
  });

  it('n images in one batch, with and without guidance', async () => {
    const r = await engine.generate({ classLabel: 2, seed: 5, n: 3, cfg: 1 });
    expect(r.images).toHaveLength(3);
    expect(r.images[0]!.data).not.toEqual(r.images[1]!.data);
  });

  it('rejects an unknown class, bad steps, bad n and an unknown policy clearly', async () => {
    await expect(engine.generate({ classLabel: 10 })).rejects.toThrow(/unknown class 10: tiny-dit has classes 0..9/);
    await expect(engine.generate({ classLabel: 0, steps: 0 })).rejects.toThrow(/steps must be/);
    await expect(engine.generate({ classLabel: 0, n: 9 })).rejects.toThrow(/n must be/);
    await expect(engine.generate({ classLabel: 0, cache: 'warp:9' })).rejects.toThrow(/unknown cache policy "warp"/);
    await expect(engine.generate({ classLabel: 0, sampler: 'euler' })).rejects.toThrow(/Unknown sampler "euler"/);
    await expect(engine.generate({})).rejects.toThrow(/needs a class label 0..9/);
    await expect(engine.generate({ prompt: 'a seven' })).rejects.toThrow(/class-conditional: give a class, not a prompt/);
  });

  it('rejects a router trained for another model or step count', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'router-'));
    const router = (sha256: string, steps: number) => ({
      format: ROUTER_FORMAT, method: 'harmonica', model: { id: 'x', sha256 }, sampler: 'ddim', steps, cfgScale: 1.5,
      sublayers: engine.model.slots.map((s) => s.name), logits: Array.from({ length: steps }, () => engine.model.slots.map(() => 0)), tau: 0.1,
    });
    await writeFile(join(dir, 'other.json'), JSON.stringify(router('f'.repeat(64), 6)));
    await writeFile(join(dir, 'steps.json'), JSON.stringify(router(engine.pkg.sha256, 4)));
    await writeFile(join(dir, 'ok.json'), JSON.stringify(router(engine.pkg.sha256, 6)));
    await expect(engine.generate({ classLabel: 0, cache: `router:${join(dir, 'other.json')}` })).rejects.toThrow(/trained for model x/);
    await expect(engine.generate({ classLabel: 0, cache: `router:${join(dir, 'steps.json')}` })).rejects.toThrow(/trained for 4 steps, the request has 6/);
    const ok = await engine.generate({ classLabel: 0, cache: `router:${join(dir, 'ok.json')}` });
    expect(ok.report.cur).toBe(0); // sigmoid(0) = 0.5 > 0.1: everything computes
  });

  it('finds a router the package ships by its name', async () => {
    await mkdir(join(engine.pkg.dir, 'routers'), { recursive: true });
    const logits = Array.from({ length: 6 }, (_, step) => engine.model.slots.map(() => (step === 0 ? 5 : -5)));
    await writeFile(join(engine.pkg.dir, 'routers', 'all-reuse.json'), JSON.stringify({
      format: ROUTER_FORMAT, method: 'harmonica', model: { id: engine.id, sha256: engine.pkg.sha256 }, sampler: 'ddim', steps: 6, cfgScale: 1.5,
      sublayers: engine.model.slots.map((s) => s.name), logits, tau: 0.1,
    }));
    const named = await engine.generate({ classLabel: 0, cache: 'router:all-reuse' });
    expect(named.report.cur).toBeCloseTo(5 / 6, 12);
    expect(engine.resolve({ classLabel: 0, cache: 'router:all-reuse@0.2' }).cache).toBe(`router:${join(engine.pkg.dir, 'routers', 'all-reuse.json')}@0.2`);
    await expect(engine.generate({ classLabel: 0, cache: 'router:no-such-router' })).rejects.toThrow(/cannot read router no-such-router/);
  });
});

describe('engine concurrency', () => {
  it('concurrent requests give the same images as sequential ones', async () => {
    const seq = [await engine.generate({ classLabel: 1, seed: 21, cache: 'fora:2' }), await engine.generate({ classLabel: 2, seed: 22, cache: 'fora:2' })];
    const par = await Promise.all([engine.generate({ classLabel: 1, seed: 21, cache: 'fora:2' }), engine.generate({ classLabel: 2, seed: 22, cache: 'fora:2' })]);
    par.forEach((r, i) => expect(Array.from(r.images[0]!.data as Float32Array)).toEqual(Array.from(seq[i]!.images[0]!.data as Float32Array)));
  });
});
