/**
 * One error type for every failure a user can cause (bad checkpoint, unknown model, invalid
 * request...). `code` is stable and is what the HTTP layer maps to problem+json.
 */
export type ErrorCode =
  | 'MISSING_WEIGHT'
  | 'WEIGHT_SHAPE'
  | 'BAD_CONFIG'
  | 'BAD_INPUT'
  | 'UNKNOWN_MODEL'
  | 'UNKNOWN_POLICY'
  | 'ROUTER_MISMATCH'
  | 'PROMPT_TOO_LONG';

export class HarmonicaError extends Error {
  override name = 'HarmonicaError';
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
  }
}
