"""xen-deprivd driven from outside Node: a toolstack in Python, standard library only.

Starts its own service (socket and state dir under a fresh temp dir, uid pool 3620000:16,
this test's private range) and speaks JSON-RPC 2.0 to it, one JSON object per line:
launch, list, check, destroy of a real confined `qemu-system-x86_64 -M none`, then the
faults (malformed JSON, unknown method, bad params, an oversize line, a non-root peer, a
client that never reads, too many requests in flight), each while a second client's launch
still succeeds. After every test nothing may be left: no process of the pool's uids, no
lease, no jail, no proxy socket, no record.

Needs root and /usr/bin/qemu-system-x86_64; run from apps/depriv-launcher after the build:

    python3 -m unittest -v test/python/test_deprivd.py

Nothing here measures time: the deadlines only stop a hung run.
"""

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

PKG = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPRIVD = os.path.join(PKG, "dist", "deprivd.js")
NODE = os.environ.get("NODE", "node")
QEMU = "/usr/bin/qemu-system-x86_64"

POOL_FIRST = 3_620_000
POOL_COUNT = 16
REAPER_UID = POOL_FIRST + POOL_COUNT  # the service's reaper uid: first + count
FOREIGN_UID = 3_620_099  # the non-root peer of test_non_root_peer
OUR_UIDS = set(range(POOL_FIRST, REAPER_UID + 1)) | {FOREIGN_UID}

# Hang guards only (a stuck service fails the run instead of blocking it); never asserted on.
GUARD = 120.0
MAX_LINE = 1 << 20  # the service's request line cap
MAX_IN_FLIGHT = 16  # the service's per-connection cap

PARSE, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
BUSY, FORBIDDEN = -32006, -32007

SKIP = None
if os.geteuid() != 0:
    SKIP = "needs root (the service changes uids, namespaces and mounts)"
elif not os.path.exists(QEMU):
    SKIP = f"{QEMU} is missing"
elif not os.path.exists(DEPRIVD):
    SKIP = f"{DEPRIVD} is missing: npm run build first"


class Closed(Exception):
    """The service closed (or reset) the connection."""


class Client:
    """One JSON-RPC connection; replies are matched by id, notifications kept aside."""

    def __init__(self, path, timeout=GUARD):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.next_id = 1
        self.replies = {}
        self.notifications = []

    def close(self):
        self.sock.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, method, params=None, id_=None):
        if id_ is None:
            id_ = self.next_id
            self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": id_, "method": method}
        if params is not None:
            msg["params"] = params
        self.send_raw(json.dumps(msg).encode() + b"\n")
        return id_

    def read_line(self):
        """The next line, or Closed at EOF or reset."""
        while b"\n" not in self.buf:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError as e:
                raise Closed("reset") from e
            if not chunk:
                raise Closed("eof")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def read_msg(self):
        return json.loads(self.read_line())

    def reply(self, id_):
        """The reply to request `id_` (replies to others and notifications are kept)."""
        while id_ not in self.replies:
            msg = self.read_msg()
            if "id" not in msg:
                self.notifications.append(msg)
            else:
                self.replies[msg["id"]] = msg
        return self.replies.pop(id_)

    def call(self, method, params=None):
        return self.reply(self.send(method, params))

    def result(self, method, params=None):
        r = self.call(method, params)
        if "result" not in r:
            raise AssertionError(f"{method} {params}: expected a result, got {r}")
        return r["result"]

    def at_eof(self):
        """True once the service has closed the connection (after any data still queued)."""
        try:
            while True:
                self.read_line()
        except Closed:
            return True


