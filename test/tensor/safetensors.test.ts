import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtemp, open, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { allocate, DTYPES, type DType } from '../../src/tensor/dtype.js';
import { tensor, type HostTensor } from '../../src/tensor/tensor.js';
import {
  parseSafetensors, readSafetensors, SafetensorsError, SafetensorsFile, SafetensorsFileSync, serializeSafetensors, tensorSources, writeSafetensors,
  type SafetensorsErrorCode, type TensorSource,
} from '../../src/tensor/safetensors.js';

let dir: string;
beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'safetensors-test-')); });
afterAll(async () => { await rm(dir, { recursive: true, force: true }); });

/** Sample tensor for each dtype with values that exercise sign, range and raw bit patterns. */
function sample(dtype: DType): HostTensor {
  switch (dtype) {
    case 'float64': return tensor(dtype, [2, 2], [1.5, -2.25, 1e300, Number.MIN_VALUE]);
    case 'float32': return tensor(dtype, [3], [0.1, -3.5, Infinity]);
    case 'float16': return tensor(dtype, [2], [0x3c00, 0xfbff]);
    case 'bfloat16': return tensor(dtype, [2, 1], [0x3f80, 0xc020]);
    case 'int64': return tensor(dtype, [2], new BigInt64Array([-(2n ** 62n), 2n ** 53n + 1n]));
    case 'uint64': return tensor(dtype, [2], new BigUint64Array([2n ** 64n - 1n, 7n]));
    case 'int32': return tensor(dtype, [3], [-2147483648, 0, 2147483647]);
    case 'uint32': return tensor(dtype, [2], [4294967295, 1]);
    case 'int16': return tensor(dtype, [2], [-32768, 32767]);
    case 'uint16': return tensor(dtype, [2], [65535, 3]);
    case 'int8': return tensor(dtype, [3], [-128, 5, 127]);
    case 'uint8': return tensor(dtype, [1, 3], [0, 128, 255]);
    case 'bool': return tensor(dtype, [4], [1, 0, 0, 1]);
    case 'float8_e4m3fn': return tensor(dtype, [2], [0x38, 0xfe]);
    case 'float8_e5m2': return tensor(dtype, [2], [0x3c, 0x7b]);
  }
}

function sampleSet(): Map<string, HostTensor> {
  const m = new Map<string, HostTensor>();
  for (const dt of Object.keys(DTYPES) as DType[]) m.set(`t.${dt}`, sample(dt));
  m.set('scalar', tensor('float32', [], [42.5]));
  m.set('empty', tensor('int64', [0, 3]));
  m.set('10', tensor('uint8', [1], [9])); // integer-like name: JS objects would reorder it
  return m;
}

function expectSameTensors(got: Map<string, HostTensor>, want: Map<string, HostTensor>): void {
  expect([...got.keys()].sort()).toEqual([...want.keys()].sort());
  for (const [name, w] of want) {
    const g = got.get(name)!;
    expect(g.dtype, name).toBe(w.dtype);
    expect(g.shape, name).toEqual(w.shape);
    expect(g.data.constructor, name).toBe(allocate(w.dtype, 0).constructor);
    expect(g.data, name).toEqual(w.data);
  }
}

/** Build a file image by hand: u64 length + header text + data bytes. */
function image(header: unknown, data = new Uint8Array(0), headerLength?: bigint): Uint8Array {
  const json = typeof header === 'string' ? new TextEncoder().encode(header)
    : header instanceof Uint8Array ? header : new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.byteLength + data.byteLength);
  new DataView(out.buffer).setBigUint64(0, headerLength ?? BigInt(json.byteLength), true);
  out.set(json, 8);
  out.set(data, 8 + json.byteLength);
  return out;
}

let fileCounter = 0;
async function writeTemp(bytes: Uint8Array): Promise<string> {
  const path = join(dir, `case-${fileCounter++}.safetensors`);
  await writeFile(path, bytes);
  return path;
}

async function rejection(p: Promise<unknown>): Promise<SafetensorsError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(SafetensorsError);
    return e as SafetensorsError;
  }
  throw new Error('expected a rejection');
}

function thrown(f: () => unknown): SafetensorsError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(SafetensorsError);
    return e as SafetensorsError;
  }
  throw new Error('expected a throw');
}

