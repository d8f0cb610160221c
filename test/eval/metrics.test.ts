import { describe, expect, it } from 'vitest';
import { accuracy, frechetBootstrapHalfWidth, frechetDistance, frechetToReference, inceptionScore, meanAndCovariance, psnr, ssim } from '../../src/eval/metrics.js';
import { Rng } from '../../src/tensor/rng.js';

/** n rows of dim standard normals (row-major). */
function normals(n: number, dim: number, seed: number): Float64Array {
  return new Rng(seed).fillNormal(new Float64Array(n * dim));
}

/** Applies x -> A x + b to every row. */
function affine(x: Float64Array, dim: number, a: number[][], b: number[]): Float64Array {
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length / dim; i++) {
    for (let r = 0; r < dim; r++) {
      let s = b[r]!;
      for (let c = 0; c < dim; c++) s += a[r]![c]! * x[i * dim + c]!;
      out[i * dim + r] = s;
    }
  }
  return out;
}

/**
 * Features whose sample covariance is exactly diagonal: column j is a Walsh function (a
 * +-1 pattern, zero mean, orthogonal to the others) times std[j], plus mean[j].
 */
function walshFeatures(n: number, mean: number[], std: number[]): Float64Array {
  const dim = mean.length;
  const x = new Float64Array(n * dim);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < dim; j++) {
      const bits = (i & (j + 1)).toString(2).split('').filter((c) => c === '1').length;
      x[i * dim + j] = mean[j]! + std[j]! * (bits % 2 === 0 ? 1 : -1);
    }
  }
  return x;
}

describe('frechetDistance', () => {
  it('is ~0 for identical sets', () => {
    const a = normals(500, 16, 1);
    const { cov } = meanAndCovariance(a, 16);
    const d = frechetDistance(a, Float64Array.from(a), 16);
    expect(d).toBeGreaterThanOrEqual(0);
    expect(d / cov.trace()).toBeLessThan(1e-6);
  });

  it('equals |mu1 - mu2|^2 for a pure mean shift, and grows with it', () => {
    const dim = 8;
    const a = normals(400, dim, 2);
    const identity = Array.from({ length: dim }, (_, r) => Array.from({ length: dim }, (_, c) => (r === c ? 1 : 0)));
    const shift = Array.from({ length: dim }, (_, j) => 0.1 * (j + 1));
    const expected = shift.reduce((s, v) => s + v * v, 0);
    const d = frechetDistance(a, affine(a, dim, identity, shift), dim);
    expect(d).toBeCloseTo(expected, 6);
    const further = frechetDistance(a, affine(a, dim, identity, shift.map((v) => 2 * v)), dim);
    expect(further).toBeCloseTo(4 * expected, 6);
  });

  it('matches the closed form for diagonal covariances', () => {
    const n = 64;
    const [mu1, mu2] = [[0, 1, -2, 0.5], [0.5, 1, 1, -0.5]];
    const [s1, s2] = [[1, 2, 0.5, 3], [2, 2, 1.5, 0.25]];
    const d = frechetDistance(walshFeatures(n, mu1, s1), walshFeatures(n, mu2, s2), 4);
    // Sample variances are std^2 * n / (n - 1); for diagonal covariances the trace term is
    // sum (sigma1 - sigma2)^2 over the dimensions.
    const scale = n / (n - 1);
    const expected = mu1.reduce((s, m, j) => s + (m - mu2[j]!) ** 2 + scale * (s1[j]! - s2[j]!) ** 2, 0);
    expect(d).toBeCloseTo(expected, 9);
  });

  it('matches the 2x2 closed form for non-commuting covariances', () => {
    // For a 2x2 matrix M with non-negative eigenvalues, tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)).
    const a = affine(normals(300, 2, 3), 2, [[2, 0.5], [0.3, 1]], [1, -1]);
    const b = affine(normals(250, 2, 4), 2, [[0.5, -1], [1, 0.2]], [0, 2]);
    // Means and covariances computed independently of the code under test.
    const stats = (x: Float64Array) => {
      const n = x.length / 2;
      const mu = [0, 1].map((j) => x.filter((_, i) => i % 2 === j).reduce((s, v) => s + v, 0) / n);
      const c = (p: number, q: number) => x.reduce((s, _, i) => (i % 2 === 0 ? s + (x[i + p]! - mu[p]!) * (x[i + q]! - mu[q]!) : s), 0) / (n - 1);
      return { mu, s: [[c(0, 0), c(0, 1)], [c(1, 0), c(1, 1)]] };
    };
    const { mu: m1, s: a1 } = stats(a);
    const { mu: m2, s: b1 } = stats(b);
    const det = (m: number[][]) => m[0]![0]! * m[1]![1]! - m[0]![1]! * m[1]![0]!;
    const trace = (m: number[][]) => m[0]![0]! + m[1]![1]!;
    const traceProduct = a1[0]![0]! * b1[0]![0]! + a1[0]![1]! * b1[1]![0]! + a1[1]![0]! * b1[0]![1]! + a1[1]![1]! * b1[1]![1]!;
    const traceSqrt = Math.sqrt(traceProduct + 2 * Math.sqrt(det(a1) * det(b1)));
    const expected = (m1[0]! - m2[0]!) ** 2 + (m1[1]! - m2[1]!) ** 2 + trace(a1) + trace(b1) - 2 * traceSqrt;
    expect(frechetDistance(a, b, 2)).toBeCloseTo(expected, 9);
  });

  it('does not change under a rotation of both feature sets', () => {
    const dim = 3;
    const a = affine(normals(200, dim, 5), dim, [[1, 0, 0], [0, 2, 0], [0, 0, 0.5]], [0, 0, 0]);
    const b = affine(normals(200, dim, 6), dim, [[1.5, 0, 0], [0, 1, 0], [0, 0, 1]], [1, 0, 0]);
    const [c, s] = [Math.cos(0.7), Math.sin(0.7)];
    const rot = [[c, -s, 0], [s, c, 0], [0, 0, 1]];
    const zero = [0, 0, 0];
    expect(frechetDistance(affine(a, dim, rot, zero), affine(b, dim, rot, zero), dim)).toBeCloseTo(frechetDistance(a, b, dim), 8);
  });

  it('rejects features that are not whole rows', () => {
    expect(() => frechetDistance(new Float32Array(10), new Float32Array(9), 3)).toThrow(/rows of 3/);
  });
});

