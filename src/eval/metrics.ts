/**
 * Sample-quality metrics of the evaluation suite: Fréchet distance between feature sets (FID
 * with our MNIST classifier's features), Inception Score (with its class probabilities),
 * accuracy, and PSNR / SSIM between two sets of images in [-1, 1].
 *
 * The matrix square root comes from `ml-matrix` (npm, EigenvalueDecomposition of symmetric
 * matrices); everything else is plain loops in float64.
 */
import { EigenvalueDecomposition, Matrix } from 'ml-matrix';

type Floats = Float32Array | Float64Array;

/** Rows of `features` ([n, dim], row-major), checked. */
function rowCount(features: Floats, dim: number, what: string): number {
  if (!Number.isInteger(dim) || dim < 1) throw new Error(`${what}: dim must be a positive integer, got ${dim}`);
  if (features.length % dim !== 0) throw new Error(`${what}: ${features.length} values are not rows of ${dim}`);
  const n = features.length / dim;
  if (n < 2) throw new Error(`${what}: need at least 2 feature rows for a covariance, got ${n}`);
  return n;
}

/** The mean of n feature rows of `dim` values. */
function columnMeans(features: Floats, n: number, dim: number): Float64Array {
  const mean = new Float64Array(dim);
  for (let i = 0; i < n; i++) for (let j = 0; j < dim; j++) mean[j]! += features[i * dim + j]!;
  for (let j = 0; j < dim; j++) mean[j]! /= n;
  return mean;
}

/** Mean and unbiased covariance (divided by n - 1, as numpy.cov and pytorch-fid do). */
export function meanAndCovariance(features: Floats, dim: number): { mean: Float64Array; cov: Matrix } {
  const n = rowCount(features, dim, 'meanAndCovariance');
  const mean = columnMeans(features, n, dim);
  // Accumulate the upper triangle of sum (x - mu)(x - mu)^T, then mirror it.
  const acc = new Float64Array(dim * dim);
  const centred = new Float64Array(dim);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < dim; j++) centred[j] = features[i * dim + j]! - mean[j]!;
    for (let j = 0; j < dim; j++) {
      const cj = centred[j]!;
      if (cj === 0) continue;
      for (let k = j; k < dim; k++) acc[j * dim + k]! += cj * centred[k]!;
    }
  }
  const cov = new Matrix(dim, dim);
  for (let j = 0; j < dim; j++) {
    for (let k = j; k < dim; k++) {
      const v = acc[j * dim + k]! / (n - 1);
      cov.set(j, k, v);
      cov.set(k, j, v);
    }
  }
  return { mean, cov };
}

/** Eigenvalues and eigenvectors of a symmetric matrix (symmetrised first against round-off). */
function symmetricEigen(m: Matrix): { values: number[]; vectors: Matrix } {
  const sym = m.clone().add(m.transpose()).mul(0.5);
  const evd = new EigenvalueDecomposition(sym, { assumeSymmetric: true });
  return { values: evd.realEigenvalues, vectors: evd.eigenvectorMatrix };
}

/** Square root of a symmetric positive semi-definite matrix; round-off negatives clamp to 0. */
function sqrtPsd(m: Matrix): Matrix {
  const { values, vectors } = symmetricEigen(m);
  const scaled = vectors.clone();
  for (let j = 0; j < values.length; j++) {
    const s = Math.sqrt(Math.max(values[j]!, 0));
    for (let i = 0; i < scaled.rows; i++) scaled.set(i, j, scaled.get(i, j) * s);
  }
  return scaled.mmul(vectors.transpose());
}

/**
 * Fréchet distance between Gaussians fitted to two feature sets ([n, dim] row-major each):
 * |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)).
 *
 * tr((S1 S2)^(1/2)) is computed as tr((S1^(1/2) S2 S1^(1/2))^(1/2)): the two matrices are
 * similar, and the second is symmetric PSD, so a symmetric eigendecomposition gives its
 * square root stably (pytorch-fid's scipy.linalg.sqrtm of the non-symmetric product can go
 * complex from round-off instead).
 */
export function frechetDistance(featuresA: Floats, featuresB: Floats, dim: number): number {
  const a = meanAndCovariance(featuresA, dim);
  const b = meanAndCovariance(featuresB, dim);
  let meanTerm = 0;
  for (let j = 0; j < dim; j++) meanTerm += (a.mean[j]! - b.mean[j]!) ** 2;
  const rootA = sqrtPsd(a.cov);
  const { values } = symmetricEigen(rootA.mmul(b.cov).mmul(rootA));
  const traceSqrt = values.reduce((s, v) => s + Math.sqrt(Math.max(v, 0)), 0);
  const distance = meanTerm + a.cov.trace() + b.cov.trace() - 2 * traceSqrt;
  // The exact value is >= 0; round-off can leave a tiny negative for identical sets.
  return Math.max(distance, 0);
}

