export {
  DEFAULT_XENSTORED_PATH,
  type TxOption,
  type WatchEvent,
  XENBUS_DEVICE,
  XenstoreClient,
  type XenstoreClientOptions,
  XenstoreWatch,
} from './client.js';
export { XenstoreError } from './errors.js';
export { PACKAGE_NAME } from './package-name.js';
export {
  DEFAULT_QUOTAS,
  XenstoreConnection,
  type XenstoreQuotas,
  XenstoreServer,
  type XenstoreServerOptions,
} from './server.js';
export * from './wire.js';
