import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { openapiDocument } from '../../src/service/openapi.js';

describe('openapi.yaml', () => {
  it('is what the route schemas generate (run `npm run openapi` after changing a route)', async () => {
    const checkedIn = await readFile(new URL('../../openapi.yaml', import.meta.url), 'utf8');
    expect(checkedIn).toBe(await openapiDocument());
  });

  it('documents every route', async () => {
    const doc = await openapiDocument();
    for (const path of ['/generate', '/jobs/{id}', '/jobs/{id}/events', '/jobs/{id}/images/{n}', '/jobs/{id}/cancel', '/models', '/models/{model}/routers/{router}', '/healthz', '/readyz', '/metrics', '/docs', '/v1/images/generations']) {
      expect(doc).toContain(`  ${path}:\n`);
    }
  });
});
