export {
  deviceModelAllowlist,
  type XenDeviceModelSeccomp,
  type XenDeviceModelSeccompMode,
  type XenDeviceModelSeccompOptions,
  xenDeviceModelAllowlist,
  xenDeviceModelSeccomp,
} from './allowlist.js';
export { deviceModelContext, type HvmGuestConfig } from './context.js';
export { decodePrivcmdIoctl } from './decode.js';
export type { Decision, ErrnoCode } from './errno.js';
export { PolicyError, type PolicyErrorCode } from './error.js';
export { type DeniedRequest, type GateOptions, PrivcmdDeniedError } from './gate.js';
export {
  PrivcmdHandle,
  type PrivcmdHandleOptions,
  type PrivcmdIo,
} from './handle.js';
export {
  type ArgPointer,
  EvtchnModel,
  type EvtchnModelOptions,
  type EvtchnRequest,
  type PrivcmdDecision,
  PrivcmdModel,
  type PrivcmdModelOptions,
  type PrivcmdRequest,
  type PrivcmdVma,
  type UserPointerFault,
} from './model.js';
export {
  type DmOpCall,
  decide,
  type IoRange,
  type OpRule,
  type PolicyContext,
  type PolicyProfile,
  validateProfile,
} from './policy.js';
export { qemuXenHvmProfile } from './profiles.js';
export { compileSeccomp, type SeccompAction, type SeccompAllowlist } from './seccomp.js';
export { type DmOpBackend, SimPrivcmd, type SimPrivcmdOptions } from './sim.js';
export {
  type AuditCounts,
  type AuditDenial,
  type AuditOptions,
  type AuditReport,
  auditTrace,
  parseTrace,
  type TraceRecord,
} from './trace.js';
