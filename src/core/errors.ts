/**
 * Stable error codes. Each says whether the outcome of the request is known: a client that
 * gets KV_ERR_TIMEOUT on a write must assume the write may or may not have been applied.
 * Front ends map these codes to their wire form in one table each.
 */
export const ErrorCodes = {
  /** No answer within the request deadline. Outcome unknown for writes. */
  TIMEOUT: 'KV_ERR_TIMEOUT',
  /** No chain member can serve the partition right now. Not applied. */
  UNAVAILABLE: 'KV_ERR_UNAVAILABLE',
  /** A key or value exceeds a configured limit. Not applied. */
  TOO_LARGE: 'KV_ERR_TOO_LARGE',
  /** Malformed request (empty key, reserved key, bad cursor...). Not applied. */
  BAD_REQUEST: 'KV_ERR_BAD_REQUEST',
  /** The node is shutting down. Outcome unknown for writes already forwarded. */
  SHUTTING_DOWN: 'KV_ERR_SHUTTING_DOWN',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

/** Whether a failed write with this code might still have been applied. */
export function outcomeUnknown(code: ErrorCode): boolean {
  return code === ErrorCodes.TIMEOUT || code === ErrorCodes.SHUTTING_DOWN;
}

export class KvError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'KvError';
    this.code = code;
  }
}
