export { type Decision, type ErrnoCode, LINUX_ERRNO } from './errno.js';
export * from './ioctls.js';
export {
  DOMID_FIRST_RESERVED,
  DOMID_INVALID,
  EvtchnModel,
  type EvtchnModelOptions,
  type EvtchnRequest,
  PrivcmdModel,
  type PrivcmdModelOptions,
  type PrivcmdRequest,
} from './model.js';
export { PACKAGE_NAME } from './package-name.js';