describe('round trip', () => {
  it('every dtype, a scalar, a zero-size tensor and metadata through a file', async () => {
    const tensors = sampleSet();
    const metadata = { format: 'pt', 'ключ': 'значение ✓', empty: '' };
    const path = join(dir, 'all.safetensors');
    await writeSafetensors(path, tensors, metadata);
    const f = await SafetensorsFile.open(path);
    try {
      expect(f.metadata).toEqual(metadata);
      expect(f.has('scalar')).toBe(true);
      expect(f.has('nope')).toBe(false);
      expect(f.info('t.float32')).toEqual({ dtype: 'float32', shape: [3], byteLength: 12 });
      expect(f.info('scalar')).toEqual({ dtype: 'float32', shape: [], byteLength: 4 });
      expect(f.info('empty')).toEqual({ dtype: 'int64', shape: [0, 3], byteLength: 0 });
      // names() is in data order, which the writer makes sorted name order.
      expect(f.names()).toEqual([...tensors.keys()].sort());
      expectSameTensors(await f.readAll(), tensors);
    } finally {
      await f.close();
    }
    // The file and the in-memory serialisation are the same bytes.
    expect(new Uint8Array(await readFile(path))).toEqual(serializeSafetensors(tensors, metadata));
    expect((await readdir(dir)).filter((n) => n.includes('.tmp-'))).toEqual([]);
  });

  it('every dtype through a buffer, from a Record too', () => {
    const tensors = sampleSet();
    const bytes = serializeSafetensors(Object.fromEntries(tensors), { a: 'b' });
    const { metadata, tensors: got } = parseSafetensors(bytes);
    expect(metadata).toEqual({ a: 'b' });
    expectSameTensors(got, tensors);
    // Results are copies: mutating the input afterwards does not change them.
    bytes.fill(0);
    expect(got.get('t.int32')!.data).toEqual(new Int32Array([-2147483648, 0, 2147483647]));
  });

  it('writes a space-padded, 8-aligned header with sorted, contiguous offsets', () => {
    const bytes = serializeSafetensors({ b: tensor('float32', [1], [2]), a: tensor('int8', [3], [1, 2, 3]), c: tensor('float16', [2], [1, 2]) }, { k: 'v' });
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    expect(n % 8).toBe(0);
    const text = new TextDecoder().decode(bytes.subarray(8, 8 + n));
    expect(text).toMatch(/^\{.*\} *$/);
    const header = JSON.parse(text);
    expect(Object.keys(header)).toEqual(['__metadata__', 'a', 'b', 'c']);
    expect(header.__metadata__).toEqual({ k: 'v' });
    expect(header.a).toEqual({ dtype: 'I8', shape: [3], data_offsets: [0, 3] });
    expect(header.b).toEqual({ dtype: 'F32', shape: [1], data_offsets: [3, 7] });
    expect(header.c).toEqual({ dtype: 'F16', shape: [2], data_offsets: [7, 11] });
    expect(bytes.byteLength).toBe(8 + n + 11);
    expect(Array.from(bytes.subarray(8 + n, 8 + n + 3))).toEqual([1, 2, 3]);
  });

  it('no metadata gives an empty record and no __metadata__ key', () => {
    const bytes = serializeSafetensors({ x: tensor('uint8', [1], [1]) });
    expect(new TextDecoder().decode(bytes)).not.toContain('__metadata__');
    expect(parseSafetensors(bytes).metadata).toEqual({});
  });

  it('reads a hand-made file: unpadded odd header, unsorted keys, gaps, misaligned data', async () => {
    const data = new Uint8Array(3 + 8 + 5 + 4);
    new DataView(data.buffer).setFloat64(3, -6.5, true); // "w" at [3, 11): misaligned once the header is 13 bytes off
    new DataView(data.buffer).setInt32(16, -7, true); // "v" at [16, 20), gap [11, 16)
    const bytes = image(`{"w":{"dtype":"F64","shape":[1],"data_offsets":[3,11]},"__metadata__":{"x":"y"},"v":{"dtype":"I32","shape":[],"data_offsets":[16,20]}}`, data);
    const parsed = parseSafetensors(bytes);
    expect(parsed.metadata).toEqual({ x: 'y' });
    expect(parsed.tensors.get('w')!.data).toEqual(new Float64Array([-6.5]));
    expect(parsed.tensors.get('v')).toEqual({ dtype: 'int32', shape: [], data: new Int32Array([-7]) });
    const f = await SafetensorsFile.open(await writeTemp(bytes));
    try {
      expect(f.names()).toEqual(['w', 'v']);
      expect((await f.read('w')).data).toEqual(new Float64Array([-6.5]));
      expect((await f.read('v')).data).toEqual(new Int32Array([-7]));
    } finally {
      await f.close();
    }
  });
});