describe('frechetToReference and the bootstrap interval', () => {
  const dim = 12;
  const real = affine(normals(300, dim, 1), dim, Array.from({ length: dim }, (_, r) => Array.from({ length: dim }, (_, c) => (r === c ? 1 + r / 10 : 0.05))), new Array(dim).fill(0.2));
  it('equals frechetDistance with fewer rows than dimensions and with more', () => {
    const distance = frechetToReference(real, dim);
    for (const n of [5, 40]) {
      const a = normals(n, dim, n);
      expect(distance(a)).toBeCloseTo(frechetDistance(a, real, dim), 5);
    }
  });

  it('is 0 wide when every resample is the set itself, and shrinks with more samples', () => {
    let k = 0;
    expect(frechetBootstrapHalfWidth(normals(30, dim, 3), real, dim, (n) => k++ % n, 20)).toBe(0);
    const rng = new Rng(9);
    const wide = frechetBootstrapHalfWidth(normals(30, dim, 3), real, dim, (n) => rng.int(n), 60);
    const narrow = frechetBootstrapHalfWidth(normals(600, dim, 3), real, dim, (n) => rng.int(n), 60);
    expect(wide).toBeGreaterThan(0);
    expect(narrow).toBeLessThan(wide);
  });
});

describe('inceptionScore', () => {
  it('is the number of classes for confident, balanced predictions', () => {
    const n = 100;
    const probs = new Float32Array(n * 10);
    for (let i = 0; i < n; i++) probs[i * 10 + (i % 10)] = 1;
    expect(inceptionScore(probs, n)).toBeCloseTo(10, 6);
  });

  it('is 1 when every sample gets the same prediction', () => {
    const row = [0.3, 0.5, 0.2, 0, 0, 0, 0, 0, 0, 0];
    const probs = Float32Array.from({ length: 50 * 10 }, (_, i) => row[i % 10]!);
    expect(inceptionScore(probs, 50)).toBeCloseTo(1, 6);
  });

  it('is 2 for confident predictions split over two classes', () => {
    const probs = new Float32Array(40 * 10);
    for (let i = 0; i < 40; i++) probs[i * 10 + (i % 2) * 7] = 1;
    expect(inceptionScore(probs, 40)).toBeCloseTo(2, 6);
  });
});

describe('accuracy', () => {
  it('counts matches', () => {
    expect(accuracy([1, 2, 3, 4], [1, 2, 3, 5])).toBe(0.75);
    expect(accuracy([0], [0])).toBe(1);
    expect(() => accuracy([1, 2], [1])).toThrow();
  });
});

describe('psnr and ssim', () => {
  const side = 32;
  const images = 3;
  // Smooth images in [-1, 1], so SSIM has structure to compare.
  const clean = Float32Array.from({ length: images * side * side }, (_, i) => {
    const [img, y, x] = [Math.floor(i / (side * side)), Math.floor(i / side) % side, i % side];
    return Math.sin((x + img) / 4) * Math.cos(y / 5);
  });
  const noisy = (std: number, seed: number) => {
    const rng = new Rng(seed);
    return clean.map((v) => Math.max(-1, Math.min(1, v + std * rng.normal())));
  };

  it('identical images: PSNR Infinity, SSIM 1', () => {
    expect(psnr(clean, Float32Array.from(clean))).toBe(Infinity);
    expect(ssim(clean, Float32Array.from(clean), side)).toBeCloseTo(1, 12);
  });

  it('PSNR follows the MSE for data range 2', () => {
    const a = new Float32Array(100);
    const b = new Float32Array(100).fill(0.1);
    expect(psnr(a, b)).toBeCloseTo(10 * Math.log10(4 / 0.01), 4);
    expect(psnr(a, b, 1)).toBeCloseTo(10 * Math.log10(1 / 0.01), 4);
  });

  it('more noise gives lower PSNR and SSIM', () => {
    const light = noisy(0.05, 1);
    const heavy = noisy(0.3, 2);
    expect(psnr(clean, light)).toBeGreaterThan(psnr(clean, heavy));
    const sLight = ssim(clean, light, side);
    const sHeavy = ssim(clean, heavy, side);
    expect(sLight).toBeLessThan(1);
    expect(sHeavy).toBeLessThan(sLight);
    expect(sHeavy).toBeGreaterThan(-1);
  });

  it('SSIM is symmetric and rejects images smaller than its window', () => {
    const other = noisy(0.2, 3);
    expect(ssim(clean, other, side)).toBeCloseTo(ssim(other, clean, side), 12);
    expect(() => ssim(new Float32Array(64), new Float32Array(64), 8)).toThrow(/at least 11/);
  });
});
