import { describe, expect, it } from 'vitest';
import { XenstoreServer } from '../src/server/server.js';
import {
  encodeMessage,
  MessageParser,
  XS_DIRECTORY,
  XS_GET_PERMS,
  XS_MKDIR,
  XS_READ,
  XS_RM,
  XS_SET_PERMS,
  XS_TRANSACTION_START,
  XS_WATCH,
  XS_WRITE,
  type XsMessage,
} from '../src/wire/index.js';

function attach(server: XenstoreServer, domid = 0) {
  const parser = new MessageParser();
  const out: XsMessage[] = [];
  const conn = server.attach(
    domid,
    (b) => {
      out.push(...parser.push(b));
      return true;
    },
    () => undefined,
  );
  let id = 1;
  const req = (type: number, payload: string): string => {
    conn.receive(encodeMessage(type, id++, 0, payload));
    const m = out.pop();
    return m ? `${m.type}:${m.payload.toString('latin1')}` : 'none';
  };
  return { conn, out, req };
}

describe('XenstoreServer, where C xenstored gives no usable reference', () => {
  it('a one-argument request without exactly one trailing nul gets EINVAL (C answers a stale errno)', () => {
    const s = new XenstoreServer();
    const a = attach(s);
    for (const t of [XS_READ, XS_DIRECTORY, XS_GET_PERMS, XS_MKDIR, XS_RM]) {
      expect(a.req(t, '/tool')).toBe('16:EINVAL\0');
      expect(a.req(t, '')).toBe('16:EINVAL\0');
      expect(a.req(t, '/tool\0extra')).toBe('16:EINVAL\0');
    }
  });

  it("a guest's SET_PERMS on @introduceDomain gets EACCES (C 4.17.5 aborts on it)", () => {
    const s = new XenstoreServer();
    s.introduce(1);
    const g = attach(s, 1);
    expect(g.req(XS_SET_PERMS, '@introduceDomain\0r1\0')).toBe('16:EACCES\0');
  });
});

describe('XenstoreServer writes', () => {
  it('the first reply to a read of several requests leaves at once, the rest in one write', () => {
    const s = new XenstoreServer();
    const writes: string[][] = [];
    const conn = s.attach(
      0,
      (b) => {
        writes.push(new MessageParser().push(b).map((m) => `${m.reqId}:${m.payload}`));
        return true;
      },
      () => undefined,
    );
    conn.receive(
      Buffer.concat([
        encodeMessage(XS_WRITE, 1, 0, '/a\0one'),
        encodeMessage(XS_READ, 2, 0, '/a\0'),
        encodeMessage(XS_READ, 3, 0, '/a\0'),
      ]),
    );
    expect(writes).toEqual([['1:OK\0'], ['2:one', '3:one']]);
    // One request, one write.
    conn.receive(encodeMessage(XS_READ, 4, 0, '/a\0'));
    expect(writes[2]).toEqual(['4:one']);
    expect(writes).toHaveLength(3);
  });
});

describe('XenstoreServer quotas are configurable', () => {
  it('nodesPerDomain, watchesPerDomain, transactionsPerConnection, permsPerNode, entrySize', () => {
    const s = new XenstoreServer({
      quotas: {
        nodesPerDomain: 3,
        watchesPerDomain: 1,
        transactionsPerConnection: 0,
        permsPerNode: 2,
        entrySize: 64,
      },
    });
    s.introduce(5);
    const d0 = attach(s);
    d0.req(XS_MKDIR, '/local/domain/5\0');
    d0.req(XS_SET_PERMS, '/local/domain/5\0n5\0');
    const g = attach(s, 5);
    expect(g.req(XS_WRITE, 'a\0x')).toBe('11:OK\0');
    expect(g.req(XS_WRITE, 'b\0x')).toBe('11:OK\0');
    expect(g.req(XS_WRITE, 'c\0x')).toBe('16:ENOSPC\0');
    expect(g.req(XS_WRITE, 'a\0'.concat('v'.repeat(20)))).toBe('11:OK\0');
    expect(g.req(XS_WRITE, 'a\0'.concat('v'.repeat(40)))).toBe('16:ENOSPC\0');
    expect(g.req(XS_SET_PERMS, 'a\0n5\0r1\0')).toBe('14:OK\0');
    expect(g.req(XS_SET_PERMS, 'a\0n5\0r1\0r2\0')).toBe('16:ENOSPC\0');
    g.req(XS_WATCH, 'a\0t1\0');
    g.out.length = 0;
    g.req(XS_WATCH, 'a\0t2\0');
    expect(g.out.map((m) => m.payload.toString())).toEqual(['OK\0']);
    expect(g.req(XS_WATCH, 'a\0t3\0')).toBe('16:E2BIG\0');
    expect(g.req(XS_TRANSACTION_START, '\0')).toBe('6:1\0');
    expect(g.req(XS_TRANSACTION_START, '\0')).toBe('16:ENOSPC\0');
    // dom0 is exempt
    expect(d0.req(XS_WRITE, '/big\0'.concat('v'.repeat(3000)))).toBe('11:OK\0');
  });
});