/** Resamples drawn for a bootstrap interval of the Fréchet distance. */
export const FID_BOOTSTRAP_RESAMPLES = 50;

/**
 * Half-width of the 95% bootstrap interval of frechetDistance(A, B): A's rows resampled with
 * replacement (B, the fixed real set, is kept), half the distance between the 2.5% and 97.5%
 * quantiles. Says how far apart two FID-style values must be to tell two methods apart at n.
 */
export function frechetBootstrapHalfWidth(featuresA: Floats, featuresB: Floats, dim: number, draw: (n: number) => number, resamples = FID_BOOTSTRAP_RESAMPLES): number {
  const n = rowCount(featuresA, dim, 'frechetBootstrapHalfWidth');
  const distance = frechetToReference(featuresB, dim);
  const sample = new Float64Array(n * dim);
  const values: number[] = [];
  for (let r = 0; r < resamples; r++) {
    for (let i = 0; i < n; i++) {
      const k = draw(n);
      for (let j = 0; j < dim; j++) sample[i * dim + j] = featuresA[k * dim + j]!;
    }
    values.push(distance(sample));
  }
  values.sort((x, y) => x - y);
  const q = (p: number) => values[Math.min(values.length - 1, Math.max(0, Math.round(p * (values.length - 1))))]!;
  return (q(0.975) - q(0.025)) / 2;
}

/**
 * frechetDistance(A, reference) for many A against one reference set, with the reference's
 * statistics and the square root of its covariance R computed once. tr((R S_A R)^(1/2)) comes
 * from the eigenvalues of the smaller of (X R)^T (X R) [dim x dim] and (X R)(X R)^T [n x n],
 * X the centred rows of A over sqrt(n - 1): both have the same nonzero eigenvalues.
 */
export function frechetToReference(reference: Floats, dim: number): (features: Floats) => number {
  const ref = meanAndCovariance(reference, dim);
  const root = sqrtPsd(ref.cov);
  const rootRows = Float64Array.from(root.to1DArray());
  const refTrace = ref.cov.trace();
  return (features) => {
    const n = rowCount(features, dim, 'frechetToReference');
    const mean = columnMeans(features, n, dim);
    // Plain loops: ml-matrix's element-wise mmul is ~10x slower at these sizes.
    const xr = new Float64Array(n * dim);
    const centred = new Float64Array(dim);
    let trace = 0;
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < dim; j++) {
        centred[j] = (features[i * dim + j]! - mean[j]!) / Math.sqrt(n - 1);
        trace += centred[j]! ** 2;
      }
      for (let k = 0; k < dim; k++) {
        let acc = 0;
        for (let j = 0; j < dim; j++) acc += centred[j]! * rootRows[j * dim + k]!;
        xr[i * dim + k] = acc;
      }
    }
    const size = Math.min(n, dim);
    const small = new Matrix(size, size);
    for (let a = 0; a < size; a++) {
      for (let b = a; b < size; b++) {
        let acc = 0;
        if (n < dim) for (let k = 0; k < dim; k++) acc += xr[a * dim + k]! * xr[b * dim + k]!;
        else for (let i = 0; i < n; i++) acc += xr[i * dim + a]! * xr[i * dim + b]!;
        small.set(a, b, acc);
        small.set(b, a, acc);
      }
    }
    const traceSqrt = symmetricEigen(small).values.reduce((s, v) => s + Math.sqrt(Math.max(v, 0)), 0);
    let meanTerm = 0;
    for (let j = 0; j < dim; j++) meanTerm += (mean[j]! - ref.mean[j]!) ** 2;
    return Math.max(meanTerm + trace + refTrace - 2 * traceSqrt, 0);
  };
}

/**
 * Inception Score (Salimans et al., 2016) with `classes` class probabilities per sample
 * ([n, classes] row-major): exp(mean_x KL(p(y|x) || p(y))), p(y) the mean prediction.
 * 1 when every sample gets the same prediction; `classes` for confident, balanced ones.
 */
export function inceptionScore(probs: Floats, n: number, classes = 10): number {
  if (probs.length !== n * classes) throw new Error(`inceptionScore: expected ${n} x ${classes} probabilities, got ${probs.length}`);
  if (n < 1) throw new Error('inceptionScore: no samples');
  const marginal = new Float64Array(classes);
  for (let i = 0; i < n; i++) for (let c = 0; c < classes; c++) marginal[c]! += probs[i * classes + c]! / n;
  let kl = 0;
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < classes; c++) {
      const p = probs[i * classes + c]!;
      if (p > 0) kl += p * (Math.log(p) - Math.log(marginal[c]!)); // 0 log 0 = 0
    }
  }
  return Math.exp(kl / n);
}

