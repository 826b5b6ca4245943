import { XEN_IOCTL_NAMES } from '@xen-depriv/dmop-abi';
import { PolicyError, show } from './error.js';
import { X86_64_SYSCALLS } from './syscalls-x86_64.js';

/** What the kernel does when the filter returns for a syscall. */
export type SeccompAction =
  | 'allow'
  | 'kill_process'
  | 'kill_thread'
  | 'trap'
  | 'log'
  | { readonly errno: number };

/** The input of `compileSeccomp`: data, so a launcher can print and diff it. */
export interface SeccompAllowlist {
  /** x86-64 syscall names allowed with any arguments (ioctl is filtered by `ioctls` when that is given). */
  readonly syscalls: readonly string[];
  /** When given, `ioctl` is allowed only for these request numbers (compared on the low 32 bits, as the kernel's `unsigned int cmd`). */
  readonly ioctls?: readonly number[];
  /** Syscalls with an action of their own, e.g. `{ syscall: 'io_uring_setup', action: { errno: 38 } }` so a probe fails softly. */
  readonly rules?: readonly { readonly syscall: string; readonly action: SeccompAction }[];
  /** Action for every other syscall. */
  readonly defaultAction: SeccompAction;
  /** Action for an ioctl whose request is not in `ioctls` (default: `defaultAction`). */
  readonly ioctlAction?: SeccompAction;
  /** Action for a non-x86-64 arch or an x32 syscall number (default `kill_process`). */
  readonly badArchAction?: SeccompAction;
}

// include/uapi/linux/seccomp.h
const SECCOMP_RET_KILL_PROCESS = 0x80000000;
const SECCOMP_RET_KILL_THREAD = 0x00000000;
const SECCOMP_RET_TRAP = 0x00030000;
const SECCOMP_RET_ERRNO = 0x00050000;
const SECCOMP_RET_LOG = 0x7ffc0000;
const SECCOMP_RET_ALLOW = 0x7fff0000;
/** include/uapi/linux/audit.h: EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE. */
export const AUDIT_ARCH_X86_64 = 0xc000003e;
/** arch/x86/include/uapi/asm/unistd.h: x32 syscalls carry this bit in the same arch. */
const X32_SYSCALL_BIT = 0x40000000;
/** include/uapi/linux/filter.h BPF_MAXINSNS. */
const BPF_MAXINSNS = 4096;

// Classic BPF opcodes (include/uapi/linux/bpf_common.h).
const LD_W_ABS = 0x20;
const JMP_JA = 0x05;
const JMP_JEQ_K = 0x15;
const JMP_JGT_K = 0x25;
const JMP_JGE_K = 0x35;
const JMP_JSET_K = 0x45;
const RET_K = 0x06;

/** `struct seccomp_data` offsets: nr, arch, instruction_pointer, args[6] (little-endian halves). */
const OFF_NR = 0;
const OFF_ARCH = 4;
const offArgLo = (i: number) => 16 + 8 * i;

interface Insn {
  code: number;
  jt: number;
  jf: number;
  k: number;
}

function actionValue(action: SeccompAction, where: string): number {
  if (typeof action === 'object' && action !== null && 'errno' in action) {
    const e = action.errno;
    if (!Number.isInteger(e) || e < 0 || e > 4095) {
      throw new PolicyError(
        'BAD_ACTION',
        where,
        `expected errno 0..4095 (SECCOMP_RET_DATA), got ${String(e)}`,
      );
    }
    return (SECCOMP_RET_ERRNO | e) >>> 0;
  }
  switch (action) {
    case 'allow':
      return SECCOMP_RET_ALLOW;
    case 'kill_process':
      return SECCOMP_RET_KILL_PROCESS;
    case 'kill_thread':
      return SECCOMP_RET_KILL_THREAD;
    case 'trap':
      return SECCOMP_RET_TRAP;
    case 'log':
      return SECCOMP_RET_LOG;
    default:
      throw new PolicyError(
        'BAD_ACTION',
        where,
        `expected allow, kill_process, kill_thread, trap, log or {errno}, got ${show(action)}`,
      );
  }
}

/**
 * Compiles an allowlist to a classic BPF program for `seccomp(SECCOMP_SET_MODE_FILTER)`: 8-byte
 * `struct sock_filter` entries, little-endian. The program checks the arch first (x86-64 only, x32
 * numbers refused), then the syscall number, then for ioctl the request number.
 */
