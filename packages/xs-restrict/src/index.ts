export {
  CATALOGUE,
  type CatalogueEntry,
  type CatalogueOp,
  PLACEHOLDERS,
} from './catalogue.js';
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
  Allowlist,
  type AllowRule,
  allowlistFromCatalogue,
  allowlistProblems,
  patternSource,
} from './proxy/allowlist.js';
export { type ClientWatch, type DecideContext, type Decision, decide } from './proxy/decide.js';
export { PENDING_OUTPUT_MAX, PERMS_CACHE_MAX } from './proxy/privileged/book.js';
export {
  DEFAULT_PROXY_LIMITS,
  type PrivilegedUpstream,
  type ProxyClientStats,
  type ProxyLimits,
  type ProxyLogRecord,
  type ProxyUpstream,
  proxyClientBufferBound,
  RestrictingProxy,
  type RestrictingProxyOptions,
} from './proxy/proxy.js';
export {
  type PhysmapEntry,
  type PreDropState,
  type PreDropValue,
  readBeforeDrop,
} from './read-before-drop.js';
export {
  checkClientPath,
  isSpecialPath,
  nodePathProblem,
  type PathProblem,
} from './rules/paths.js';
export {
  DEFAULT_QUOTAS,
  XenstoreConnection,
  type XenstoreQuotas,
  XenstoreServer,
  type XenstoreServerOptions,
} from './server/server.js';
export * from './wire/index.js';
