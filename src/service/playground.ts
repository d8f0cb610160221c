import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

/** The web playground's sources: a page, a stylesheet and the TypeScript that esbuild bundles. */
export const PLAYGROUND_DIR = new URL('../../web/playground/', import.meta.url);

export interface PlaygroundAssets {
  html: string;
  css: string;
  script: string;
}

/** Bundles the page's TypeScript (web/playground/main.ts and its imports) into one ES module. */
export async function bundlePlayground(): Promise<string> {
  const result = await build({
    entryPoints: [fileURLToPath(new URL('main.ts', PLAYGROUND_DIR))],
    tsconfig: fileURLToPath(new URL('../tsconfig.json', PLAYGROUND_DIR)),
    bundle: true,
    write: false,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    minify: true,
    legalComments: 'none',
    logLevel: 'silent',
  });
  return result.outputFiles[0]!.text;
}

let assets: Promise<PlaygroundAssets> | null = null;

/**
 * The page, built on first request and then kept for the life of the process. Building in the
 * server (esbuild bundles these few modules in tens of milliseconds) means nothing generated
 * is committed and there is no build step to forget: a fresh clone serves the page after
 * `npm ci`. A failed build is not kept, so the next request tries again.
 */
export function playgroundAssets(): Promise<PlaygroundAssets> {
  assets ??= (async () => {
    const [html, css, script] = await Promise.all([
      readFile(new URL('index.html', PLAYGROUND_DIR), 'utf8'),
      readFile(new URL('style.css', PLAYGROUND_DIR), 'utf8'),
      bundlePlayground(),
    ]);
    return { html, css, script };
  })().catch((err: unknown) => {
    assets = null;
    throw err;
  });
  return assets;
}