describe('lazy reads', () => {
  it('read() fetches only the named tensor, at its offset, when called', async () => {
    const big = new Float32Array(1 << 20).map((_, i) => i);
    const small = tensor('int16', [2, 2], [1, -2, 3, -4]);
    const path = join(dir, 'lazy.safetensors');
    await writeSafetensors(path, { z_big: tensor('float32', [1 << 20], big), a_small: small, m_mid: tensor('uint8', [3], [7, 8, 9]) });
    const f = await SafetensorsFile.open(path);
    try {
      const headerEnd = 8 + Number(new DataView((await readFile(path)).buffer.slice(0, 8)).getBigUint64(0, true));
      // Scribble over the first element of z_big (data offset 8 + 3 = 11) after opening, then cut the file
      // inside z_big: the other tensors still read fine, z_big sees the change and then the truncation.
      const fh = await open(path, 'r+');
      await fh.write(new Uint8Array(new Float32Array([-1]).buffer), 0, 4, headerEnd + 11);
      await fh.close();
      expect((await f.read('z_big')).data.slice(0, 2)).toEqual(new Float32Array([-1, 1]));
      await truncate(path, headerEnd + 11 + 1000);
      expect(await f.read('a_small')).toEqual(small);
      expect((await f.read('m_mid')).data).toEqual(new Uint8Array([7, 8, 9]));
      const e = await rejection(f.read('z_big'));
      expect(e.code).toBe('TRUNCATED');
      expect(e.message).toContain('z_big');
    } finally {
      await f.close();
    }
    await expect(f.read('a_small')).rejects.toThrow(/after close/);
    await f.close(); // idempotent
  });

  it('concurrent reads of different tensors do not interfere', async () => {
    const tensors = sampleSet();
    const path = join(dir, 'concurrent.safetensors');
    await writeSafetensors(path, tensors);
    const f = await SafetensorsFile.open(path);
    try {
      const names = f.names();
      const got = await Promise.all(names.map((n) => f.read(n)));
      expectSameTensors(new Map(names.map((n, i) => [n, got[i]!])), tensors);
    } finally {
      await f.close();
    }
  });
});

