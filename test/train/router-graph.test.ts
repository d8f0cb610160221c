import { beforeAll, describe, expect, it } from 'vitest';
import { buildPlainStep, stepNames } from '../../src/cache/step-graph.js';
import { ditDenoiser } from '../../src/models/denoiser.js';
import { randomTensor } from '../../src/models/init.js';
import { Weights } from '../../src/models/weights.js';
import { Session } from '../../src/onnx/session.js';
import { Rng } from '../../src/tensor/rng.js';
import { tensor, type HostTensor } from '../../src/tensor/tensor.js';
import { buildRouterStep, routerNames } from '../../src/train/router-graph.js';
import { randomDitCheckpoints, TINY_DIT } from '../helpers/dit-checkpoint.js';

const B = 2;
const model = ditDenoiser(TINY_DIT);
const weights = new Weights(randomDitCheckpoints(TINY_DIT, 2, 0.3).diffusers);
let router: Session;
let guided: Session;
let straight: Session;
let plain: Session;
const rng = new Rng(5);
const base: Record<string, HostTensor> = {
  x: randomTensor([B, 4, 8, 8], rng),
  t: tensor('float32', [B], [500, 500]),
  y: tensor('int64', [B], [2, 10]),
};
for (const s of model.slots) base[stepNames.cache(s.name)] = randomTensor([B, 16, 32], rng);
const teacherValue = randomTensor([B, 8, 8, 8], rng, 'float32', 0.5);

const run = async (logits: number[], extra: Record<string, HostTensor> = {}, session = () => router) =>
  session().run({ ...base, [routerNames.logits]: tensor('float32', [4], logits), [routerNames.teacher]: teacherValue, [routerNames.lambda]: tensor('float32', [], [1.5]), [routerNames.beta]: tensor('float32', [], [0.01]), ...extra });

beforeAll(async () => {
  router = await Session.create(buildRouterStep(model, weights, B, { withLoss: true }).graph, { threads: 1 });
  // Rows [cond, uncond] of one noise (y = 2, then the null class 10): a guidance pair.
  guided = await Session.create(buildRouterStep(model, weights, B, { withLoss: true, guidedBatch: 1 }).graph, { threads: 1 });
  straight = await Session.create(buildRouterStep(model, weights, B, { withLoss: true, guidedBatch: 1, straightThrough: true }).graph, { threads: 1 });
  plain = await Session.create(buildPlainStep(model, weights, B).graph, { threads: 1 });
});

const scale = { [routerNames.cfgScale]: tensor('float32', [], [3]) };
const scalar = (r: Record<string, HostTensor>, name: string) => (r[name]!.data as Float32Array)[0]!;
const sigmoid = (v: number) => 1 / (1 + Math.exp(-v));

/** uncond + 3 * (cond - uncond) over the 4 epsilon channels of a [cond, uncond] output [2, 8, 8, 8]. */
function guidedEps(out: Float32Array): Float32Array {
  const row = 8 * 64;
  return Float32Array.from({ length: 4 * 64 }, (_, k) => out[row + k]! + 3 * (out[k]! - out[row + k]!));
}

