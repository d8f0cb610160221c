// Importing the policy modules registers them with the parser.
import './fora.js';
import './router.js';

export { parsePolicy, policyNames, type CachePolicy, type PolicyContext } from './policy.js';
export { CachedExecutor, type StepResult } from './executor.js';
