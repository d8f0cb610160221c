import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parsePolicy, type PolicyContext } from '../../src/cache/index.js';
import { ROUTER_FORMAT, type RouterArtifact } from '../../src/cache/router.js';
import { storeMask } from '../../src/cache/policy.js';
import { ditSlots } from '../../src/models/dit.js';
import { TINY_DIT } from '../helpers/dit-checkpoint.js';

const slots = ditSlots(TINY_DIT);
const ctx: PolicyContext = { steps: 4, sampler: 'ddim', slots, model: { id: 'tiny', sha256: 'a'.repeat(64) } };

function artifact(over: Partial<RouterArtifact> = {}): RouterArtifact {
  return {
    format: ROUTER_FORMAT, method: 'harmonica', model: { id: 'tiny', sha256: 'a'.repeat(64) }, sampler: 'ddim', steps: 4, cfgScale: 1.5,
    sublayers: slots.map((s) => s.name),
    logits: [[5, 5, 5, 5], [3, -3, -1, 0], [-5, -5, -5, -5], [1, -2.1, -2.3, 5]], tau: 0.1, ...over,
  };
}

async function writeRouter(a: RouterArtifact): Promise<string> {
  const path = join(await mkdtemp(join(tmpdir(), 'router-')), 'r.json');
  await writeFile(path, JSON.stringify(a));
  return path;
}

describe('cache policies', () => {
  it('none computes every slot', () => {
    const p = parsePolicy('none');
    p.start(ctx);
    expect(p.decide(3, {})).toEqual([true, true, true, true]);
  });

  it('fora:2 computes exactly on even steps and reuses everything on odd ones', () => {
    const p = parsePolicy('fora:2');
    p.start(ctx);
    expect([0, 1, 2, 3].map((i) => p.decide(i, {}))).toEqual([[true, true, true, true], [false, false, false, false], [true, true, true, true], [false, false, false, false]]);
    expect(() => parsePolicy('fora:0')).toThrow(/integer interval/);
    expect(() => parsePolicy('fora')).toThrow(/integer interval/);
  });

  it('router computes iff sigmoid(logit) > tau, first row always', async () => {
    const p = parsePolicy(`router:${await writeRouter(artifact())}`);
    p.start(ctx);
    expect(p.decide(0, {})).toEqual([true, true, true, true]);
    // sigmoid(-3) = 0.047, sigmoid(-1) = 0.27, sigmoid(0) = 0.5; tau 0.1
    expect(p.decide(1, {})).toEqual([true, false, true, true]);
    expect(p.decide(2, {})).toEqual([false, false, false, false]);
    // sigmoid(-2.1) = 0.109 > 0.1; sigmoid(-2.3) = 0.091 < 0.1
    expect(p.decide(3, {})).toEqual([true, true, false, true]);
  });

  it('router tau from the spec overrides the artifact', async () => {
    const p = parsePolicy(`router:${await writeRouter(artifact())}@0.5`);
    p.start(ctx);
    expect(p.decide(1, {})).toEqual([true, false, false, false]);
  });

  it('an LTC router computes everything where LTC resets its cache: sampling steps 0, 2, ... for an even T', async () => {
    const p = parsePolicy(`router:${await writeRouter(artifact({ method: 'ltc' }))}`);
    p.start(ctx);
    expect(p.decide(1, {})).toEqual([true, false, true, true]);
    expect(p.decide(2, {})).toEqual([true, true, true, true]);
    expect(p.decide(3, {})).toEqual([true, true, false, true]);
  });

  it('a router with a cache-age cap computes a slot whose cache would be too old', async () => {
    const reuseAll = artifact().logits.map(() => [-5, -5, -5, -5]);
    for (const [age, expected] of [[1, [true, false, true, false]], [2, [true, false, false, true]]] as const) {
      const p = parsePolicy(`router:${await writeRouter(artifact({ logits: reuseAll, maxCacheAge: age }))}`);
      p.start(ctx);
      expect([0, 1, 2, 3].map((i) => p.decide(i, {}).every(Boolean))).toEqual(expected);
    }
    await expect(async () => parsePolicy(`router:${await writeRouter(artifact({ maxCacheAge: 0 }))}`)).rejects.toThrow(/maxCacheAge must be an integer >= 1/);
  });

  it('a router for another model, step count or sublayer list is rejected clearly', async () => {
    const other = parsePolicy(`router:${await writeRouter(artifact({ model: { id: 'other', sha256: 'b'.repeat(64) } }))}`);
    expect(() => other.start(ctx)).toThrow(/trained for model other .* not tiny/);
    const steps = parsePolicy(`router:${await writeRouter(artifact({ steps: 3, logits: artifact().logits.slice(0, 3) }))}`);
    expect(() => steps.start(ctx)).toThrow(/trained for 3 steps, the request has 4/);
    const subs = parsePolicy(`router:${await writeRouter(artifact({ sublayers: ['a', 'b', 'c', 'd'] }))}`);
    expect(() => subs.start(ctx)).toThrow(/gates sublayers/);
  });

  it('unknown policies and unreadable routers give clear errors', () => {
    expect(() => parsePolicy("magic:3")).toThrow(/unknown cache policy "magic" \(known: none, .*fora.*router.*teacache/);
    expect(() => parsePolicy('router:/nonexistent.json')).toThrow(/cannot read router/);
    expect(() => parsePolicy('router:x.json@2')).toThrow(/tau must be in/);
  });

  it('storeMask keeps exactly the outputs that the next step reuses', () => {
    const T = true, F = false;
    expect(storeMask([[T, T], [F, T], [T, F], [F, F]])).toEqual([[T, F], [F, T], [T, F], [F, F]]);
    expect(storeMask([[T, T], [T, T]])).toEqual([[F, F], [F, F]]);
  });
});