export function compileSeccomp(allowlist: SeccompAllowlist): Uint8Array {
  // The allowlist may come from a JSON file: check its shape before trusting it.
  const shape = allowlist as unknown as Record<string, unknown>;
  if (typeof shape !== 'object' || shape === null) {
    throw new PolicyError('BAD_ACTION', '/', `expected an allowlist object, got ${show(shape)}`);
  }
  for (const key of ['syscalls', 'ioctls', 'rules'] as const) {
    const v = shape[key];
    if ((key === 'syscalls' || v !== undefined) && !Array.isArray(v)) {
      throw new PolicyError(
        key === 'ioctls' ? 'BAD_IOCTL' : 'UNKNOWN_SYSCALL',
        `/${key}`,
        `expected an array, got ${show(v)}`,
      );
    }
  }
  allowlist.syscalls.forEach((name, i) => {
    if (typeof name !== 'string') {
      throw new PolicyError(
        'UNKNOWN_SYSCALL',
        `/syscalls/${i}`,
        `expected an x86-64 syscall name, got ${show(name)}`,
      );
    }
  });
  allowlist.rules?.forEach((rule, i) => {
    if (typeof rule !== 'object' || rule === null || typeof rule.syscall !== 'string') {
      throw new PolicyError(
        'UNKNOWN_SYSCALL',
        `/rules/${i}`,
        `expected { syscall, action }, got ${show(rule)}`,
      );
    }
  });
  const def = actionValue(allowlist.defaultAction, '/defaultAction');
  const badArch = actionValue(allowlist.badArchAction ?? 'kill_process', '/badArchAction');
  const ioctlAct =
    allowlist.ioctlAction === undefined ? def : actionValue(allowlist.ioctlAction, '/ioctlAction');
  const numbers = new Set<number>();
  allowlist.syscalls.forEach((name, i) => {
    const nr = (X86_64_SYSCALLS as Record<string, number | undefined>)[name];
    if (nr === undefined || !Object.hasOwn(X86_64_SYSCALLS, name)) {
      throw new PolicyError(
        'UNKNOWN_SYSCALL',
        `/syscalls/${i}`,
        `expected an x86-64 syscall name, got ${show(name)}`,
      );
    }
    numbers.add(nr);
  });
  const ruled = new Map<number, number>();
  allowlist.rules?.forEach((rule, i) => {
    const nr = (X86_64_SYSCALLS as Record<string, number | undefined>)[rule.syscall];
    if (nr === undefined || !Object.hasOwn(X86_64_SYSCALLS, rule.syscall)) {
      throw new PolicyError(
        'UNKNOWN_SYSCALL',
        `/rules/${i}/syscall`,
        `expected an x86-64 syscall name, got ${show(rule.syscall)}`,
      );
    }
    if (numbers.has(nr) || ruled.has(nr)) {
      throw new PolicyError(
        'BAD_ACTION',
        `/rules/${i}/syscall`,
        `expected a syscall not already listed, got ${rule.syscall} twice`,
      );
    }
    ruled.set(nr, actionValue(rule.action, `/rules/${i}/action`));
  });
  const filterIoctl = allowlist.ioctls !== undefined;
  const requests = new Set<number>();
  allowlist.ioctls?.forEach((req, i) => {
    if (!Number.isInteger(req) || req < 0 || req > 0xffffffff) {
      throw new PolicyError(
        'BAD_IOCTL',
        `/ioctls/${i}`,
        `expected an ioctl request number 0..0xffffffff, got ${String(req)}`,
      );
    }
    requests.add(req >>> 0);
  });
  const nrIoctl = X86_64_SYSCALLS.ioctl;
  if (filterIoctl) numbers.delete(nrIoctl);

  const prog: Insn[] = [];
  const emit = (code: number, k: number, jt = 0, jf = 0) => prog.push({ code, jt, jf, k: k >>> 0 });
  emit(LD_W_ABS, OFF_ARCH);
  emit(JMP_JEQ_K, AUDIT_ARCH_X86_64, 1, 0);
  emit(RET_K, badArch);
  emit(LD_W_ABS, OFF_NR);
  emit(JMP_JGE_K, X32_SYSCALL_BIT, 0, 1);
  emit(RET_K, badArch);
  let jaToIoctl = -1;
  if (filterIoctl) {
    emit(JMP_JEQ_K, nrIoctl, 0, 1);
    jaToIoctl = prog.length;
    emit(JMP_JA, 0);
  }
  for (const nr of [...numbers].sort((a, b) => a - b)) {
    emit(JMP_JEQ_K, nr, 0, 1);
    emit(RET_K, SECCOMP_RET_ALLOW);
  }
  for (const [nr, action] of [...ruled].sort((a, b) => a[0] - b[0])) {
    emit(JMP_JEQ_K, nr, 0, 1);
    emit(RET_K, action);
  }
  emit(RET_K, def);
  if (filterIoctl) {
    const target = prog.length;
    const ja = prog[jaToIoctl];
    if (ja) ja.k = target - jaToIoctl - 1;
    // The kernel's ioctl handlers take `unsigned int cmd`: only the low half of args[1] matters.
    emit(LD_W_ABS, offArgLo(1));
    for (const req of [...requests].sort((a, b) => a - b)) {
      emit(JMP_JEQ_K, req, 0, 1);
      emit(RET_K, SECCOMP_RET_ALLOW);
    }
    emit(RET_K, ioctlAct);
  }
  if (prog.length > BPF_MAXINSNS) {
    throw new PolicyError(
      'PROGRAM_TOO_LONG',
      '/',
      `expected at most ${BPF_MAXINSNS} instructions, got ${prog.length}`,
    );
  }
  const out = new Uint8Array(prog.length * 8);
  const view = new DataView(out.buffer);
  prog.forEach((insn, i) => {
    view.setUint16(i * 8, insn.code, true);
    view.setUint8(i * 8 + 2, insn.jt);
    view.setUint8(i * 8 + 3, insn.jf);
    view.setUint32(i * 8 + 4, insn.k, true);
  });
  return out;
}

