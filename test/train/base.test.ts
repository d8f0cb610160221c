import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import { buildTrainingStep, exportBaseModel, loadTrainConfig, lossWeight, lrScales, trainBase, trainingBatch, type BaseTrainConfig } from '../../src/train/base.js';
import { createTask, type TrainTask } from '../../src/train/tasks.js';
import type { DitConfig } from '../../src/models/dit.js';
import { plainHooks } from '../../src/models/sublayer.js';
import { createDenoiser } from '../../src/models/denoiser.js';
import { Weights } from '../../src/models/weights.js';
import { initDitWeights } from '../../src/models/dit-init.js';
import { Session } from '../../src/onnx/session.js';
import { splitMnist } from '../../src/data/mnist.js';
import { alphasCumprod, linearBetas } from '../../src/diffusion/schedule.js';
import { Rng } from '../../src/tensor/rng.js';
import { readSafetensors } from '../../src/tensor/safetensors.js';
import { tensor, type HostTensor } from '../../src/tensor/tensor.js';
import { lossCurve, MICRO_DIT_RUN } from '../helpers/train-configs.js';

const cfg = MICRO_DIT_RUN;

describe('base-model trainer', () => {
  it('a resumed run follows the same loss curve as an uninterrupted one', async () => {
    const straight = await mkdtemp(join(tmpdir(), 'train-a-'));
    const resumed = await mkdtemp(join(tmpdir(), 'train-b-'));
    await trainBase(cfg, straight, { threads: 1 });
    await trainBase(cfg, resumed, { threads: 1, stopAfter: 3 });
    await trainBase(cfg, resumed, { threads: 1, resume: true });
    const a = await lossCurve(straight);
    const b = await lossCurve(resumed);
    expect(a).toHaveLength(6);
    expect(b).toEqual(a);
    // A run that does not resume starts over: a different curve after step 3.
    const restarted = await mkdtemp(join(tmpdir(), 'train-c-'));
    await trainBase(cfg, restarted, { threads: 1, stopAfter: 3 });
    await trainBase({ ...cfg, train: { ...cfg.train, seed: 4 } }, restarted, { threads: 1 });
    expect((await lossCurve(restarted)).slice(3)).not.toEqual(a.slice(3));
  });

  it('Min-SNR-gamma weights each sample min(SNR, gamma) / SNR; uniform weighting is the plain MSE', async () => {
    expect(lossWeight(0.9, undefined)).toBe(1);
    expect(lossWeight(10 / 11, 5)).toBeCloseTo(0.5, 12); // SNR 10
    expect(lossWeight(2 / 3, 5)).toBe(1); // SNR 2 < gamma
    const ab = alphasCumprod(linearBetas());
    const task = createTask(cfg, cfg.train.seed);
    const { graph, params } = buildTrainingStep(task, 4);
    const session = await Session.create(graph.graph, { threads: 1 });
    const weightsFeed: Record<string, HostTensor> = {};
    for (const [v, t] of params) weightsFeed[v.name] = t;
    const run = async (batch: Record<string, HostTensor>) => {
      const r = await session.run({ ...weightsFeed, ...batch });
      return { loss: (r.loss!.data as Float32Array)[0]!, mse: (r.mse!.data as Float32Array)[0]! };
    };
    const uniform = trainingBatch(task, splitMnist().train, { batch: 4, conditionDropout: 0 }, new Rng(5), ab);
    const plain = await run(uniform);
    expect(plain.loss).toBe(plain.mse);
    // Same batch (same random stream), weighted: each sample's error counts with its timestep's weight.
    const weighted = trainingBatch(task, splitMnist().train, { batch: 4, conditionDropout: 0, minSnrGamma: 5 }, new Rng(5), ab);
    const t = weighted.t!.data as Float32Array;
    const w = weighted.weight!.data as Float32Array;
    expect([...w]).toEqual([...t].map((ti) => Math.fround(lossWeight(ab[ti]!, 5))));
    const perSample: number[] = [];
    for (let i = 0; i < 4; i++) {
      const oneHot = tensor('float32', [4, 1, 1, 1], Float32Array.from({ length: 4 }, (_, k) => (k === i ? 4 : 0)));
      perSample.push((await run({ ...weighted, weight: oneHot })).loss);
    }
    const expected = perSample.reduce((sum, mse, i) => sum + w[i]! * mse, 0) / 4;
    const got = await run(weighted);
    expect(got.mse).toBe(plain.mse);
    expect(got.loss).toBeCloseTo(expected, 6);
    await session.release();
    // A non-positive gamma is a config error.
    const path = join(await mkdtemp(join(tmpdir(), 'train-cfg-')), 'bad.json');
    await writeFile(path, JSON.stringify({ ...cfg, train: { ...cfg.train, minSnrGamma: 0 } }));
    await expect(loadTrainConfig(path)).rejects.toThrow(/minSnrGamma must be > 0/);
  });

  it('lr multipliers: each parameter takes the first pattern that matches; bad patterns are config errors', async () => {
    const names = ['caption_projection.linear_1.weight', 'transformer_blocks.0.attn2.to_q.weight', 'transformer_blocks.0.attn1.to_q.weight', 'encoder.block.0.layer.0.SelfAttention.q.weight', 'shared.weight'];
    const scales = lrScales({ 'attn2\\.': 4, '^(encoder|shared)\\.': 2, '\\.to_q\\.': 0.5 }, names);
    expect(Object.fromEntries(scales)).toEqual({
      'transformer_blocks.0.attn2.to_q.weight': 4,
      'transformer_blocks.0.attn1.to_q.weight': 0.5,
      'encoder.block.0.layer.0.SelfAttention.q.weight': 2,
      'shared.weight': 2,
    });
    expect(lrScales(undefined, names).size).toBe(0);
    expect(() => lrScales({ 'attn3\\.': 4 }, names)).toThrow(/"attn3\\\\." matches no parameter/);
    // A typo in a run's config fails before any step, not silently at full lr.
    const dir = await mkdtemp(join(tmpdir(), 'train-cfg-'));
    const write = async (lrMultipliers: Record<string, number>) => {
      const path = join(dir, `${Object.keys(lrMultipliers)[0]!.length}-${Object.values(lrMultipliers)[0]}.json`);
      await writeFile(path, JSON.stringify({ ...cfg, train: { ...cfg.train, lrMultipliers } }));
      return path;
    };
    await expect(loadTrainConfig(await write({ '(': 2 }))).rejects.toThrow(/is not a regular expression/);
    await expect(loadTrainConfig(await write({ attn: -1 }))).rejects.toThrow(/must be a finite number >= 0/);
    // Digit-only captions are a share, and only for text models.
    const captions = join(dir, 'captions.json');
    await writeFile(captions, JSON.stringify({ ...cfg, train: { ...cfg.train, digitOnlyCaptions: 0.2 } }));
    await expect(loadTrainConfig(captions)).rejects.toThrow(/digitOnlyCaptions is for text models/);
    await writeFile(captions, JSON.stringify({ ...cfg, train: { ...cfg.train, digitOnlyCaptions: 1.5 } }));
    await expect(loadTrainConfig(captions)).rejects.toThrow(/digitOnlyCaptions must be in \[0, 1\]/);
    await expect(trainBase({ ...cfg, train: { ...cfg.train, lrMultipliers: { 'attn2\\.': 4 } } }, dir, { threads: 1 })).rejects.toThrow(/matches no parameter/);
  });

  it('exports the EMA weights as a model package that generates', async () => {
    const run = await mkdtemp(join(tmpdir(), 'train-x-'));
    await trainBase(cfg, run, { threads: 1 });
    const pkgDir = join(run, 'package');
    await exportBaseModel(cfg, run, pkgDir);
    const engine = await Engine.open(pkgDir, { threads: 1 });
    expect(engine.pkg.manifest.provenance).toMatchObject({ steps: 6, seed: 3 });
    const r = await engine.generate({ classLabel: 7, seed: 1 });
    expect(r.images[0]!.shape).toEqual([1, 32, 32]);
    expect(Number.isFinite((r.images[0]!.data as Float32Array)[100])).toBe(true);

    // The package holds exactly the EMA weights (up to fp16): same loss on a fixed batch.
    const model = createDenoiser('dit', cfg.model);
    const task = createTask(cfg, cfg.train.seed);
    const batch = trainingBatch(task, splitMnist().train, { batch: 4, conditionDropout: 0 }, new Rng(9), alphasCumprod(linearBetas()));
    const lossWith = async (weights: Weights, value: (name: string, t: HostTensor) => HostTensor) => {
      const withWeights: TrainTask = { ...task, build: (b, n) => model.build(b, weights, n, plainHooks(b)).out };
      const { graph, params } = buildTrainingStep(withWeights, 4);
      const feeds: Record<string, HostTensor> = { ...batch };
      for (const [v, t] of params) feeds[v.name] = value(v.name, t);
      const session = await Session.create(graph.graph, { threads: 1 });
      return ((await session.run(feeds, ['loss'])).loss!.data as Float32Array)[0]!;
    };
    const checkpoint = await readSafetensors(join(run, 'checkpoint.safetensors'));
    const a = await lossWith(new Weights(await readSafetensors(join(pkgDir, 'weights.safetensors'))), (_n, t) => t);
    // The export removes the EMA's share of the initial weights: ema = d^T w0 + (1 - d^T) x.
    const dT = cfg.train.emaDecay ** cfg.train.steps;
    const b = await lossWith(new Weights(initDitWeights(cfg.model, cfg.train.seed, 1, true)), (n, t) => {
      const w0 = t.data as Float32Array;
      return tensor('float32', t.shape, Float32Array.from(checkpoint.get(`ema/${n}`)!.data as Float32Array, (e, k) => (e - dT * w0[k]!) / (1 - dT)));
    });
    expect(Math.abs(a - b) / b).toBeLessThan(2e-3);
  });

  it('trains PixArt-alpha jointly with its text encoder and exports a package that generates from a prompt', async () => {
    const pixart: BaseTrainConfig = {
      id: 'micro-pixart', family: 'pixart',
      model: { sampleSize: 32, patchSize: 8, inChannels: 1, outChannels: 1, hidden: 24, depth: 1, heads: 2, mlpRatio: 2, captionChannels: 16, maxTokens: 12, interpolationScale: 1, useAdditionalConditions: false, normEps: 1e-6 },
      textEncoder: { vocabSize: 47, dModel: 16, dKv: 8, dFf: 32, numLayers: 1, numHeads: 2, relativeAttentionNumBuckets: 8, relativeAttentionMaxDistance: 16, layerNormEpsilon: 1e-6, feedForwardProj: 'gated-gelu', maxLength: 12 },
      train: { ...cfg.train, steps: 3 },
      sample: { sampler: 'dpmpp', steps: 3, cfg: 2 },
    };
    const run = await mkdtemp(join(tmpdir(), 'train-p-'));
    const state = await trainBase(pixart, run, { threads: 1 });
    expect(state.step).toBe(3);
    await exportBaseModel(pixart, run, join(run, 'package'));
    const engine = await Engine.open(join(run, 'package'), { threads: 1 });
    const r = await engine.generate({ prompt: 'a large 3 in the top right corner', seed: 2 });
    expect(r.images[0]!.shape).toEqual([1, 32, 32]);
    expect(r.report.notes).toMatchObject({ promptTruncated: false });
    expect(() => createTask({ ...pixart, textEncoder: { ...pixart.textEncoder, vocabSize: 50 } }, 1)).toThrow(/vocabSize must be 47/);
  });

  it('continues from an exported package (fresh optimizer) and exports again', async () => {
    const first = await mkdtemp(join(tmpdir(), 'train-i-'));
    await trainBase(cfg, first, { threads: 1 });
    await exportBaseModel(cfg, first, join(first, 'package'));
    const second = await mkdtemp(join(tmpdir(), 'train-j-'));
    await trainBase(cfg, second, { threads: 1, initFrom: join(first, 'package') });
    const curve = await lossCurve(second);
    expect(curve[0]).toBeLessThan((await lossCurve(first))[0]!); // starts from trained weights
    await exportBaseModel(cfg, second, join(second, 'package'));
    const engine = await Engine.open(join(second, 'package'), { threads: 1 });
    expect((await engine.generate({ classLabel: 4 })).images).toHaveLength(1);
    // The provenance chains the runs: the package it started from, by hash, with that run's record.
    const firstManifest = JSON.parse(await readFile(join(first, 'package', 'manifest.json'), 'utf8'));
    expect(engine.pkg.manifest.provenance).toMatchObject({
      steps: cfg.train.steps,
      initFrom: { package: join(first, 'package'), sha256: firstManifest.files['weights.safetensors'], provenance: { steps: cfg.train.steps } },
    });
  });

  it('a PixArt run starts from a DiT package of the same shape (transformer from the DiT, text path fresh); another family is refused', async () => {
    const ditRun = await mkdtemp(join(tmpdir(), 'train-d-'));
    await trainBase(cfg, ditRun, { threads: 1 });
    const ditPackage = join(ditRun, 'package');
    await exportBaseModel(cfg, ditRun, ditPackage);
    const m = cfg.model as DitConfig;
    const pixart: BaseTrainConfig = {
      id: 'micro-pixart', family: 'pixart',
      model: { sampleSize: m.inputSize, patchSize: m.patchSize, inChannels: 1, outChannels: 1, hidden: m.hidden, depth: m.depth, heads: m.heads, mlpRatio: m.mlpRatio, captionChannels: 16, maxTokens: 12, interpolationScale: 1, useAdditionalConditions: false, normEps: 1e-6 },
      textEncoder: { vocabSize: 47, dModel: 16, dKv: 8, dFf: 32, numLayers: 1, numHeads: 2, relativeAttentionNumBuckets: 8, relativeAttentionMaxDistance: 16, layerNormEpsilon: 1e-6, feedForwardProj: 'gated-gelu', maxLength: 12 },
      // Frozen (every lr multiplier 0), so the export shows the weights the run started from.
      train: { ...cfg.train, steps: 2, lrMultipliers: { '.': 0 } },
      sample: { sampler: 'dpmpp', steps: 3, cfg: 2 },
    };
    const run = await mkdtemp(join(tmpdir(), 'train-pd-'));
    await trainBase(pixart, run, { threads: 1, initFrom: ditPackage });
    await exportBaseModel(pixart, run, join(run, 'package'));
    const started = await readSafetensors(join(run, 'package', 'weights.safetensors'));
    const ditWeights = await readSafetensors(join(ditPackage, 'weights.safetensors'));
    for (const key of ['transformer_blocks.1.attn1.to_q.weight', 'transformer_blocks.0.ff.net.2.bias', 'pos_embed.proj.weight']) {
      expect(started.get(key)!.data).toEqual(ditWeights.get(key)!.data);
    }
    expect(started.get('proj_out.weight')!.data).toEqual(ditWeights.get('proj_out_2.weight')!.data);
    expect([...started.get('transformer_blocks.0.attn2.to_out.0.weight')!.data].every((v) => v === 0)).toBe(true);
    const engine = await Engine.open(join(run, 'package'), { threads: 1 });
    expect((await engine.generate({ prompt: 'a large 3 in the center' })).images).toHaveLength(1);
    expect(engine.pkg.manifest.provenance).toMatchObject({ initFrom: { package: ditPackage, provenance: { config: { family: 'dit' } } } });
    await expect(trainBase(cfg, await mkdtemp(join(tmpdir(), 'train-pe-')), { threads: 1, initFrom: join(run, 'package') })).rejects.toThrow(/is a pixart model; a dit run cannot start from it/);
  });

  it('exports into the package it started from, as often as needed, with the same weights and provenance', async () => {
    const first = await mkdtemp(join(tmpdir(), 'train-k-'));
    const pkg = join(first, 'package');
    await trainBase(cfg, first, { threads: 1 });
    await exportBaseModel(cfg, first, pkg);
    const started = JSON.parse(await readFile(join(pkg, 'manifest.json'), 'utf8'));
    const second = await mkdtemp(join(tmpdir(), 'train-l-'));
    await trainBase(cfg, second, { threads: 1, initFrom: pkg });
    // Export, evaluate, export again with the metrics: the second export must not take the
    // first one's weights for the run's starting point.
    await exportBaseModel(cfg, second, pkg);
    const once = JSON.parse(await readFile(join(pkg, 'manifest.json'), 'utf8'));
    const onceWeights = await readFile(join(pkg, 'weights.safetensors'));
    await exportBaseModel(cfg, second, pkg, { accuracy: 0.5 });
    const twice = JSON.parse(await readFile(join(pkg, 'manifest.json'), 'utf8'));
    expect(await readFile(join(pkg, 'weights.safetensors'))).toEqual(onceWeights);
    expect(twice.files['weights.safetensors']).toBe(once.files['weights.safetensors']);
    expect(twice.provenance).toMatchObject({ metrics: { accuracy: 0.5 }, initFrom: { package: pkg, sha256: started.files['weights.safetensors'], provenance: { steps: cfg.train.steps } } });
    expect(twice.provenance.initFrom.provenance.initFrom).toBeUndefined();
  });
});
