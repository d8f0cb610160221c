import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

/**
 * Docker cannot run on the development machines, so the files are checked here by what can
 * be read: the compose file's settings the design asks for, every path a Dockerfile copies,
 * and that the images (installed with --omit=dev) have every package the service imports.
 */
const ROOT = new URL('../../', import.meta.url).pathname;
const read = (path: string) => readFileSync(join(ROOT, path), 'utf8');
const DOCKERFILES = ['docker/Dockerfile.api', 'docker/Dockerfile.worker', 'docker/Dockerfile.worker-cuda'];

interface Service { build?: { context: string; dockerfile: string }; command?: string[]; deploy?: { replicas?: number }; volumes?: string[]; profiles?: string[] }

describe('docker/compose.yaml', () => {
  const compose = parse(read('docker/compose.yaml')) as { services: Record<string, Service> };

  it('runs Redis with AOF and without eviction, 2 API replicas behind nginx, and workers', () => {
    const { redis, api, worker, lb } = compose.services;
    expect(redis!.command).toEqual(expect.arrayContaining(['--appendonly', 'yes', '--maxmemory-policy', 'noeviction']));
    expect(api!.deploy?.replicas).toBe(2);
    expect(worker!.deploy?.replicas).toBeGreaterThanOrEqual(1);
    expect(lb!.volumes).toContain('./nginx.conf:/etc/nginx/conf.d/default.conf:ro');
  });

  it('builds every image from the repository root with a Dockerfile that exists', () => {
    const builds = Object.values(compose.services).flatMap((s) => (s.build ? [s.build] : []));
    expect(builds.map((b) => b.dockerfile).sort()).toEqual([...DOCKERFILES].sort());
    for (const b of builds) expect(b.context).toBe('..');
  });
});

describe('docker/nginx.conf', () => {
  it('passes server-sent events through unbuffered, with a long idle timeout, to the API replicas', () => {
    const conf = read('docker/nginx.conf');
    expect(conf).toMatch(/proxy_buffering off;/);
    expect(conf).toMatch(/proxy_read_timeout 1h;/);
    expect(conf).toMatch(/server api:3000;/);
  });
});

describe('Dockerfiles', () => {
  it.each(DOCKERFILES)('%s copies only paths that exist and starts the service entry point', (file) => {
    const text = read(file);
    for (const line of text.split('\n').filter((l) => l.startsWith('COPY ') && !l.includes('--from='))) {
      const sources = line.split(/\s+/).slice(1, -1);
      for (const source of sources) expect(existsSync(join(ROOT, source)), `${file}: ${line}`).toBe(true);
    }
    const cmd = JSON.parse(text.split('\n').find((l) => l.startsWith('CMD ['))!.slice(4)) as string[];
    expect(existsSync(join(ROOT, cmd.at(-1)!))).toBe(true);
  });
});

describe('production dependencies', () => {
  it('every package the API and the worker import is a dependency, not a devDependency', () => {
    const pkg = JSON.parse(read('package.json')) as { dependencies: Record<string, string> };
    const runtimeDirs = ['routes', 'workers', 'bin', ...['service', 'engine', 'models', 'cache', 'onnx', 'tensor', 'diffusion', 'util'].map((d) => `src/${d}`)];
    const files = runtimeDirs.flatMap((dir) => readdirSync(join(ROOT, dir), { recursive: true, encoding: 'utf8' }).filter((f) => /\.(ts|js)$/.test(f)).map((f) => join(dir, f)));
    const missing = new Set<string>();
    for (const file of files) {
      // Static value imports only: `import type` is erased, and dynamic imports are the CLI's optional parts.
      for (const m of read(file).matchAll(/^import (?!type )[^'"]*from '([^'.][^']*)'/gm)) {
        const spec = m[1]!;
        const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!;
        if (spec.startsWith('node:') || builtinModules.includes(name)) continue;
        if (!pkg.dependencies[name]) missing.add(`${name} (${file})`);
      }
    }
    expect([...missing]).toEqual([]);
  });
});
