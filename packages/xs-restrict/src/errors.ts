import { XS_TYPE_NAMES } from './wire/index.js';

/** An XS_ERROR reply, or a local failure named like one (ETIMEDOUT, ECONNRESET, …). */
export class XenstoreError extends Error {
  /** The errno name, as xenstored sends it (`ENOENT`) or as the client names a local failure. */
  readonly code: string;
  /** The request type that failed, when there was one. */
  readonly requestType: number | undefined;
  readonly path: string | undefined;
  constructor(code: string, message: string, requestType?: number, path?: string) {
    super(message);
    this.name = 'XenstoreError';
    this.code = code;
    this.requestType = requestType;
    this.path = path;
  }

  static fromReply(code: string, requestType: number, path: string | undefined): XenstoreError {
    const op = XS_TYPE_NAMES[requestType] ?? `type ${requestType}`;
    const where = path === undefined ? '' : ` ${JSON.stringify(path)}`;
    return new XenstoreError(code, `xenstore ${op}${where} failed: ${code}`, requestType, path);
  }
}
