/**
 * Our own safetensors reader/writer (the npm `safetensors` package crashes on `__metadata__`).
 *
 * Layout: u64 little-endian header length N, N bytes of JSON header, then the data buffer.
 * Header: { name: { dtype, shape, data_offsets: [begin, end] }, "__metadata__"?: { key: string } },
 * offsets relative to the start of the data buffer. Byte order is little-endian like every host Node runs on,
 * so typed arrays are read and written as-is.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import { allocate, DTYPES, viewBytes, type DType } from './dtype.js';
import { bytesOf, numel, type HostTensor } from './tensor.js';

export type SafetensorsErrorCode =
  | 'TRUNCATED' // file shorter than 8 bytes, or shorter than a tensor needs while reading
  | 'HEADER_PAST_END' // header length points past the end of the file
  | 'HEADER_TOO_LARGE' // header over MAX_HEADER_BYTES (guards against allocating garbage lengths)
  | 'BAD_HEADER_JSON' // not UTF-8 JSON, or not a JSON object
  | 'BAD_ENTRY' // tensor entry missing fields / wrong types / non-integer shape or offsets
  | 'BAD_METADATA' // __metadata__ not an object of strings
  | 'UNKNOWN_DTYPE'
  | 'OFFSET_OUT_OF_RANGE' // begin > end or end past the data buffer
  | 'OVERLAPPING'
  | 'SIZE_MISMATCH' // numel(shape) * dtype bytes != end - begin
  | 'UNKNOWN_TENSOR' // read/info of a name not in the file
  | 'BAD_TENSOR'; // writer: tensor data does not match its dtype/shape

export class SafetensorsError extends Error {
  override name = 'SafetensorsError';
  constructor(
    readonly code: SafetensorsErrorCode,
    /** File path, or '<buffer>' for in-memory data. */
    readonly file: string,
    message: string,
    readonly tensor?: string,
  ) {
    super(`${file}: ${tensor !== undefined ? `tensor ${JSON.stringify(tensor)}: ` : ''}${message} [${code}]`);
  }
}

/** Same cap as the reference implementation. */
export const MAX_HEADER_BYTES = 100_000_000;

export interface TensorInfo {
  dtype: DType;
  shape: number[];
  byteLength: number;
}

interface Entry extends TensorInfo {
  /** Offset of the tensor's first byte relative to the data buffer. */
  begin: number;
}

interface Header {
  metadata: Record<string, string>;
  /** Entries in data-offset order. */
  entries: Map<string, Entry>;
}

const BY_SAFETENSORS_NAME = new Map(Object.entries(DTYPES).map(([dt, info]) => [info.safetensors, dt as DType]));
const METADATA_KEY = '__metadata__';

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isIndex(v: unknown): v is number {
  return Number.isSafeInteger(v) && (v as number) >= 0;
}

/** Header length from the 8-byte prefix, checked against the file size. */
function headerLength(prefix: Uint8Array, fileSize: number, file: string): number {
  if (fileSize < 8) throw new SafetensorsError('TRUNCATED', file, `file is ${fileSize} bytes, shorter than the 8-byte header length`);
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(fileSize - 8)) {
    throw new SafetensorsError('HEADER_PAST_END', file, `header length ${n} runs past the end of the file (${fileSize} bytes)`);
  }
  if (n > BigInt(MAX_HEADER_BYTES)) throw new SafetensorsError('HEADER_TOO_LARGE', file, `header length ${n} exceeds ${MAX_HEADER_BYTES}`);
  return Number(n);
}

