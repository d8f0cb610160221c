import { describe, expect, it } from 'vitest';
import { dominance, type FrontierPoint } from '../../src/bench/frontier.js';

const point = (method: FrontierPoint['method'], setting: string, measuredSpeedup: number, psnr: number | null, accuracy: number): FrontierPoint => ({ method, setting, measuredSpeedup, psnr, accuracy });

describe('frontier dominance', () => {
  it('a HarmoniCa row dominates a baseline point at >= 0.97x its speed with PSNR >= and accuracy >= its - 0.01', () => {
    const rows = [
      point('none', 'T=20', 1, null, 0.99),
      point('fewer-steps', 'T=14', 1.4, 35, 0.985),
      point('fora', 'N=2', 1.7, 30, 0.98),
      point('fewer-steps', 'T=5', 3.5, 20, 0.9), // outside 1.3x..3x: not judged
      point('fewer-steps', 'T=19', 1.05, 45, 0.99), // outside too
      point('harmonica', 'a', 1.37, 36, 0.976), // 1.37 >= 0.97 * 1.4 = 1.358; accuracy 0.976 >= 0.975
      point('harmonica', 'b', 1.8, 29, 0.99),
    ];
    const d = dominance(rows);
    expect(d.map((r) => r.setting)).toEqual(['T=14', 'N=2']);
    expect(d[0]).toMatchObject({ dominatedBy: 'a', psnrGap: 1 });
    // 'b' is fast enough for FORA but 1 dB worse; 'a' is not fast enough (1.37 < 1.649).
    expect(d[1]).toMatchObject({ dominatedBy: null, psnrGap: -1 });
  });

  it('accuracy more than 0.01 lower, or no router that fast, is not a win', () => {
    const d = dominance([point('fora', 'N=2', 2, 30, 0.98), point('harmonica', 'slow', 1.5, 40, 1), point('harmonica', 'bad', 2.1, 31, 0.969)]);
    expect(d[0]).toMatchObject({ dominatedBy: null, psnrGap: 1 });
    expect(dominance([point('fora', 'N=3', 2.5, 28, 0.98)])[0]).toMatchObject({ dominatedBy: null, psnrGap: null });
  });
});
