import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

interface HashEntry {
  size: number;
  mtimeMs: number;
  sha256: string;
}

/**
 * sha256 of a file, remembered in `cacheDir`/file-hashes.json by (path, size, mtime): reopening
 * a package of several GB does not read it again unless the file changed.
 */
export async function cachedSha256File(path: string, cacheDir: string | null): Promise<string> {
  if (!cacheDir) return sha256File(path);
  const key = resolve(path);
  const { size, mtimeMs } = await stat(key);
  const table = join(cacheDir, 'file-hashes.json');
  const read = () => readFile(table, 'utf8').then((s) => JSON.parse(s) as Record<string, HashEntry>).catch(() => ({} as Record<string, HashEntry>));
  const entries = await read();
  const hit = entries[key];
  if (hit && hit.size === size && hit.mtimeMs === mtimeMs) return hit.sha256;
  const sha256 = await sha256File(key);
  // Re-read before writing: another process may have added entries meanwhile.
  const latest = await read();
  latest[key] = { size, mtimeMs, sha256 };
  const tmp = `${table}.tmp-${process.pid}`;
  try {
    await mkdir(dirname(table), { recursive: true });
    await writeFile(tmp, JSON.stringify(latest));
    await rename(tmp, table);
  } catch {
    // An unwritable cache only means hashing again next time.
  }
  return sha256;
}
