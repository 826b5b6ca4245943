import {
  compileSeccomp,
  deviceModelAllowlist,
  disassembleSeccomp,
} from '@xen-depriv/privcmd-filter';
import { processOutput } from '../output.js';
import type { RegisterCommand } from './index.js';

export const registerAudit: RegisterCommand = (program, globals) => {
  const audit = program.command('audit').description('print the audits and the compiled filters');
  audit
    .command('seccomp')
    .description("the device model's seccomp allowlist and its compiled BPF program, disassembled")
    .action(() => {
      const out = processOutput(Boolean(globals().json));
      const program = compileSeccomp(deviceModelAllowlist);
      if (out.json) {
        out.line(
          JSON.stringify({
            ok: true,
            allowlist: deviceModelAllowlist,
            instructions: program.length / 8,
            programHex: Buffer.from(program).toString('hex'),
          }),
        );
        return;
      }
      out.line(
        `# device-model seccomp filter: ${deviceModelAllowlist.syscalls.length} syscalls, ${program.length / 8} BPF instructions`,
      );
      out.line(disassembleSeccomp(program));
    });
};
