/**
 * The xenstore wire constants of Xen 4.17 (`xen/include/public/io/xs_wire.h`):
 * message types, errno names, sizes. A 16-byte little-endian header
 * `{type, req_id, tx_id, len}` is followed by at most XENSTORE_PAYLOAD_MAX bytes.
 */

export const XS_CONTROL = 0;
/** Old name of XS_CONTROL, kept by xs_wire.h. */
export const XS_DEBUG = 0;
export const XS_DIRECTORY = 1;
export const XS_READ = 2;
export const XS_GET_PERMS = 3;
export const XS_WATCH = 4;
export const XS_UNWATCH = 5;
export const XS_TRANSACTION_START = 6;
export const XS_TRANSACTION_END = 7;
export const XS_INTRODUCE = 8;
export const XS_RELEASE = 9;
export const XS_GET_DOMAIN_PATH = 10;
export const XS_WRITE = 11;
export const XS_MKDIR = 12;
export const XS_RM = 13;
export const XS_SET_PERMS = 14;
export const XS_WATCH_EVENT = 15;
export const XS_ERROR = 16;
export const XS_IS_DOMAIN_INTRODUCED = 17;
export const XS_RESUME = 18;
export const XS_SET_TARGET = 19;
/** 20 was XS_RESTRICT; xs_wire.h defines XS_RESET_WATCHES as XS_SET_TARGET + 2. */
export const XS_RESET_WATCHES = 21;
export const XS_DIRECTORY_PART = 22;
export const XS_TYPE_COUNT = 23;
export const XS_INVALID = 0xffff;

/** Message type names as xenstored spells them (`sockmsg_string`), by number. */
export const XS_TYPE_NAMES: Readonly<Record<number, string>> = {
  0: 'CONTROL',
  1: 'DIRECTORY',
  2: 'READ',
  3: 'GET_PERMS',
  4: 'WATCH',
  5: 'UNWATCH',
  6: 'TRANSACTION_START',
  7: 'TRANSACTION_END',
  8: 'INTRODUCE',
  9: 'RELEASE',
  10: 'GET_DOMAIN_PATH',
  11: 'WRITE',
  12: 'MKDIR',
  13: 'RM',
  14: 'SET_PERMS',
  15: 'WATCH_EVENT',
  16: 'ERROR',
  17: 'IS_DOMAIN_INTRODUCED',
  18: 'RESUME',
  19: 'SET_TARGET',
  21: 'RESET_WATCHES',
  22: 'DIRECTORY_PART',
};

export const XENSTORE_HEADER_SIZE = 16;
export const XENSTORE_PAYLOAD_MAX = 4096;
export const XENSTORE_ABS_PATH_MAX = 3072;
export const XENSTORE_REL_PATH_MAX = 2048;

/** The errno names xenstored may send in XS_ERROR, in xs_wire.h's `xsd_errors` order. */
export const XSD_ERRORS = [
  'EINVAL',
  'EACCES',
  'EEXIST',
  'EISDIR',
  'ENOENT',
  'ENOMEM',
  'ENOSPC',
  'EIO',
  'ENOTEMPTY',
  'ENOSYS',
  'EROFS',
  'EBUSY',
  'EAGAIN',
  'EISCONN',
  'E2BIG',
  'EPERM',
] as const;
export type XsErrno = (typeof XSD_ERRORS)[number];

export function isXsErrno(name: string): name is XsErrno {
  return (XSD_ERRORS as readonly string[]).includes(name);
}
