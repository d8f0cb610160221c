import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // ORT sessions use both cores; parallel files would only fight over them.
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Compiled models and file hashes of a test run go to a fresh directory, not the user's cache.
    env: { HARMONICA_CACHE_DIR: mkdtempSync(join(tmpdir(), 'harmonica-test-cache-')) },
    globalSetup: ['test/helpers/cache-dir-teardown.ts'],
  },
});
