import { allocate, DTYPES, type DType, type TypedArray } from './dtype.js';

/** A tensor in host memory: dtype, static shape and a typed array in row-major order. */
export interface HostTensor {
  dtype: DType;
  shape: readonly number[];
  data: TypedArray;
}

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function tensor(dtype: DType, shape: readonly number[], data?: TypedArray | ArrayLike<number>): HostTensor {
  const n = numel(shape);
  let array: TypedArray;
  if (data === undefined) array = allocate(dtype, n);
  else if (ArrayBuffer.isView(data) && data.constructor === allocate(dtype, 0).constructor) array = data as TypedArray;
  else {
    array = allocate(dtype, n);
    const src = data as ArrayLike<number>;
    if (array instanceof BigInt64Array || array instanceof BigUint64Array) {
      for (let i = 0; i < src.length; i++) array[i] = BigInt(src[i]!);
    } else (array as Float64Array).set(src);
  }
  if (array.length !== n) throw new Error(`tensor of shape [${shape}] needs ${n} elements, got ${array.length}`);
  return { dtype, shape: [...shape], data: array };
}

export function bytesOf(t: HostTensor): Uint8Array {
  return new Uint8Array(t.data.buffer, t.data.byteOffset, numel(t.shape) * DTYPES[t.dtype].bytes);
}

/** Float data as plain numbers (float32/float64 only; convert halves first). */
export function toFloat64(t: HostTensor): Float64Array {
  if (t.dtype !== 'float32' && t.dtype !== 'float64') throw new Error(`toFloat64 needs float32/float64, got ${t.dtype}`);
  return Float64Array.from(t.data as Float32Array);
}

/** A copy of t[starts:ends] along `axes` (step 1). */
export function sliceTensor(t: HostTensor, starts: readonly number[], ends: readonly number[], axes: readonly number[]): HostTensor {
  const lo = t.shape.map(() => 0);
  const hi = [...t.shape];
  axes.forEach((a, i) => {
    lo[a] = starts[i]!;
    hi[a] = ends[i]!;
  });
  const shape = hi.map((h, i) => h - lo[i]!);
  const out = tensor(t.dtype, shape);
  const strides = t.shape.map((_, i) => t.shape.slice(i + 1).reduce((p, d) => p * d, 1));
  const src = t.data as Float32Array;
  const dst = out.data as Float32Array;
  const n = numel(shape);
  const index = new Array<number>(shape.length).fill(0);
  for (let k = 0; k < n; k++) {
    let offset = 0;
    for (let i = 0; i < shape.length; i++) offset += (index[i]! + lo[i]!) * strides[i]!;
    dst[k] = src[offset]!;
    for (let i = shape.length - 1; i >= 0 && ++index[i]! === shape[i]; i--) index[i] = 0;
  }
  return out;
}

/** Rows [from, to) of the leading axis, sharing the data (no copy). */
export function leadingRows(t: HostTensor, from: number, to: number): HostTensor {
  const [rows, ...rest] = t.shape;
  if (rows === undefined || from < 0 || to > rows || from > to) throw new Error(`rows [${from}, ${to}) of a tensor of shape [${t.shape}]`);
  const width = numel(rest);
  return { dtype: t.dtype, shape: [to - from, ...rest], data: t.data.subarray(from * width, to * width) as TypedArray };
}