def proc_uids(pid):
    """Real, effective, saved and fs uid of a process; None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return [int(x) for x in line.split()[1:5]]
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def proc_state(pid):
    """The State: line of a process ('Z (zombie)', ...); None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("State:"):
                    return line.split(":", 1)[1].strip()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def our_processes():
    """Every process holding one of this test's uids (pool, reaper, foreign peer)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        uids = proc_uids(int(name))
        if uids and OUR_UIDS.intersection(uids):
            found.append((int(name), uids, proc_state(int(name))))
    return found


def listdir(path):
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


def until(cond, what, limit=GUARD):
    """Polls cond() until true; fails (hang guard) after `limit` seconds."""
    deadline = time.monotonic() + limit
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what}")
        time.sleep(0.02)


@unittest.skipIf(SKIP is not None, SKIP or "")
class DeprivdOverRpc(unittest.TestCase):
    service = None

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="xd-py-")
        # Traversable (not listable) by the non-root peer, so the socket's own mode is what
        # stops it; the state dir below is the service's, 0700.
        os.chmod(cls.tmp, 0o711)
        cls.sock = os.path.join(cls.tmp, "deprivd.sock")
        cls.state = os.path.join(cls.tmp, "state")
        cls.log_path = os.path.join(cls.tmp, "deprivd.log")
        cls.log = open(cls.log_path, "wb")
        try:
            cls.service = subprocess.Popen(
                [NODE, DEPRIVD, "--socket", cls.sock, "--state-dir", cls.state,
                 "--pool", f"{POOL_FIRST}:{POOL_COUNT}"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=cls.log,
            )
            until(lambda: cls.service.poll() is not None or b'"listening"' in cls.read_log(),
                  "the service to listen")
            if cls.service.poll() is not None:
                raise AssertionError(f"xen-deprivd exited {cls.service.returncode}:\n"
                                     + cls.read_log().decode(errors="replace"))
        except BaseException:
            cls.stop_service()
            raise

    @classmethod
    def read_log(cls):
        with open(cls.log_path, "rb") as f:
            return f.read()

    @classmethod
    def stop_service(cls):
        """Destroys every DM, ends the service by its pid, and kills whatever is left of the
        pool's uids by pid; removes the temp dir. Runs however the tests went."""
        problems = []
        svc = cls.service
        if svc is not None and svc.poll() is None:
            try:
                c = Client(cls.sock, timeout=30)
                for dm in c.result("list")["dms"]:
                    r = c.call("destroy", {"domid": dm["domid"]})
                    if "error" in r:
                        problems.append(f"destroy {dm['domid']}: {r['error']}")
                c.close()
            except Exception as e:  # noqa: BLE001 - cleanup goes on regardless
                problems.append(f"destroying the DMs: {e!r}")
            svc.send_signal(signal.SIGTERM)
            try:
                svc.wait(30)
            except subprocess.TimeoutExpired:
                problems.append("the service ignored SIGTERM: SIGKILL")
                svc.kill()
                svc.wait()
        for pid, uids, state in our_processes():
            problems.append(f"left behind: pid {pid} uids {uids} state {state}: SIGKILL")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if hasattr(cls, "log"):
            cls.log.close()
        if problems and hasattr(cls, "log_path"):
            print("\n".join(problems))
            print("service log (tail):")
            print("\n".join(cls.read_log().decode(errors="replace").splitlines()[-30:]))
        if hasattr(cls, "tmp"):
            shutil.rmtree(cls.tmp, ignore_errors=True)
        return problems

    @classmethod
    def tearDownClass(cls):
        problems = cls.stop_service()
        if problems:
            raise AssertionError("; ".join(problems))

    def setUp(self):
        self.clients = []

    def tearDown(self):
        for c in self.clients:
            c.close()
        # Whatever a failed test left running is destroyed before the next one starts.
        if self.service.poll() is None:
            c = Client(self.sock)
            for dm in c.result("list")["dms"]:
                c.call("destroy", {"domid": dm["domid"]})
            c.close()

    # ── helpers ──────────────────────────────────────────────────────────────────────────

    def client(self):
        c = Client(self.sock)
        self.clients.append(c)
        return c

    def leftovers(self):
        """What a DM leaves if its teardown is incomplete (empty when all is clean)."""
        st = self.state
        left = {
            "processes": our_processes(),
            "leases": [n for n in listdir(os.path.join(st, "leases")) if not n.endswith(".lock")],
            "jails": [n for n in listdir(st) if n.startswith("dm-")],
            "proxy sockets": [n for n in listdir(os.path.join(st, "xs-proxy"))
                              if n.endswith(".sock")],
            "launch records": listdir(os.path.join(st, "state")),
            "service records": listdir(os.path.join(st, "service")),
        }
        return {k: v for k, v in left.items() if v}

    def assert_nothing_left(self):
        # A DM's last process may take a moment to vanish from /proc after its reaping.
        try:
            until(lambda: not self.leftovers(), "nothing left", limit=10)
        except AssertionError:
            pass
        self.assertEqual(self.leftovers(), {})
        self.assertIsNone(self.service.poll(), "the service is still running")

    def assert_running(self, result, domid):
        """A launch result names a live QEMU of the pool that the service lists as running."""
        self.assertEqual(result["domid"], domid)
        self.assertEqual(result["status"], "running")
        self.assertIn(result["uid"], range(POOL_FIRST, POOL_FIRST + POOL_COUNT))
        self.assertEqual(proc_uids(result["pid"]), [result["uid"]] * 4)
        with open(f"/proc/{result['pid']}/cmdline", "rb") as f:
            self.assertIn(b"qemu-system-x86_64", f.read())
        c = self.client()
        dms = {d["domid"]: d for d in c.result("list")["dms"]}
        self.assertEqual(dms[domid]["state"], "running")
        self.assertEqual(dms[domid]["pid"], result["pid"])

    def destroyed(self, c, domid, pid):
        r = c.result("destroy", {"domid": domid})
        self.assertEqual(r["domid"], domid)
        self.assertEqual(r["pid"], pid)
        self.assertEqual(r["reason"], "destroyed")
        self.assertEqual(r["errors"], [])
        # Dead when destroy answers: gone, or a zombie its parent (the service) has yet to
        # reap; assert_nothing_left then waits for it to vanish.
        state = proc_state(pid)
        self.assertTrue(state is None or state.startswith("Z"), f"pid {pid} is {state}")

    def during_second_launch(self, domid, fault, clean_after=True):
        """Runs fault() while a second client's launch of `domid` is under way; that launch
        must succeed with a running DM, which is destroyed after."""
        b = self.client()
        lid = b.send("launch", {"domid": domid})
        fault()
        r = b.reply(lid)
        self.assertIn("result", r, f"the second client's launch failed: {r}")
        self.assert_running(r["result"], domid)
        self.destroyed(b, domid, r["result"]["pid"])
        if clean_after:
            self.assert_nothing_left()

    def assert_error(self, reply, code, id_=None):
        self.assertIn("error", reply, reply)
        self.assertEqual(reply["jsonrpc"], "2.0")
        self.assertEqual(reply["error"]["code"], code, reply)
        self.assertIsInstance(reply["error"]["message"], str)
        self.assertEqual(reply.get("id", "absent"), id_)

    # ── the lifecycle ────────────────────────────────────────────────────────────────────

    def test_0_version_and_status(self):
        c = self.client()
        v = c.result("version")
        self.assertEqual(v["name"], "xen-deprivd")
        self.assertEqual(v["api"], 1)
        s = c.result("status")
        self.assertEqual(s["pid"], self.service.pid)
        self.assertEqual(s["target"], "embedded")
        self.assertEqual(s["stateDir"], self.state)
        self.assertEqual(s["dms"], 0)
        self.assertEqual(os.stat(self.sock).st_mode & 0o777, 0o600)

    def test_1_launch_list_check_destroy(self):
        c = self.client()
        r = c.result("launch", {"domid": 1})
        self.assert_running(r, 1)
        pid = r["pid"]

        dms = c.result("list")["dms"]
        self.assertEqual(len(dms), 1)
        dm = dms[0]
        self.assertEqual((dm["domid"], dm["pid"], dm["uid"]), (1, pid, r["uid"]))
        self.assertEqual((dm["mode"], dm["target"], dm["kind"]), ("jail", "embedded", "config"))
        self.assertEqual((dm["state"], dm["adopted"]), ("running", False))

        chk = c.result("check", {"domid": 1})
        self.assertEqual((chk["domid"], chk["pid"]), (1, pid))
        self.assertTrue(chk["ok"], chk)
        self.assertEqual(chk["failed"], [])
        self.assertGreater(len(chk["checks"]), 0)
        self.assertEqual([x["name"] for x in chk["checks"] if not x["ok"]], [])
        self.assertEqual(chk["passed"], len(chk["checks"]))

        # While it runs, its lease, jail and proxy socket exist.
        left = self.leftovers()
        self.assertEqual(left["jails"], ["dm-1"])
        self.assertEqual(left["proxy sockets"], ["dm-1.sock"])
        self.assertEqual(len(left["leases"]), 1)

        self.destroyed(c, 1, pid)
        self.assertEqual(c.result("list")["dms"], [])
        # The launching connection hears that its DM ended.
        if not c.notifications:
            c.notifications.append(c.read_msg())
        self.assertEqual(c.notifications[0]["method"], "exited")
        self.assertEqual(c.notifications[0]["params"]["domid"], 1)
        self.assertEqual(c.notifications[0]["params"]["reason"], "destroyed")
        self.assert_nothing_left()
        self.assert_error(c.call("check", {"domid": 1}), -32002, id_=c.next_id - 1)
        self.assert_error(c.call("destroy", {"domid": 1}), -32002, id_=c.next_id - 1)

    def test_2_duplicate_domid_refused(self):
        c = self.client()
        r = c.result("launch", {"domid": 2})
        again = c.call("launch", {"domid": 2})
        self.assert_error(again, -32001, id_=c.next_id - 1)
        self.assertEqual([d["pid"] for d in c.result("list")["dms"]], [r["pid"]])
        self.destroyed(c, 2, r["pid"])
        self.assert_nothing_left()

    # ── the faults, each during a second client's launch ─────────────────────────────────

    def test_malformed_json(self):
        a = self.client()

        def fault():
            a.send_raw(b'{"jsonrpc":"2.0","id":7,"method":\n')
            self.assert_error(a.read_msg(), PARSE, id_=None)
            a.send_raw(b"\x00\xff not json at all\n")
            self.assert_error(a.read_msg(), PARSE, id_=None)
            # The connection stays usable.
            self.assertEqual(a.result("version")["name"], "xen-deprivd")

        self.during_second_launch(3, fault)

    def test_unknown_method(self):
        a = self.client()

        def fault():
            self.assert_error(a.call("no_such_method", {}), METHOD_NOT_FOUND, id_=1)
            self.assert_error(a.call("__proto__"), METHOD_NOT_FOUND, id_=2)
            self.assertEqual(a.result("version")["name"], "xen-deprivd")

        self.during_second_launch(4, fault)

    def test_bad_params(self):
        a = self.client()
        cases = [
            ("launch", {"domid": "x"}, "domid"),
            ("launch", {"domid": 0}, "domid"),
            ("launch", {}, "domid"),
            ("launch", {"domid": 1, "mode": "bogus"}, "mode"),
            ("launch", {"domid": 1, "bogus": 1}, "bogus"),
            ("plan", {"domid": "x"}, "domid"),
            ("destroy", {"domid": 0}, "domid"),
            ("destroy", {"domid": "x"}, "domid"),
            ("check", {"domid": 1.5}, "domid"),
            ("check", {"domid": 1, "bogus": True}, "bogus"),
            ("list", {"bogus": 1}, "bogus"),
        ]
        failures = []

        def fault():
            for method, params, key in cases:
                r = a.call(method, params)
                err = r.get("error") or {}
                named = key in err.get("message", "") or (err.get("data") or {}).get("key") == key
                if err.get("code") != INVALID_PARAMS or not named:
                    failures.append(f"{method} {json.dumps(params)} -> {json.dumps(r)}")
            # Nothing was started by any of them.
            self.assertLessEqual({d["domid"] for d in a.result("list")["dms"]}, {5})

        self.during_second_launch(5, fault)
        if failures:
            self.fail("expected -32602 naming the key, got:\n  " + "\n  ".join(failures))

    def test_oversize_line(self):
        a = self.client()
        big = (b'{"jsonrpc":"2.0","id":1,"method":"version","params":{"pad":"'
               + b"x" * (MAX_LINE + 1024) + b'"}}\n')

        def fault():
            try:
                a.send_raw(big)
            except (BrokenPipeError, ConnectionResetError):
                pass  # The service may close before the whole line is sent.
            self.assert_error(a.read_msg(), INVALID_REQUEST, id_=None)
            self.assertTrue(a.at_eof())

        self.during_second_launch(6, fault)

    def test_non_root_peer(self):
        def as_foreign_uid():
            """Connects as uid/gid FOREIGN_UID in a forked child; returns what it saw."""
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # child: no exceptions may escape into the test runner
                out = {}
                try:
                    os.close(r)
                    os.setgroups([])
                    os.setgid(FOREIGN_UID)
                    os.setuid(FOREIGN_UID)
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    s.settimeout(GUARD)
                    try:
                        s.connect(self.sock)
                    except OSError as e:
                        out["connect_errno"] = e.errno
                    else:
                        data = b""
                        while True:
                            try:
                                chunk = s.recv(65536)
                            except ConnectionResetError:
                                break
                            if not chunk:
                                break
                            data += chunk
                        out["data"] = data.decode(errors="replace")
                        out["eof"] = True
                except BaseException as e:  # noqa: BLE001
                    out["child_error"] = repr(e)
                os.write(w, json.dumps(out).encode())
                os._exit(0)
            os.close(w)
            chunks = []
            while True:
                b = os.read(r, 65536)
                if not b:
                    break
                chunks.append(b)
            os.close(r)
            os.waitpid(pid, 0)
            return json.loads(b"".join(chunks))

        seen = {}

        def fault():
            # Mode 0600: the kernel stops a non-root connect already.
            self.assertEqual(os.stat(self.sock).st_mode & 0o777, 0o600)
            seen["0600"] = as_foreign_uid()
            # Widened: the service's own peer check (SO_PEERCRED) must refuse it.
            os.chmod(self.sock, 0o666)
            try:
                seen["0666"] = as_foreign_uid()
            finally:
                os.chmod(self.sock, 0o600)

        self.during_second_launch(7, fault)
        self.assertEqual(seen["0600"], {"connect_errno": errno.EACCES})
        wide = seen["0666"]
        self.assertNotIn("child_error", wide)
        self.assertNotIn("connect_errno", wide)
        self.assertTrue(wide["eof"], "the refused peer's connection is closed")
        lines = [x for x in wide["data"].split("\n") if x]
        self.assertEqual(len(lines), 1, wide)
        self.assert_error(json.loads(lines[0]), FORBIDDEN, id_=None)
        self.assertIn(b'"refused-peer"', self.read_log())
        self.assertIn(str(FOREIGN_UID).encode(), self.read_log())

    def test_client_that_never_reads_is_dropped(self):
        a = self.client()
        batch = b"".join(
            json.dumps({"jsonrpc": "2.0", "id": i, "method": m}).encode() + b"\n"
            for i, m in enumerate(["status", "list"] * 1000)
        )
        sent = {"requests": 0, "dropped": False}

        def fault():
            # Up to 64 MiB of requests, never reading a reply: the service must drop us long
            # before (its limit is 4 MiB of queued replies).
            while sent["requests"] < 64 * 2**20 // 30:
                try:
                    a.send_raw(batch)
                except (BrokenPipeError, ConnectionResetError):
                    sent["dropped"] = True
                    break
                sent["requests"] += 2000
            # Whatever was queued in the kernel before the drop can still be read; then EOF.
            a.sock.settimeout(GUARD)
            self.assertTrue(a.at_eof())
            # The service is healthy for everyone else.
            self.assertEqual(self.client().result("status")["pid"], self.service.pid)

        self.during_second_launch(8, fault)
        self.assertTrue(sent["dropped"], f"still connected after {sent['requests']} requests")
        self.assertIn(b'"slow-reader"', self.read_log())

    def test_in_flight_cap(self):
        a = self.client()
        r = a.result("launch", {"domid": 9})
        n = 3 * MAX_IN_FLIGHT
        outcome = {}

        def fault():
            # All n checks in one write, so they reach the service in one read: the first 16
            # are in flight (the report is computed on the host worker) when the rest arrive.
            a.send_raw(b"".join(
                json.dumps({"jsonrpc": "2.0", "id": 100 + i, "method": "check",
                            "params": {"domid": 9}}).encode() + b"\n"
                for i in range(n)))
            replies = [a.reply(100 + i) for i in range(n)]
            outcome["ok"] = [x for x in replies if "result" in x]
            outcome["busy"] = [x for x in replies if x.get("error", {}).get("code") == BUSY]
            outcome["other"] = [x for x in replies if x not in outcome["ok"]
                                and x not in outcome["busy"]]

        self.during_second_launch(10, fault, clean_after=False)
        self.assertEqual(outcome["other"], [])
        self.assertEqual(len(outcome["ok"]), MAX_IN_FLIGHT)
        self.assertEqual(len(outcome["busy"]), n - MAX_IN_FLIGHT)
        for x in outcome["ok"]:
            self.assertTrue(x["result"]["ok"], x)
        # Below the cap again once answered.
        self.assertTrue(a.result("check", {"domid": 9})["ok"])
        self.destroyed(a, 9, r["pid"])
        self.assert_nothing_left()


if __name__ == "__main__":
    unittest.main(verbosity=2)