describe('router training graph', () => {
  it('the gradient w.r.t. the router row matches central finite differences (guided loss)', async () => {
    const P = [0.3, -0.7, 1.1, -0.2];
    const grad = (await run(P, scale, () => guided))[routerNames.grad]!.data as Float32Array;
    const eps = 1e-2;
    for (let s = 0; s < 4; s++) {
      const lossAt = async (d: number) => scalar(await run(P.map((v, i) => (i === s ? v + d : v)), scale, () => guided), routerNames.loss);
      const numeric = ((await lossAt(eps)) - (await lossAt(-eps))) / (2 * eps);
      expect(Math.abs(grad[s]! - numeric)).toBeLessThan(2e-3 + 2e-2 * Math.abs(numeric));
    }
  });

  it('with every gate at 1 the student is the teacher (zero data loss), whatever the cache', async () => {
    const teacher = (await plain.run(base)).out!;
    const r = await run([40, 40, 40, 40], { [routerNames.teacher]: teacher });
    expect((r[routerNames.dataLoss]!.data as Float32Array)[0]).toBeLessThan(1e-10);
  });

  it('with guidance the data loss is on the guided epsilon the sampler uses: uncond + s * (cond - uncond)', async () => {
    const teacher = (await plain.run(base)).out!;
    const r = await run([0.5, -1, 2, 0], { ...scale, [routerNames.teacher]: teacher }, () => guided);
    const student = guidedEps(r[stepNames.out]!.data as Float32Array);
    const reference = guidedEps(teacher.data as Float32Array);
    const direct = student.reduce((sum, v, k) => sum + (v - reference[k]!) ** 2, 0) / student.length;
    expect(Math.abs(scalar(r, routerNames.dataLoss) - direct)).toBeLessThan(1e-6 * direct);
    // Not the loss on the raw cond and uncond rows, which guidance would weigh differently.
    const raw = (r[stepNames.out]!.data as Float32Array).reduce((sum, v, k) => sum + (v - (teacher.data as Float32Array)[k]!) ** 2, 0) / teacher.data.length;
    expect(Math.abs(scalar(r, routerNames.dataLoss) - raw)).toBeGreaterThan(0.1 * raw);
  });

  it('straight-through: the forward uses the hard decisions, the gradient flows through sigmoid(P)', async () => {
    const P = [0.3, -3, 1.1, -0.2]; // r = 0.57, 0.047, 0.75, 0.45: slot 1 is under tau 0.1
    const hard = P.map((v) => (sigmoid(v) > 0.1 ? 1 : 0));
    const offset = (d = 0, at = -1) => ({ [routerNames.hardOffset]: tensor('float32', [4], P.map((v, i) => hard[i]! - sigmoid(v) + (i === at ? d : 0))) });
    const teacher = (await plain.run(base)).out!;
    const st = await run(P, { ...scale, ...offset(), [routerNames.teacher]: teacher }, () => straight);
    const hardForward = await run(hard.map((h) => (h ? 40 : -40)), { ...scale, [routerNames.teacher]: teacher }, () => guided);
    const a = st[stepNames.out]!.data as Float32Array;
    const b = hardForward[stepNames.out]!.data as Float32Array;
    expect(Math.max(...a.map((v, k) => Math.abs(v - b[k]!)))).toBeLessThan(1e-5);
    // dL/dP_s = (dL/dw_s at the hard forward + beta) * r (1 - r), w_s the mix weight of slot s.
    const grad = st[routerNames.grad]!.data as Float32Array;
    const eps = 1e-2;
    for (let s = 0; s < 4; s++) {
      const lossAt = async (d: number) => scalar(await run(P, { ...scale, ...offset(d, s), [routerNames.teacher]: teacher }, () => straight), routerNames.loss);
      const dw = ((await lossAt(eps)) - (await lossAt(-eps))) / (2 * eps);
      const r = sigmoid(P[s]!);
      const expected = (dw + 0.01) * r * (1 - r);
      expect(Math.abs(grad[s]! - expected)).toBeLessThan(2e-3 + 2e-3 * Math.abs(expected));
    }
  });

  it('with all P = 5 the data loss is small and equals mean((student - teacher)^2) over the epsilon channels', async () => {
    const teacher = (await plain.run(base)).out!;
    const near = await run([5, 5, 5, 5], { [routerNames.teacher]: teacher });
    const far = await run([-5, -5, -5, -5], { [routerNames.teacher]: teacher });
    const student = near[stepNames.out]!.data as Float32Array;
    const t = teacher.data as Float32Array;
    // Output [2, 8, 8, 8]: channels 0..3 are epsilon, 4..7 the learned sigma the samplers drop.
    let direct = 0;
    for (let i = 0; i < t.length; i++) if (Math.floor(i / 64) % 8 < 4) direct += (student[i]! - t[i]!) ** 2 / (t.length / 2);
    const loss = (near[routerNames.dataLoss]!.data as Float32Array)[0]!;
    expect(loss).toBeCloseTo(direct, 6);
    expect(loss).toBeLessThan(0.05 * (far[routerNames.dataLoss]!.data as Float32Array)[0]!);
    // loss = lambda * data + beta * sum(sigmoid(P))
    const total = (near[routerNames.loss]!.data as Float32Array)[0]!;
    expect(total).toBeCloseTo(1.5 * loss + 0.01 * 4 / (1 + Math.exp(-5)), 5);
  });
});