/** Fraction of `labels` equal to `targets`. */
export function accuracy(labels: readonly number[], targets: readonly number[]): number {
  if (labels.length !== targets.length) throw new Error(`accuracy: ${labels.length} labels vs ${targets.length} targets`);
  if (labels.length === 0) throw new Error('accuracy: no labels');
  return labels.reduce((hits, label, i) => hits + (label === targets[i] ? 1 : 0), 0) / labels.length;
}

function checkSameLength(a: Floats, b: Floats, what: string): void {
  if (a.length !== b.length) throw new Error(`${what}: ${a.length} vs ${b.length} values`);
  if (a.length === 0) throw new Error(`${what}: no values`);
}

/**
 * Peak signal-to-noise ratio in dB over all values of `a` and `b` (one MSE over the whole
 * set, so one identical image does not make the mean infinite). `range` is the data range:
 * 2 for images in [-1, 1]. Identical inputs give Infinity.
 */
export function psnr(a: Floats, b: Floats, range = 2): number {
  checkSameLength(a, b, 'psnr');
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += (a[i]! - b[i]!) ** 2;
  const mse = sum / a.length;
  return mse === 0 ? Infinity : 10 * Math.log10((range * range) / mse);
}

/** SSIM's window: an 11x11 Gaussian with sigma 1.5, as in Wang et al. (2004). */
export const SSIM_WINDOW = 11;
export const SSIM_SIGMA = 1.5;
const K1 = 0.01;
const K2 = 0.03;

function gaussianKernel(size: number, sigma: number): Float64Array {
  const k = new Float64Array(size);
  const centre = (size - 1) / 2;
  for (let i = 0; i < size; i++) k[i] = Math.exp(-((i - centre) ** 2) / (2 * sigma * sigma));
  const total = k.reduce((s, v) => s + v, 0);
  return k.map((v) => v / total);
}

/** 'Valid' separable filtering of a side x side plane (output (side - w + 1)^2). */
function filterValid(plane: Float64Array, side: number, kernel: Float64Array): Float64Array {
  const w = kernel.length;
  const out = side - w + 1;
  const rows = new Float64Array(side * out);
  for (let y = 0; y < side; y++) {
    for (let x = 0; x < out; x++) {
      let s = 0;
      for (let k = 0; k < w; k++) s += kernel[k]! * plane[y * side + x + k]!;
      rows[y * out + x] = s;
    }
  }
  const result = new Float64Array(out * out);
  for (let y = 0; y < out; y++) {
    for (let x = 0; x < out; x++) {
      let s = 0;
      for (let k = 0; k < w; k++) s += kernel[k]! * rows[(y + k) * out + x]!;
      result[y * out + x] = s;
    }
  }
  return result;
}

/**
 * Structural similarity (Wang et al., 2004): Gaussian 11x11 window (sigma 1.5), K1 = 0.01,
 * K2 = 0.03, constants for data range `range` (2 for [-1, 1]), 'valid' windows only. `a` and
 * `b` hold planes of side x side (images, or channels of images); the result is the mean
 * SSIM map value, averaged over planes. Identical inputs give exactly 1.
 */
export function ssim(a: Floats, b: Floats, side: number, range = 2): number {
  checkSameLength(a, b, 'ssim');
  const size = side * side;
  if (side < SSIM_WINDOW) throw new Error(`ssim: images must be at least ${SSIM_WINDOW} pixels wide, got ${side}`);
  if (a.length % size !== 0) throw new Error(`ssim: ${a.length} values are not planes of ${side}x${side}`);
  const kernel = gaussianKernel(SSIM_WINDOW, SSIM_SIGMA);
  const c1 = (K1 * range) ** 2;
  const c2 = (K2 * range) ** 2;
  const planes = a.length / size;
  let total = 0;
  for (let p = 0; p < planes; p++) {
    const x = Float64Array.from(a.subarray(p * size, (p + 1) * size));
    const y = Float64Array.from(b.subarray(p * size, (p + 1) * size));
    const muX = filterValid(x, side, kernel);
    const muY = filterValid(y, side, kernel);
    const xx = filterValid(x.map((v) => v * v), side, kernel);
    const yy = filterValid(y.map((v) => v * v), side, kernel);
    const xy = filterValid(x.map((v, i) => v * y[i]!), side, kernel);
    let sum = 0;
    for (let i = 0; i < muX.length; i++) {
      const mx = muX[i]!;
      const my = muY[i]!;
      const varX = xx[i]! - mx * mx;
      const varY = yy[i]! - my * my;
      const cov = xy[i]! - mx * my;
      sum += ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (varX + varY + c2));
    }
    total += sum / muX.length;
  }
  return total / planes;
}