describe('corrupt files', () => {
  const f32 = (n: number) => new Uint8Array(n * 4);
  const cases: { name: string; bytes: () => Uint8Array; code: SafetensorsErrorCode; says: RegExp; tensor?: string }[] = [
    { name: 'shorter than 8 bytes', bytes: () => new Uint8Array(5), code: 'TRUNCATED', says: /5 bytes/ },
    { name: 'empty file', bytes: () => new Uint8Array(0), code: 'TRUNCATED', says: /0 bytes/ },
    { name: 'header length past the end', bytes: () => image('{}', f32(2), 1000n), code: 'HEADER_PAST_END', says: /header length 1000 .*past the end/ },
    { name: 'header length near 2^64', bytes: () => image('{}', f32(2), 2n ** 64n - 1n), code: 'HEADER_PAST_END', says: /past the end/ },
    { name: 'invalid JSON', bytes: () => image('{"a": [1, 2'), code: 'BAD_HEADER_JSON', says: /not valid JSON/ },
    { name: 'invalid UTF-8', bytes: () => image(new Uint8Array([0x7b, 0xff, 0x7d])), code: 'BAD_HEADER_JSON', says: /not valid JSON/ },
    { name: 'JSON array', bytes: () => image([1, 2]), code: 'BAD_HEADER_JSON', says: /not a JSON object/ },
    { name: 'JSON null', bytes: () => image('null'), code: 'BAD_HEADER_JSON', says: /not a JSON object/ },
    { name: 'entry not an object', bytes: () => image({ w: 3 }), code: 'BAD_ENTRY', says: /not an object/, tensor: 'w' },
    { name: 'missing dtype', bytes: () => image({ w: { shape: [2], data_offsets: [0, 8] } }, f32(2)), code: 'BAD_ENTRY', says: /"dtype"/, tensor: 'w' },
    { name: 'missing shape', bytes: () => image({ w: { dtype: 'F32', data_offsets: [0, 8] } }, f32(2)), code: 'BAD_ENTRY', says: /"shape"/, tensor: 'w' },
    { name: 'missing data_offsets', bytes: () => image({ w: { dtype: 'F32', shape: [2] } }, f32(2)), code: 'BAD_ENTRY', says: /data_offsets/, tensor: 'w' },
    { name: 'non-integer shape', bytes: () => image({ w: { dtype: 'F32', shape: [2.5], data_offsets: [0, 8] } }, f32(2)), code: 'BAD_ENTRY', says: /shape \[2\.5\]/, tensor: 'w' },
    { name: 'negative shape', bytes: () => image({ w: { dtype: 'F32', shape: [-2], data_offsets: [0, 8] } }, f32(2)), code: 'BAD_ENTRY', says: /shape/, tensor: 'w' },
    { name: 'string shape', bytes: () => image({ w: { dtype: 'F32', shape: ['2'], data_offsets: [0, 8] } }, f32(2)), code: 'BAD_ENTRY', says: /shape/, tensor: 'w' },
    { name: 'one offset', bytes: () => image({ w: { dtype: 'F32', shape: [2], data_offsets: [0] } }, f32(2)), code: 'BAD_ENTRY', says: /data_offsets/, tensor: 'w' },
    { name: 'metadata not strings', bytes: () => image({ __metadata__: { n: 3 } }), code: 'BAD_METADATA', says: /"n" is number/ },
    { name: 'metadata not an object', bytes: () => image({ __metadata__: 'x' }), code: 'BAD_METADATA', says: /not an object/ },
    { name: 'unknown dtype', bytes: () => image({ w: { dtype: 'F128', shape: [2], data_offsets: [0, 8] } }, f32(2)), code: 'UNKNOWN_DTYPE', says: /F128/, tensor: 'w' },
    { name: 'end past the data', bytes: () => image({ w: { dtype: 'F32', shape: [3], data_offsets: [0, 12] } }, f32(2)), code: 'OFFSET_OUT_OF_RANGE', says: /outside the data buffer of 8 bytes/, tensor: 'w' },
    { name: 'begin after end', bytes: () => image({ w: { dtype: 'F32', shape: [0], data_offsets: [8, 4] } }, f32(2)), code: 'OFFSET_OUT_OF_RANGE', says: /begin after end/, tensor: 'w' },
    {
      name: 'overlapping tensors',
      bytes: () => image({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, f32(3)),
      code: 'OVERLAPPING', says: /overlap tensor "a"/, tensor: 'b',
    },
    { name: 'size mismatch', bytes: () => image({ w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, f32(2)), code: 'SIZE_MISMATCH', says: /needs 12 bytes .* span 8/, tensor: 'w' },
    { name: 'size mismatch from dtype width', bytes: () => image({ w: { dtype: 'F16', shape: [2], data_offsets: [0, 8] } }, f32(2)), code: 'SIZE_MISMATCH', says: /needs 4 bytes/, tensor: 'w' },
  ];

  for (const c of cases) {
    it(`${c.name}: ${c.code}`, async () => {
      const bytes = c.bytes();
      const path = await writeTemp(bytes);
      const fromFile = await rejection(SafetensorsFile.open(path));
      const fromBuffer = thrown(() => parseSafetensors(bytes));
      for (const [e, where] of [[fromFile, path], [fromBuffer, '<buffer>']] as const) {
        expect(e.code).toBe(c.code);
        expect(e.file).toBe(where);
        expect(e.message).toContain(where);
        expect(e.message).toMatch(c.says);
        expect(e.tensor).toBe(c.tensor);
        if (c.tensor !== undefined) expect(e.message).toContain(`"${c.tensor}"`);
      }
    });
  }

  it('tolerates gaps and trailing bytes, and zero-size tensors sharing an offset', () => {
    const bytes = image({
      a: { dtype: 'U8', shape: [2], data_offsets: [2, 4] },
      e1: { dtype: 'F32', shape: [0], data_offsets: [4, 4] },
      e2: { dtype: 'F32', shape: [0, 5], data_offsets: [4, 4] },
    }, new Uint8Array([9, 9, 1, 2, 9, 9]));
    const { tensors } = parseSafetensors(bytes);
    expect(tensors.get('a')!.data).toEqual(new Uint8Array([1, 2]));
    expect(tensors.get('e2')!.shape).toEqual([0, 5]);
  });

  it('header over the size cap: HEADER_TOO_LARGE (sparse file, nothing allocated)', async () => {
    const path = await writeTemp(image('{}', new Uint8Array(0), 200_000_000n));
    await truncate(path, 8 + 200_000_000 + 16);
    const e = await rejection(SafetensorsFile.open(path));
    expect(e.code).toBe('HEADER_TOO_LARGE');
    expect(e.message).toContain(path);
  });

  it('unknown tensor names are rejected with the name', async () => {
    const path = join(dir, 'names.safetensors');
    await writeSafetensors(path, { present: tensor('float32', [1], [1]) });
    const f = await SafetensorsFile.open(path);
    try {
      const e = await rejection(f.read('absent'));
      expect(e.code).toBe('UNKNOWN_TENSOR');
      expect(e.message).toContain('"absent"');
      expect(e.message).toContain(path);
      expect(thrown(() => f.info('absent')).code).toBe('UNKNOWN_TENSOR');
    } finally {
      await f.close();
    }
  });
});

describe('writer validation', () => {
  it('rejects non-string metadata values and leaves no file behind', async () => {
    const path = join(dir, 'badmeta.safetensors');
    const e = await rejection(writeSafetensors(path, { x: tensor('uint8', [1], [1]) }, { n: 3 } as unknown as Record<string, string>));
    expect(e.code).toBe('BAD_METADATA');
    expect(e.message).toMatch(/"n" is number/);
    expect((await readdir(dir)).filter((n) => n.startsWith('badmeta'))).toEqual([]);
    expect(thrown(() => serializeSafetensors({}, { n: null } as unknown as Record<string, string>)).code).toBe('BAD_METADATA');
  });

  it('rejects tensors whose data does not match dtype and shape', () => {
    const wrongLength = thrown(() => serializeSafetensors({ w: { dtype: 'float32', shape: [3], data: new Float32Array(2) } }));
    expect(wrongLength.code).toBe('BAD_TENSOR');
    expect(wrongLength.message).toContain('"w"');
    const wrongType = thrown(() => serializeSafetensors({ w: { dtype: 'float32', shape: [2], data: new Float64Array(2) } }));
    expect(wrongType.code).toBe('BAD_TENSOR');
    expect(thrown(() => serializeSafetensors({ __metadata__: tensor('uint8', [1], [1]) })).code).toBe('BAD_TENSOR');
  });

  it('writes an empty file that reads back empty', async () => {
    const path = join(dir, 'empty.safetensors');
    await writeSafetensors(path, new Map());
    const f = await SafetensorsFile.open(path);
    expect(f.names()).toEqual([]);
    expect(f.metadata).toEqual({});
    await f.close();
    expect(new TextDecoder().decode((await readFile(path)).subarray(8))).toBe('{}      ');
  });
});

describe('streamed copies (tensor sources)', () => {
  it('reads each source only when its turn comes, one at a time, and writes the same file as from memory', async () => {
    const tensors = new Map([['a', tensor('float32', [2], [1, 2])], ['b', tensor('int64', [1], [5])], ['c', tensor('float16', [3], [1, 2, 3])]]);
    const events: string[] = [];
    let reading = 0;
    const sources = new Map<string, TensorSource>([...tensors].map(([name, t]) => [name, {
      dtype: t.dtype, shape: t.shape, read: async () => {
        reading++;
        events.push(`read ${name} (${reading} at once)`);
        await new Promise((r) => setTimeout(r, 5));
        reading--;
        return t;
      },
    }]));
    const streamed = join(dir, 'streamed.safetensors');
    await writeSafetensors(streamed, sources, { k: 'v' });
    expect(events).toEqual(['read a (1 at once)', 'read b (1 at once)', 'read c (1 at once)']);
    await writeSafetensors(join(dir, 'direct.safetensors'), tensors, { k: 'v' });
    expect((await readFile(streamed)).equals(await readFile(join(dir, 'direct.safetensors')))).toBe(true);
    // Copy between files: sources of open files.
    const f = await SafetensorsFile.open(streamed);
    await writeSafetensors(join(dir, 'copy.safetensors'), tensorSources([f]), { k: 'v' });
    await f.close();
    expect((await readFile(join(dir, 'copy.safetensors'))).equals(await readFile(streamed))).toBe(true);
    expect([...SafetensorsFileSync.open(streamed).readAll()]).toEqual([...await readSafetensors(streamed)]);
  });

  it('a source that reads another shape than it declared is BAD_TENSOR, and no file is left', async () => {
    const path = join(dir, 'liar.safetensors');
    const e = await rejection(writeSafetensors(path, new Map([['w', { dtype: 'float32', shape: [3], read: async () => tensor('float32', [2], [1, 2]) } satisfies TensorSource]])));
    expect(e.code).toBe('BAD_TENSOR');
    expect(e.message).toMatch(/"w".*read float32\[2\], expected float32\[3\]/);
    expect((await readdir(dir)).filter((n) => n.startsWith('liar'))).toEqual([]);
  });
});
