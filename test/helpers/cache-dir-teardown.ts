import { rm } from 'node:fs/promises';

/** Removes the test run's cache directory (see vitest.config.ts) when the run ends. */
export default function setup(): () => Promise<void> {
  const dir = process.env.HARMONICA_CACHE_DIR;
  return async () => {
    if (dir?.includes('harmonica-test-cache-')) await rm(dir, { recursive: true, force: true });
  };
}