function decode(program: Uint8Array): Insn[] {
  if (program.length === 0 || program.length % 8 !== 0) {
    throw new PolicyError(
      'BAD_PROGRAM',
      '/',
      `expected a non-empty multiple of 8 bytes (struct sock_filter), got ${program.length}`,
    );
  }
  const view = new DataView(program.buffer, program.byteOffset, program.byteLength);
  const out: Insn[] = [];
  for (let off = 0; off < program.length; off += 8) {
    out.push({
      code: view.getUint16(off, true),
      jt: view.getUint8(off + 2),
      jf: view.getUint8(off + 3),
      k: view.getUint32(off + 4, true),
    });
  }
  return out;
}

const SYSCALL_NAMES = new Map<number, string>(
  Object.entries(X86_64_SYSCALLS).map(([n, v]) => [v, n]),
);

function describeAction(k: number): string {
  const action = k & 0xffff0000;
  if (k === SECCOMP_RET_KILL_PROCESS) return 'KILL_PROCESS';
  if (action === SECCOMP_RET_KILL_THREAD) return 'KILL_THREAD';
  if (action === SECCOMP_RET_TRAP) return 'TRAP';
  if (action === SECCOMP_RET_ERRNO) return `ERRNO(${k & 0xffff})`;
  if (action === SECCOMP_RET_LOG) return 'LOG';
  if (action === SECCOMP_RET_ALLOW) return 'ALLOW';
  return `0x${k.toString(16).padStart(8, '0')}`;
}

function describeOffset(k: number): string {
  if (k === OFF_NR) return 'nr';
  if (k === OFF_ARCH) return 'arch';
  if (k === 8) return 'instruction_pointer';
  if (k === 12) return 'instruction_pointer_hi';
  if (k >= 16 && k < 64 && k % 4 === 0)
    return `args[${(k - 16) >> 3}]${(k - 16) % 8 === 0 ? '' : '_hi'}`;
  return `${k}`;
}

/**
 * Prints a classic BPF seccomp program one instruction a line, with absolute jump targets and the
 * syscall, ioctl and action names spelled out.
 */
