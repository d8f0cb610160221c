import { describe, it, expect } from 'vitest';
import {
  alphasCumprod, DIT_BETA_END, DIT_BETA_START, DIT_NUM_TRAIN_STEPS, linearBetas, pyRound, spacedTimesteps,
} from '../../src/diffusion/schedule.js';

describe('linearBetas / alphasCumprod', () => {
  const betas = linearBetas();
  const ab = alphasCumprod(betas);

  it('uses the DiT defaults', () => {
    expect([DIT_NUM_TRAIN_STEPS, DIT_BETA_START, DIT_BETA_END]).toEqual([1000, 1e-4, 0.02]);
    expect(betas.length).toBe(1000);
    expect(betas[0]).toBe(1e-4);
    expect(betas[999]).toBe(0.02);
  });

  it('matches np.linspace(1e-4, 0.02, 1000) and np.cumprod(1 - betas) bit for bit', () => {
    // Pinned from numpy 2.4 (float64 reprs); all 2000 values were also compared byte for byte once.
    const pinned: [number, number, number][] = [
      [1, 0.00011991991991991993, 0.9997800920720721],
      [2, 0.00013983983983983984, 0.9996402829841216],
      [333, 0.006733333333333333, 0.31862485496644566],
      [500, 0.010059959959959959, 0.07779665836502389],
      [998, 0.01998008008008008, 4.118193638138445e-05],
      [999, 0.02, 4.035829765375676e-05],
    ];
    for (const [i, b, a] of pinned) {
      expect(betas[i]).toBe(b);
      expect(ab[i]).toBe(a);
    }
  });

  it('alphas_cumprod at t=0 and t=999 agree with closed forms', () => {
    expect(ab[0]).toBe(1 - 1e-4); // 0.9999
    // prod_i (1 - beta_i) with beta_i = 1e-4 + i * (0.02 - 1e-4) / 999, via exp(sum log1p(-beta_i)).
    let logSum = 0;
    for (let i = 0; i < 1000; i++) logSum += Math.log1p(-(1e-4 + (i * (0.02 - 1e-4)) / 999));
    expect(Math.abs(ab[999]! / Math.exp(logSum) - 1)).toBeLessThan(1e-12);
    expect(ab[999]).toBeCloseTo(4.0358e-5, 8);
    // Strictly decreasing.
    for (let i = 1; i < 1000; i++) expect(ab[i]!).toBeLessThan(ab[i - 1]!);
  });

  it('other lengths and validation', () => {
    expect(Array.from(linearBetas(1))).toEqual([1e-4]);
    expect(Array.from(linearBetas(3, 0.1, 0.3))).toEqual([0.1, 0.1 + 0.09999999999999999, 0.3]);
    expect(() => linearBetas(0)).toThrow(/positive integer/);
    expect(() => linearBetas(10, 0.5, 0.1)).toThrow(/betaStart <= betaEnd/);
  });
});

describe('pyRound', () => {
  it('rounds halves to even like Python 3 round()', () => {
    expect([0.5, 1.5, 2.5, 3.5, 166.5, 499.5, 832.5].map(pyRound)).toEqual([0, 2, 2, 4, 166, 500, 832]);
    expect([0.49999999999999994, 1.2, 1.7, 0, 999].map(pyRound)).toEqual([0, 1, 2, 0, 999]);
  });
});

