import { describe, expect, it } from 'vitest';
import {
  type PolicyContext,
  PrivcmdDeniedError,
  qemuXenHvmProfile,
  SimPrivcmd,
} from '../src/index.js';
import { dmOp, OP } from './helpers/dmop-bytes.js';

const ctx: PolicyContext = {
  guestMemoryEndGfn: 0x40000n,
  ioRanges: [{ type: 'port', start: 0x1f0n, end: 0x1f7n }],
};

describe('SimPrivcmd over a recording backend (no hypervisor)', () => {
  it('forwards allowed requests and their result, refuses the rest before the backend', () => {
    const seen: number[] = [];
    const sim = new SimPrivcmd({
      domid: 3,
      profile: qemuXenHvmProfile,
      context: ctx,
      backend: {
        dmOp(domid: number, bufs: Uint8Array[]) {
          seen.push((bufs[0] as Uint8Array)[0] as number);
          return `ok ${domid}`;
        },
      },
    });
    expect(sim.dmOp(3, [dmOp(OP.create_ioreq_server)])).toBe('ok 3');
    expect(() => sim.dmOp(4, [dmOp(OP.create_ioreq_server)])).toThrow(PrivcmdDeniedError);
    expect(() => sim.dmOp(3, [dmOp(OP.inject_event)])).toThrow(
      'XEN_DMOP_inject_event is not allowed',
    );
    expect(seen).toEqual([OP.create_ioreq_server]);
    expect(sim.counts).toEqual({ allowed: 1, denied: 2 });
    sim.close();
    expect(() => sim.dmOp(3, [dmOp(OP.create_ioreq_server)])).toThrow('SimPrivcmd is closed');
  });
  it('refuses a domid outside 0..32751 and a profile without context', () => {
    const backend = { dmOp: () => 0 };
    expect(() => new SimPrivcmd({ domid: 0x7ff0, profile: null, backend })).toThrow(
      'SimPrivcmd: expected a guest domid 0..32751, got 32752',
    );
    expect(() => new SimPrivcmd({ domid: 1, profile: qemuXenHvmProfile, backend })).toThrow(
      'SimPrivcmd: profile qemu-xen-hvm needs a PolicyContext, got none',
    );
  });
});
