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
let plain: Session;
const rng = new Rng(5);
const base: Record<string, HostTensor> = {
  x: randomTensor([B, 4, 8, 8], rng),
  t: tensor('float32', [B], [500, 500]),
  y: tensor('int64', [B], [2, 10]),
};
for (const s of model.slots) base[stepNames.cache(s.name)] = randomTensor([B, 16, 32], rng);
const teacherValue = randomTensor([B, 8, 8, 8], rng, 'float32', 0.5);

const run = async (logits: number[], extra: Record<string, HostTensor> = {}) =>
  router.run({ ...base, [routerNames.logits]: tensor('float32', [4], logits), [routerNames.teacher]: teacherValue, [routerNames.lambda]: tensor('float32', [], [1.5]), [routerNames.beta]: tensor('float32', [], [0.01]), ...extra });

beforeAll(async () => {
  router = await Session.create(buildRouterStep(model, weights, B).graph, { threads: 1 });
  plain = await Session.create(buildPlainStep(model, weights, B).graph, { threads: 1 });
});

describe('router training graph', () => {
  it('the gradient w.r.t. the router row matches central finite differences', async () => {
    const P = [0.3, -0.7, 1.1, -0.2];
    const grad = (await run(P))[routerNames.grad]!.data as Float32Array;
    const eps = 1e-2;
    for (let s = 0; s < 4; s++) {
      const lossAt = async (d: number) => ((await run(P.map((v, i) => (i === s ? v + d : v))))[routerNames.loss]!.data as Float32Array)[0]!;
      const numeric = ((await lossAt(eps)) - (await lossAt(-eps))) / (2 * eps);
      expect(Math.abs(grad[s]! - numeric)).toBeLessThan(2e-3 + 2e-2 * Math.abs(numeric));
    }
  });

  it('with every gate at 1 the student is the teacher (zero data loss), whatever the cache', async () => {
    const teacher = (await plain.run(base)).out!;
    const r = await run([40, 40, 40, 40], { [routerNames.teacher]: teacher });
    expect((r[routerNames.dataLoss]!.data as Float32Array)[0]).toBeLessThan(1e-10);
  });

  it('with all P = 5 the data loss is small and equals mean((student - teacher)^2)', async () => {
    const teacher = (await plain.run(base)).out!;
    const near = await run([5, 5, 5, 5], { [routerNames.teacher]: teacher });
    const far = await run([-5, -5, -5, -5], { [routerNames.teacher]: teacher });
    const student = near[stepNames.out]!.data as Float32Array;
    const t = teacher.data as Float32Array;
    let direct = 0;
    for (let i = 0; i < t.length; i++) direct += (student[i]! - t[i]!) ** 2 / t.length;
    const loss = (near[routerNames.dataLoss]!.data as Float32Array)[0]!;
    expect(loss).toBeCloseTo(direct, 6);
    expect(loss).toBeLessThan(0.05 * (far[routerNames.dataLoss]!.data as Float32Array)[0]!);
    // loss = lambda * data + beta * sum(sigmoid(P))
    const total = (near[routerNames.loss]!.data as Float32Array)[0]!;
    expect(total).toBeCloseTo(1.5 * loss + 0.01 * 4 / (1 + Math.exp(-5)), 5);
  });
});
