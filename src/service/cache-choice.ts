import { packageRouterPath } from '../cache/router.js';
import { HarmonicaError } from '../util/errors.js';
import type { CacheChoice } from './job.js';

/** Router names are file names inside the model package's routers/: no paths from the network. */
const ROUTER_NAME = /^[\w][\w.-]*$/;

/**
 * The engine's `--cache` spec for a request's cache choice. The API and the worker both call
 * this, each against its own copy of the model package.
 */
export function cacheSpec(choice: CacheChoice | undefined, modelDir: string): string {
  if (!choice) return 'none';
  const { policy, router, tau } = choice;
  if (policy === 'router') {
    if (!router || !ROUTER_NAME.test(router)) throw new HarmonicaError('UNKNOWN_POLICY', `policy "router" needs "router": the name of one of the model's routers, got ${JSON.stringify(router)}`);
    return `router:${packageRouterPath(modelDir, router)}${tau === undefined ? '' : `@${tau}`}`;
  }
  if (policy.startsWith('router')) throw new HarmonicaError('UNKNOWN_POLICY', 'give a router by name: {"policy": "router", "router": "<name>"}');
  if (router !== undefined || tau !== undefined) throw new HarmonicaError('BAD_INPUT', '"router" and "tau" only go with policy "router"');
  return policy;
}
