// Importing the policy modules registers them with the parser.
import './delta-dit.js';
import './first-block.js';
import './fora.js';
import './router.js';
import './teacache.js';

export { parsePolicy, policyNames, type CachePolicy, type PolicyContext } from './policy.js';
export { CachedExecutor, type StepResult, type WeightsSource } from './executor.js';
