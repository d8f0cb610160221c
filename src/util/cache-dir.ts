import { homedir } from 'node:os';
import { join } from 'node:path';

/**
 * Where harmonica keeps what it can rebuild (compiled models, file hashes):
 * HARMONICA_CACHE_DIR, else $XDG_CACHE_HOME/harmonica, else ~/.cache/harmonica.
 * HARMONICA_CACHE_DIR=off keeps nothing on disk.
 */
export function defaultCacheDir(): string | null {
  const env = process.env.HARMONICA_CACHE_DIR;
  if (env === 'off') return null;
  if (env) return env;
  return join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'harmonica');
}
