/**
 * Element types shared by host tensors, safetensors files and ONNX graphs.
 * One table so that byte sizes, ONNX enum codes and safetensors names never drift apart.
 */
export type DType =
  | 'float64' | 'float32' | 'float16' | 'bfloat16'
  | 'int64' | 'int32' | 'int16' | 'int8'
  | 'uint64' | 'uint32' | 'uint16' | 'uint8'
  | 'bool' | 'float8_e4m3fn' | 'float8_e5m2';

export interface DTypeInfo {
  bytes: number;
  /** onnx.TensorProto.DataType enum value. */
  onnx: number;
  /** dtype string in a safetensors header. */
  safetensors: string;
  float: boolean;
}

export const DTYPES: Record<DType, DTypeInfo> = {
  float64: { bytes: 8, onnx: 11, safetensors: 'F64', float: true },
  float32: { bytes: 4, onnx: 1, safetensors: 'F32', float: true },
  float16: { bytes: 2, onnx: 10, safetensors: 'F16', float: true },
  bfloat16: { bytes: 2, onnx: 16, safetensors: 'BF16', float: true },
  float8_e4m3fn: { bytes: 1, onnx: 17, safetensors: 'F8_E4M3', float: true },
  float8_e5m2: { bytes: 1, onnx: 19, safetensors: 'F8_E5M2', float: true },
  int64: { bytes: 8, onnx: 7, safetensors: 'I64', float: false },
  int32: { bytes: 4, onnx: 6, safetensors: 'I32', float: false },
  int16: { bytes: 2, onnx: 5, safetensors: 'I16', float: false },
  int8: { bytes: 1, onnx: 3, safetensors: 'I8', float: false },
  uint64: { bytes: 8, onnx: 13, safetensors: 'U64', float: false },
  uint32: { bytes: 4, onnx: 12, safetensors: 'U32', float: false },
  uint16: { bytes: 2, onnx: 4, safetensors: 'U16', float: false },
  uint8: { bytes: 1, onnx: 2, safetensors: 'U8', float: false },
  bool: { bytes: 1, onnx: 9, safetensors: 'BOOL', float: false },
};

export function dtypeFromOnnx(code: number): DType {
  for (const [name, info] of Object.entries(DTYPES)) if (info.onnx === code) return name as DType;
  throw new Error(`unknown ONNX element type ${code}`);
}

/** Typed array that holds each dtype on the host. fp16/bf16/fp8 keep their raw bits. */
export type TypedArray =
  | Float64Array | Float32Array | BigInt64Array | BigUint64Array
  | Int32Array | Int16Array | Int8Array | Uint32Array | Uint16Array | Uint8Array;

export function allocate(dtype: DType, length: number): TypedArray {
  switch (dtype) {
    case 'float64': return new Float64Array(length);
    case 'float32': return new Float32Array(length);
    case 'float16': case 'bfloat16': case 'uint16': return new Uint16Array(length);
    case 'int64': return new BigInt64Array(length);
    case 'uint64': return new BigUint64Array(length);
    case 'int32': return new Int32Array(length);
    case 'uint32': return new Uint32Array(length);
    case 'int16': return new Int16Array(length);
    case 'int8': return new Int8Array(length);
    case 'uint8': case 'bool': case 'float8_e4m3fn': case 'float8_e5m2': return new Uint8Array(length);
  }
}

/** View bytes as the dtype's typed array (copies when the offset is misaligned). */
export function viewBytes(dtype: DType, bytes: Uint8Array): TypedArray {
  const size = DTYPES[dtype].bytes;
  if (bytes.byteLength % size !== 0) throw new Error(`${bytes.byteLength} bytes is not a whole number of ${dtype} elements`);
  const aligned = bytes.byteOffset % size === 0 ? bytes : bytes.slice();
  const out = allocate(dtype, 0).constructor as unknown as new (b: ArrayBufferLike, o: number, l: number) => TypedArray;
  return new out(aligned.buffer, aligned.byteOffset, aligned.byteLength / size);
}
