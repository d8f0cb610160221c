import { describe, expect, it } from 'vitest';
import { benchRuntime } from '../../src/bench/runtime.js';
import { TINY_DIT } from '../helpers/dit-checkpoint.js';

describe('bench runtime', () => {
  it('reports none first, then FORA(2) and FORA(3), with MAC and measured speedups', async () => {
    const r = await benchRuntime({ runs: 1, steps: 6, config: TINY_DIT });
    expect(r.rows.map((row) => row.policy)).toEqual(['none', 'fora:2', 'fora:3']);
    expect(r.rows[0]).toMatchObject({ macSpeedup: 1, measuredSpeedup: 1 });
    expect(r.rows[1]!.macSpeedup).toBeGreaterThan(1.8);
    expect(r.rows[2]!.macSpeedup).toBeGreaterThan(r.rows[1]!.macSpeedup);
    expect(typeof r.executorOverhead).toBe('number');
    expect(r.plainStepMs).toBeGreaterThan(0);
  });
});
