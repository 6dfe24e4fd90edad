// Errors raised while decoding bytes from the network. Protocol engines catch these at the edge and
// answer GARBAGE_ARGS (or close the connection for framing errors); they never escape as crashes.

export const DecodeErrorCode = Object.freeze({
  Truncated: 'DITTOFS_DECODE_TRUNCATED',
  TooLarge: 'DITTOFS_DECODE_TOO_LARGE',
  Invalid: 'DITTOFS_DECODE_INVALID',
} as const);
export type DecodeErrorCode = (typeof DecodeErrorCode)[keyof typeof DecodeErrorCode];

export class DecodeError extends Error {
  override readonly name = 'DecodeError';
  constructor(
    readonly code: DecodeErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export class FrameError extends Error {
  override readonly name = 'FrameError';
  readonly code = 'DITTOFS_FRAME_INVALID';
}