/** Parse and validate the JSON header against a data buffer of `dataLength` bytes. Shared by file and buffer readers. */
function parseHeader(headerBytes: Uint8Array, dataLength: number, file: string): Header {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBytes));
  } catch (e) {
    throw new SafetensorsError('BAD_HEADER_JSON', file, `header is not valid JSON: ${(e as Error).message}`);
  }
  if (!isPlainObject(json)) throw new SafetensorsError('BAD_HEADER_JSON', file, 'header is not a JSON object');

  let metadata: Record<string, string> = {};
  const entries: [string, Entry][] = [];
  for (const [name, raw] of Object.entries(json)) {
    if (name === METADATA_KEY) {
      metadata = checkMetadata(raw, file);
      continue;
    }
    const bad = (code: SafetensorsErrorCode, msg: string) => new SafetensorsError(code, file, msg, name);
    if (!isPlainObject(raw)) throw bad('BAD_ENTRY', 'entry is not an object');
    const { dtype: dtypeName, shape, data_offsets: offsets } = raw;
    if (typeof dtypeName !== 'string') throw bad('BAD_ENTRY', 'missing or non-string "dtype"');
    if (!Array.isArray(shape)) throw bad('BAD_ENTRY', 'missing or non-array "shape"');
    if (!shape.every(isIndex)) throw bad('BAD_ENTRY', `shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isIndex)) {
      throw bad('BAD_ENTRY', `"data_offsets" ${JSON.stringify(offsets)} is not [begin, end] of non-negative integers`);
    }
    const dtype = BY_SAFETENSORS_NAME.get(dtypeName);
    if (dtype === undefined) throw bad('UNKNOWN_DTYPE', `unknown dtype ${JSON.stringify(dtypeName)}`);
    const [begin, end] = offsets as [number, number];
    if (begin > end) throw bad('OFFSET_OUT_OF_RANGE', `data_offsets [${begin}, ${end}] begin after end`);
    if (end > dataLength) {
      throw bad('OFFSET_OUT_OF_RANGE', `data_offsets [${begin}, ${end}] outside the data buffer of ${dataLength} bytes`);
    }
    const expected = numel(shape) * DTYPES[dtype].bytes;
    if (expected !== end - begin) {
      throw bad('SIZE_MISMATCH', `shape [${shape}] of ${dtypeName} needs ${expected} bytes but data_offsets [${begin}, ${end}] span ${end - begin}`);
    }
    entries.push([name, { dtype, shape: shape as number[], byteLength: end - begin, begin }]);
  }

  // Gaps between tensors (and trailing bytes) are tolerated, overlaps are not.
  entries.sort((a, b) => a[1].begin - b[1].begin || a[1].byteLength - b[1].byteLength);
  for (let i = 1; i < entries.length; i++) {
    const [prevName, prev] = entries[i - 1]!;
    const [name, cur] = entries[i]!;
    if (cur.begin < prev.begin + prev.byteLength) {
      throw new SafetensorsError('OVERLAPPING', file,
        `bytes [${cur.begin}, ${cur.begin + cur.byteLength}) overlap tensor ${JSON.stringify(prevName)} at [${prev.begin}, ${prev.begin + prev.byteLength})`, name);
    }
  }
  return { metadata, entries: new Map(entries) };
}

function checkMetadata(raw: unknown, file: string): Record<string, string> {
  if (!isPlainObject(raw)) throw new SafetensorsError('BAD_METADATA', file, `${METADATA_KEY} is not an object`);
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(raw)) {
    if (typeof v !== 'string') throw new SafetensorsError('BAD_METADATA', file, `${METADATA_KEY} value for ${JSON.stringify(k)} is ${typeof v}, not a string`);
    out[k] = v;
  }
  return out;
}

function lookup(header: Header, name: string, file: string): Entry {
  const e = header.entries.get(name);
  if (e === undefined) throw new SafetensorsError('UNKNOWN_TENSOR', file, 'no such tensor in the file', name);
  return e;
}

/** A safetensors file opened for lazy reads: only the header is read up front. */
export class SafetensorsFile {
  private closed = false;

  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    private readonly header: Header,
    /** Absolute file offset of the data buffer. */
    private readonly dataStart: number,
  ) {}

  get metadata(): Record<string, string> {
    return this.header.metadata;
  }

  static async open(path: string): Promise<SafetensorsFile> {
    const handle = await open(path, 'r');
    try {
      const size = (await handle.stat()).size;
      const prefix = new Uint8Array(8);
      if (size >= 8) await readExactly(handle, prefix, 0, path);
      const n = headerLength(prefix, size, path);
      const headerBytes = new Uint8Array(n);
      await readExactly(handle, headerBytes, 8, path);
      const header = parseHeader(headerBytes, size - 8 - n, path);
      return new SafetensorsFile(path, handle, header, 8 + n);
    } catch (e) {
      await handle.close();
      throw e;
    }
  }

  /** Tensor names in data-offset order. */
  names(): string[] {
    return [...this.header.entries.keys()];
  }

  has(name: string): boolean {
    return this.header.entries.has(name);
  }

  info(name: string): TensorInfo {
    const { dtype, shape, byteLength } = lookup(this.header, name, this.path);
    return { dtype, shape: [...shape], byteLength };
  }

  /** Reads just this tensor's bytes, straight into a typed array of its dtype. */
  async read(name: string): Promise<HostTensor> {
    const e = lookup(this.header, name, this.path);
    if (this.closed) throw new Error(`${this.path}: read of ${JSON.stringify(name)} after close()`);
    const data = allocate(e.dtype, numel(e.shape));
    await readExactly(this.handle, new Uint8Array(data.buffer, data.byteOffset, data.byteLength), this.dataStart + e.begin, this.path, name);
    return { dtype: e.dtype, shape: [...e.shape], data };
  }

  async readAll(): Promise<Map<string, HostTensor>> {
    const out = new Map<string, HostTensor>();
    for (const name of this.names()) out.set(name, await this.read(name));
    return out;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.handle.close();
  }
}

/**
 * A safetensors file read tensor by tensor, synchronously, when a tensor is first asked for:
 * graph builders are synchronous, and a checkpoint bigger than memory is never held whole.
 */
export class SafetensorsFileSync {
  private closed = false;

  private constructor(
    readonly path: string,
    private readonly fd: number,
    private readonly header: Header,
    private readonly dataStart: number,
  ) {
    // Weights read for one graph build are dropped without a close(): their descriptor goes with them.
    unclosedFiles.register(this, fd, this);
  }

  static open(path: string): SafetensorsFileSync {
    const fd = openSync(path, 'r');
    try {
      const size = fstatSync(fd).size;
      const prefix = new Uint8Array(8);
      if (size >= 8) readExactlySync(fd, prefix, 0, path);
      const n = headerLength(prefix, size, path);
      const headerBytes = new Uint8Array(n);
      readExactlySync(fd, headerBytes, 8, path);
      return new SafetensorsFileSync(path, fd, parseHeader(headerBytes, size - 8 - n, path), 8 + n);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  names(): string[] {
    return [...this.header.entries.keys()];
  }

  info(name: string): TensorInfo {
    const { dtype, shape, byteLength } = lookup(this.header, name, this.path);
    return { dtype, shape: [...shape], byteLength };
  }

  read(name: string): HostTensor {
    const e = lookup(this.header, name, this.path);
    if (this.closed) throw new Error(`${this.path}: read of ${JSON.stringify(name)} after close()`);
    const data = allocate(e.dtype, numel(e.shape));
    readExactlySync(this.fd, new Uint8Array(data.buffer, data.byteOffset, data.byteLength), this.dataStart + e.begin, this.path, name);
    return { dtype: e.dtype, shape: [...e.shape], data };
  }

  /** Every tensor, and the file closed. */
  readAll(): Map<string, HostTensor> {
    const out = new Map(this.names().map((n) => [n, this.read(n)]));
    this.close();
    return out;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    unclosedFiles.unregister(this);
    closeSync(this.fd);
  }
}

const unclosedFiles = new FinalizationRegistry<number>((fd) => closeSync(fd));

function readExactlySync(fd: number, into: Uint8Array, position: number, file: string, tensor?: string): void {
  let done = 0;
  while (done < into.byteLength) {
    // One read() is capped near 2 GiB on Linux.
    const bytesRead = readSync(fd, into, done, Math.min(into.byteLength - done, 1 << 30), position + done);
    if (bytesRead === 0) {
      throw new SafetensorsError('TRUNCATED', file, `unexpected end of file at byte ${position + done} (needed ${into.byteLength - done} more)`, tensor);
    }
    done += bytesRead;
  }
}

/** fh.read may return short counts; loop until `into` is full (the file shrinking underneath is TRUNCATED). */
async function readExactly(fh: FileHandle, into: Uint8Array, position: number, file: string, tensor?: string): Promise<void> {
  let done = 0;
  while (done < into.byteLength) {
    const { bytesRead } = await fh.read(into, done, into.byteLength - done, position + done);
    if (bytesRead === 0) {
      throw new SafetensorsError('TRUNCATED', file, `unexpected end of file at byte ${position + done} (needed ${into.byteLength - done} more)`, tensor);
    }
    done += bytesRead;
  }
}

/** Parse a whole safetensors file held in memory. Tensor data is copied out of `bytes`. */
export function parseSafetensors(bytes: Uint8Array, file = '<buffer>'): { metadata: Record<string, string>; tensors: Map<string, HostTensor> } {
  const n = headerLength(bytes.subarray(0, 8), bytes.byteLength, file);
  const header = parseHeader(bytes.subarray(8, 8 + n), bytes.byteLength - 8 - n, file);
  const tensors = new Map<string, HostTensor>();
  for (const [name, e] of header.entries) {
    const start = 8 + n + e.begin;
    // slice() copies into a fresh, aligned buffer, so the result never aliases the caller's bytes.
    tensors.set(name, { dtype: e.dtype, shape: [...e.shape], data: viewBytes(e.dtype, bytes.slice(start, start + e.byteLength)) });
  }
  return { metadata: header.metadata, tensors };
}

export type TensorMap = Record<string, HostTensor> | Map<string, HostTensor>;

/**
 * A tensor to write that is read only when its turn comes: copying checkpoints of many GB
 * (e.g. T5-XXL shards) between files holds one tensor at a time.
 */
export interface TensorSource {
  dtype: DType;
  shape: readonly number[];
  read(): Promise<HostTensor>;
}

/** The tensors of open files as sources; the caller closes the files after writing. */
export function tensorSources(files: readonly SafetensorsFile[]): Map<string, TensorSource> {
  const out = new Map<string, TensorSource>();
  for (const f of files) for (const name of f.names()) out.set(name, { ...f.info(name), read: () => f.read(name) });
  return out;
}

interface Layout {
  /** 8-byte length prefix plus the space-padded JSON header. */
  head: Uint8Array;
  /** Tensors in data order (sorted by name). */
  parts: [string, HostTensor | TensorSource][];
  dataLength: number;
}

function isSource(t: HostTensor | TensorSource): t is TensorSource {
  return typeof (t as TensorSource).read === 'function';
}

/** The bytes of a tensor to write, checked against its dtype and shape. */
function checkedBytes(t: HostTensor, file: string, name: string, expected: { dtype: DType; shape: readonly number[] } = t): Uint8Array {
  const n = numel(expected.shape);
  if (t.dtype !== expected.dtype || t.shape.length !== expected.shape.length || t.shape.some((d, i) => d !== expected.shape[i])) {
    throw new SafetensorsError('BAD_TENSOR', file, `read ${t.dtype}[${t.shape}], expected ${expected.dtype}[${expected.shape}]`, name);
  }
  if (t.data.constructor !== allocate(t.dtype, 0).constructor || t.data.length !== n) {
    throw new SafetensorsError('BAD_TENSOR', file, `data is ${t.data.constructor.name}(${t.data.length}), expected ${n} elements of ${t.dtype}`, name);
  }
  return bytesOf(t);
}

function layout(tensors: TensorMap | Map<string, HostTensor | TensorSource>, metadata: Record<string, string> | undefined, file: string): Layout {
  const list = (tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors))
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  // The JSON is assembled by hand so key order is exactly ours (JS objects would hoist integer-like keys).
  const fields: string[] = [];
  if (metadata !== undefined) fields.push(`${JSON.stringify(METADATA_KEY)}:${JSON.stringify(checkMetadata(metadata, file))}`);
  let offset = 0;
  for (const [name, t] of list) {
    if (name === METADATA_KEY) throw new SafetensorsError('BAD_TENSOR', file, `${METADATA_KEY} is reserved`, name);
    const info = DTYPES[t.dtype];
    if (info === undefined) throw new SafetensorsError('UNKNOWN_DTYPE', file, `unknown dtype ${JSON.stringify(t.dtype)}`, name);
    if (!t.shape.every(isIndex)) throw new SafetensorsError('BAD_TENSOR', file, `shape [${t.shape}] is not a list of non-negative integers`, name);
    if (!isSource(t)) checkedBytes(t, file, name);
    const byteLength = numel(t.shape) * info.bytes;
    fields.push(`${JSON.stringify(name)}:${JSON.stringify({ dtype: info.safetensors, shape: t.shape, data_offsets: [offset, offset + byteLength] })}`);
    offset += byteLength;
  }
  const json = new TextEncoder().encode(`{${fields.join(',')}}`);
  // Pad with spaces so the data buffer starts 8-byte aligned.
  const padded = Math.ceil(json.byteLength / 8) * 8;
  const head = new Uint8Array(8 + padded).fill(0x20, 8 + json.byteLength);
  new DataView(head.buffer).setBigUint64(0, BigInt(padded), true);
  head.set(json, 8);
  return { head, parts: list, dataLength: offset };
}

export function serializeSafetensors(tensors: TensorMap, metadata?: Record<string, string>): Uint8Array {
  const { head, parts, dataLength } = layout(tensors, metadata, '<buffer>');
  const out = new Uint8Array(head.byteLength + dataLength);
  out.set(head, 0);
  let pos = head.byteLength;
  for (const [, t] of parts) {
    const bytes = bytesOf(t as HostTensor);
    out.set(bytes, pos);
    pos += bytes.byteLength;
  }
  return out;
}

/**
 * Write tensors to `path`, streaming tensor by tensor (sources are read one at a time, as
 * their turn comes). Writes a temporary sibling file and renames it into place, so a failed
 * write never leaves a half-written file under `path`.
 */
export async function writeSafetensors(path: string, tensors: TensorMap | Map<string, HostTensor | TensorSource>, metadata?: Record<string, string>): Promise<void> {
  const { head, parts } = layout(tensors, metadata, path);
  const tmp = `${path}.tmp-${process.pid}-${Date.now()}`;
  const fh = await open(tmp, 'w');
  try {
    await writeExactly(fh, head);
    for (const [name, t] of parts) await writeExactly(fh, isSource(t) ? checkedBytes(await t.read(), path, name, t) : bytesOf(t));
    await fh.close();
    await rename(tmp, path);
  } catch (e) {
    await fh.close().catch(() => {});
    await rm(tmp, { force: true });
    throw e;
  }
}

/** One write() call is capped near 2 GiB on Linux and may be short; write in bounded chunks until done. */
async function writeExactly(fh: FileHandle, bytes: Uint8Array): Promise<void> {
  const CHUNK = 1 << 26;
  let done = 0;
  while (done < bytes.byteLength) {
    const { bytesWritten } = await fh.write(bytes, done, Math.min(CHUNK, bytes.byteLength - done));
    done += bytesWritten;
  }
}

/** Every tensor of a file (the file is closed again). */
export async function readSafetensors(path: string): Promise<Map<string, HostTensor>> {
  const file = await SafetensorsFile.open(path);
  try {
    return await file.readAll();
  } finally {
    await file.close();
  }
}
