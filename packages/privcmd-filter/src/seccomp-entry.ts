// @xen-depriv/privcmd-filter/seccomp: the tools around the seccomp compiler (an interpreter, a
// disassembler, the x86-64 syscall table) for tests and audits; a toolstack needs only
// compileSeccomp / xenDeviceModelSeccomp from the package root.
export {
  AUDIT_ARCH_X86_64,
  disassembleSeccomp,
  runSeccomp,
  SECCOMP_RET,
  type SeccompData,
} from './seccomp.js';
export { X86_64_SYSCALLS, type X86_64SyscallName } from './syscalls-x86_64.js';