export function disassembleSeccomp(program: Uint8Array): string {
  const insns = decode(program);
  const lines: string[] = [];
  let loaded = '';
  const pc = (i: number) => i.toString().padStart(4, '0');
  const hex = (k: number) => `0x${k.toString(16).padStart(8, '0')}`;
  insns.forEach((insn, i) => {
    let text: string;
    let note = '';
    switch (insn.code) {
      case LD_W_ABS:
        loaded = describeOffset(insn.k);
        text = `ld   [${insn.k}]`;
        note = loaded;
        break;
      case JMP_JEQ_K:
      case JMP_JGT_K:
      case JMP_JGE_K:
      case JMP_JSET_K: {
        const op = {
          [JMP_JEQ_K]: 'jeq',
          [JMP_JGT_K]: 'jgt',
          [JMP_JGE_K]: 'jge',
          [JMP_JSET_K]: 'jset',
        }[insn.code];
        text = `${op}  #${hex(insn.k)} jt ${pc(i + 1 + insn.jt)} jf ${pc(i + 1 + insn.jf)}`;
        if (loaded === 'nr')
          note = SYSCALL_NAMES.get(insn.k) ?? (insn.k === X32_SYSCALL_BIT ? 'X32_SYSCALL_BIT' : '');
        else if (loaded === 'arch') note = insn.k === AUDIT_ARCH_X86_64 ? 'AUDIT_ARCH_X86_64' : '';
        else if (loaded === 'args[1]') note = XEN_IOCTL_NAMES.get(insn.k) ?? '';
        break;
      }
      case JMP_JA:
        text = `ja   ${pc(i + 1 + insn.k)}`;
        break;
      case RET_K:
        text = `ret  ${describeAction(insn.k)}`;
        break;
      default:
        text = `.insn code=0x${insn.code.toString(16)} jt=${insn.jt} jf=${insn.jf} k=${hex(insn.k)}`;
    }
    lines.push(note ? `${pc(i)}: ${text.padEnd(40)} ; ${note}` : `${pc(i)}: ${text}`);
  });
  return `${lines.join('\n')}\n`;
}

/** `struct seccomp_data` as the filter sees it: for evaluating a program without the kernel. */
export interface SeccompData {
  readonly nr: number;
  readonly arch: number;
  readonly args?: readonly bigint[];
}

/**
 * Runs a program over one syscall the way the kernel's classic BPF interpreter does, for the subset
 * `compileSeccomp` emits (ld abs, jeq/jgt/jge/jset k, ja, ret k). Returns the raw SECCOMP_RET_* value.
 */
export function runSeccomp(program: Uint8Array, data: SeccompData): number {
  const insns = decode(program);
  const word = (off: number): number => {
    if (off === OFF_NR) return data.nr >>> 0;
    if (off === OFF_ARCH) return data.arch >>> 0;
    if (off >= 16 && off < 64) {
      const arg = data.args?.[(off - 16) >> 3] ?? 0n;
      return Number((off - 16) % 8 === 0 ? arg & 0xffffffffn : (arg >> 32n) & 0xffffffffn);
    }
    return 0;
  };
  let acc = 0;
  for (let i = 0; i < insns.length; i++) {
    const insn = insns[i] as Insn;
    switch (insn.code) {
      case LD_W_ABS:
        acc = word(insn.k);
        break;
      case JMP_JEQ_K:
        i += acc === insn.k ? insn.jt : insn.jf;
        break;
      case JMP_JGT_K:
        i += acc > insn.k ? insn.jt : insn.jf;
        break;
      case JMP_JGE_K:
        i += acc >= insn.k ? insn.jt : insn.jf;
        break;
      case JMP_JSET_K:
        i += (acc & insn.k) !== 0 ? insn.jt : insn.jf;
        break;
      case JMP_JA:
        i += insn.k;
        break;
      case RET_K:
        return insn.k;
      default:
        throw new PolicyError(
          'BAD_PROGRAM',
          `${i}`,
          `unsupported opcode 0x${insn.code.toString(16)}`,
        );
    }
  }
  throw new PolicyError('BAD_PROGRAM', `${insns.length}`, 'program ran off its end without a ret');
}

export const SECCOMP_RET = {
  KILL_PROCESS: SECCOMP_RET_KILL_PROCESS,
  KILL_THREAD: SECCOMP_RET_KILL_THREAD,
  TRAP: SECCOMP_RET_TRAP,
  ERRNO: SECCOMP_RET_ERRNO,
  LOG: SECCOMP_RET_LOG,
  ALLOW: SECCOMP_RET_ALLOW,
} as const;