describe('spacedTimesteps (DiT space_timesteps(1000, str(T)))', () => {
  it('T=10', () => {
    expect(spacedTimesteps(10)).toEqual([999, 888, 777, 666, 555, 444, 333, 222, 111, 0]);
  });

  it('T=20', () => {
    expect(spacedTimesteps(20)).toEqual([
      999, 946, 894, 841, 789, 736, 684, 631, 578, 526, 473, 421, 368, 315, 263, 210, 158, 105, 53, 0,
    ]);
  });

  it('T=50', () => {
    expect(spacedTimesteps(50)).toEqual([
      999, 979, 958, 938, 917, 897, 877, 856, 836, 816, 795, 775, 754, 734, 714, 693, 673, 652, 632, 612,
      591, 571, 550, 530, 510, 489, 469, 449, 428, 408, 387, 367, 347, 326, 306, 285, 265, 245, 224, 204,
      183, 163, 143, 122, 102, 82, 61, 41, 20, 0,
    ]);
  });

  it('T=250 (from the Python reference)', () => {
    expect(spacedTimesteps(250)).toEqual([
      999, 995, 991, 987, 983, 979, 975, 971, 967, 963, 959, 955, 951, 947, 943, 939, 935, 931, 927, 923,
      919, 915, 911, 907, 903, 899, 895, 891, 887, 883, 879, 875, 871, 867, 863, 859, 855, 851, 847, 843,
      839, 835, 830, 826, 822, 818, 814, 810, 806, 802, 798, 794, 790, 786, 782, 778, 774, 770, 766, 762,
      758, 754, 750, 746, 742, 738, 734, 730, 726, 722, 718, 714, 710, 706, 702, 698, 694, 690, 686, 682,
      678, 674, 670, 666, 662, 658, 654, 650, 646, 642, 638, 634, 630, 626, 622, 618, 614, 610, 606, 602,
      598, 594, 590, 586, 582, 578, 574, 570, 566, 562, 558, 554, 550, 546, 542, 538, 534, 530, 526, 522,
      518, 514, 510, 506, 502, 497, 493, 489, 485, 481, 477, 473, 469, 465, 461, 457, 453, 449, 445, 441,
      437, 433, 429, 425, 421, 417, 413, 409, 405, 401, 397, 393, 389, 385, 381, 377, 373, 369, 365, 361,
      357, 353, 349, 345, 341, 337, 333, 329, 325, 321, 317, 313, 309, 305, 301, 297, 293, 289, 285, 281,
      277, 273, 269, 265, 261, 257, 253, 249, 245, 241, 237, 233, 229, 225, 221, 217, 213, 209, 205, 201,
      197, 193, 189, 185, 181, 177, 173, 169, 164, 160, 156, 152, 148, 144, 140, 136, 132, 128, 124, 120,
      116, 112, 108, 104, 100, 96, 92, 88, 84, 80, 76, 72, 68, 64, 60, 56, 52, 48, 44, 40,
      36, 32, 28, 24, 20, 16, 12, 8, 4, 0,
    ]);
  });

  it('exact .5 cases round half to even (T=19: stride 55.5 hits 55.5, 166.5, ..., 943.5)', () => {
    // Half-up rounding would give 833, 611, 389, 167 instead of 832, 610, 388, 166 (the other halves agree).
    expect(spacedTimesteps(19)).toEqual([999, 944, 888, 832, 777, 722, 666, 610, 555, 500, 444, 388, 333, 278, 222, 166, 111, 56, 0]);
    expect(spacedTimesteps(7)).toEqual([999, 832, 666, 500, 333, 166, 0]);
    expect(spacedTimesteps(3)).toEqual([999, 500, 0]);
    expect(spacedTimesteps(5)).toEqual([999, 749, 500, 250, 0]);
  });

  it('follows the reference float accumulation where it departs from round(i*999/(T-1))', () => {
    // T=21: 10 * 999/20 = 499.5 exactly (-> 500), but the reference's running sum reaches 499.4999... -> 499.
    expect(spacedTimesteps(21)).toEqual([999, 949, 899, 849, 799, 749, 699, 649, 599, 549, 499, 450, 400, 350, 300, 250, 200, 150, 100, 50, 0]);
    // T=43: 833 and 499 where the closed form would give 832 and 500.
    expect(spacedTimesteps(43)).toEqual([
      999, 975, 951, 928, 904, 880, 856, 833, 809, 785, 761, 737, 714, 690, 666, 642, 618, 595, 571, 547, 523, 499,
      476, 452, 428, 404, 381, 357, 333, 309, 285, 262, 238, 214, 190, 166, 143, 119, 95, 71, 48, 24, 0,
    ]);
    expect(spacedTimesteps(14)).toEqual([999, 922, 845, 768, 692, 615, 538, 461, 384, 307, 231, 154, 77, 0]);
  });

  it('agrees with the Python reference for every T in 1..1000 (checksum)', () => {
    // sum over T of sum_i t_i * (i + 1) * T, computed with the reference space_timesteps (and [999] for T=1).
    let chk = 0;
    for (let T = 1; T <= 1000; T++) spacedTimesteps(T).forEach((t, i) => { chk += t * (i + 1) * T; });
    expect(chk).toBe(41763661631205);
    expect(spacedTimesteps(1000)).toEqual(Array.from({ length: 1000 }, (_, i) => 999 - i));
  });

  it('steps=1 gives [numTrainSteps - 1]; validates steps', () => {
    expect(spacedTimesteps(1)).toEqual([999]);
    expect(spacedTimesteps(2)).toEqual([999, 0]);
    expect(spacedTimesteps(4, 10)).toEqual([9, 6, 3, 0]);
    expect(() => spacedTimesteps(0)).toThrow(/steps must be an integer in \[1, 1000\]/);
    expect(() => spacedTimesteps(1001)).toThrow(/\[1, 1000\]/);
    expect(() => spacedTimesteps(2.5)).toThrow(/integer/);
    expect(() => spacedTimesteps(NaN)).toThrow(/integer/);
  });
});
