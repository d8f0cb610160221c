import { writeFile } from 'node:fs/promises';
import { pathToFileURL } from 'node:url';
import swagger from '@fastify/swagger';
import Fastify from 'fastify';
import { routes } from '../../routes/index.js';
import { OPENAPI_FILE } from '../../routes/ops.js';

/**
 * openapi.yaml as the route schemas define it. Only the schemas are needed, so the routes are
 * registered on a bare instance: no Redis, no models.
 */
export async function openapiDocument(): Promise<string> {
  const pkg = (await import('../../package.json', { with: { type: 'json' } })).default as { version: string; description: string };
  const app = Fastify({ logger: false });
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'harmonica', version: pkg.version, description: `${pkg.description}. Generated from the route schemas by \`npm run openapi\`.` },
    },
    // Shared schemas keep their $id (Job, Report, Problem) as their component name.
    refResolver: { buildLocalReference: (json, _base, _fragment, i) => (typeof json.$id === 'string' ? json.$id : `def-${i}`) },
  });
  await app.register(routes);
  await app.ready();
  const yaml = app.swagger({ yaml: true });
  await app.close();
  return yaml;
}

// `npm run openapi` rewrites the file; the test fails while it is stale.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href && process.argv.includes('--write')) {
  await writeFile(OPENAPI_FILE, await openapiDocument());
  process.stdout.write(`wrote ${OPENAPI_FILE.pathname}\n`);
}
