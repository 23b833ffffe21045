"""The resolver under abuse, for real: connection floods, slowloris, a thread cap,
malformed names, a dead serving loop.

Sandboxes and the daemon are made as in test_dns_resolver.py (the daemon inside the
simulated host's namespace through ``ensure_resolver``); abusive clients are sockets the
test opens inside sandboxes (``in_netns``), normal clients are ``dig @127.0.0.11``.
Every daemon a test starts is stopped by its pid (``stop_resolver``) at the end.
"""
import os
import re
import socket
import struct
import sys
import threading
import time

import pytest

from engine_helpers import HostEngine
from harness import eventually, in_netns
from test_dns_resolver import (
    PYTHON, dig, endpoint, make_sandbox, start_resolver, write_config,
)

from ansible_collections.cnm.core.plugins.module_utils.dns import service
from ansible_collections.cnm.core.plugins.module_utils.dns.resolver import tcp

pytestmark = pytest.mark.integration

RCODE_FORMERR = 1


# --- helpers ------------------------------------------------------------------------------
def resolver_pid(host):
    return service.resolver_status(host.run_dir)["pid"]


def proc_status(pid):
    """``(threads, rss in KiB)`` of process ``pid``."""
    with open("/proc/%d/status" % pid) as f:
        text = f.read()
    return (int(re.search(r"^Threads:\s+(\d+)", text, re.M).group(1)),
            int(re.search(r"^VmRSS:\s+(\d+)", text, re.M).group(1)))


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def timed_dig(host, sandbox, *args):
    """``dig`` in ``sandbox``: (parsed answer, dig's query time in ms)."""
    r = dig(host, sandbox, *args)
    m = re.search(r"Query time: (\d+) msec", r.out)
    return r, int(m.group(1)) if m else None


def name_wire(labels):
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


def raw_query(qid, qname_wire, edns=False):
    """A standard query (RD) for ``qname_wire`` (raw bytes, anything goes), type A."""
    msg = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 1 if edns else 0)
    msg += qname_wire + struct.pack("!HH", 1, 1)
    if edns:
        msg += b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
    return msg


def ask(netns, msg, tcp=False, timeout=2.0):
    """Send ``msg`` to 127.0.0.11:53 from inside ``netns`` over UDP (or a new TCP
    connection): (reply, seconds)."""
    with in_netns(netns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
    with s:
        s.settimeout(timeout)
        t0 = time.monotonic()
        s.connect(("127.0.0.11", 53))
        if not tcp:
            s.send(msg)
            return s.recv(4096), time.monotonic() - t0
        s.sendall(struct.pack("!H", len(msg)) + msg)
        n = struct.unpack("!H", _recv_exact(s, 2))[0]
        return _recv_exact(s, n), time.monotonic() - t0


def _recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return buf


def connect_many(netns, count):
    """``count`` TCP connections to 127.0.0.11:53 from inside ``netns`` (non-blocking)."""
    socks = []
    with in_netns(netns):
        for _i in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.connect(("127.0.0.11", 53))
            s.setblocking(False)
            socks.append(s)
    return socks


def closed_by_peer(s):
    """True when the server closed ``s`` (EOF or reset), False while it stays open."""
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


class RawUpstream:
    """A fake upstream (UDP) in the simulated host: records every datagram and answers
    NXDOMAIN (the query echoed with QR set)."""

    def __init__(self, host, address="127.0.0.53"):
        with in_netns(host.path):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind((address, 53))
        self.sock.settimeout(0.1)
        self.received = []
        self.stopped = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopped:
            try:
                d, addr = self.sock.recvfrom(65535)
            except OSError:
                continue
            self.received.append(d)
            if len(d) >= 12:
                self.sock.sendto(d[:2] + bytes((d[2] | 0x80, 0x83)) + d[4:], addr)

    def stop(self):
        self.stopped = True
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def resolver(host):
    """Sandbox ``client`` on network app, resolver running; stopped by its pid after."""
    make_sandbox(host, "client")
    write_config(host, {"client": ["app"]},
                 {"app": [endpoint("client", "10.70.0.2", ["svc"])]})
    assert start_resolver(host) is True
    try:
        yield host
    finally:
        service.stop_resolver(host.run_dir, use_systemd=False)


def add_sandboxes(host, names):
    """Sandboxes ``names`` next to ``client`` (network app), applied by the daemon."""
    for name in names:
        make_sandbox(host, name)
    eps = [endpoint("client", "10.70.0.2", ["svc"])] + [
        endpoint(name, "10.70.1.%d" % (i + 1)) for i, name in enumerate(names)]
    write_config(host, dict({"client": ["app"]}, **{n: ["app"] for n in names}),
                 {"app": eps})
    service.notify_resolver(host.run_dir, reload=True)


# --- connection floods and slowloris -------------------------------------------------------
def test_connection_flood_and_slowloris_leave_udp_and_tcp_answering(resolver, capsys):
    host = resolver
    pid = resolver_pid(host)
    attackers = ["a%d" % i for i in range(10)]
    add_sandboxes(host, attackers)
    threads0, rss0 = proc_status(pid)
    fds0 = open_fds(pid)
    per = tcp.MAX_CONNS_PER_SANDBOX + 16          # past the cap of every sandbox...
    assert per * len(attackers) > tcp.MAX_CONNS   # ...and past the cap of all
    socks = {name: connect_many(host.sandbox_path(name), per) for name in attackers}
    # slowloris on the newest 8 of each sandbox: one byte of a query every 0.5 s
    drip = {name: socks[name][-8:] for name in attackers}
    msg = raw_query(7, name_wire([b"svc"]))
    query = struct.pack("!H", len(msg)) + msg     # 23 bytes: never complete in 8 s
    samples, peak, worst = [], (threads0, rss0), 0
    start = time.monotonic()
    dripped = 0
    while time.monotonic() - start < 8.0:
        for name in attackers:
            for s in drip[name]:
                try:
                    s.send(query[dripped:dripped + 1])
                except OSError:
                    pass
        dripped += 1
        for args in ((), ("+tcp",)):
            r, ms = timed_dig(host, "client", *args, "svc")
            assert (r.status, r.rdata) == ("NOERROR", ["10.70.0.2"]), r.out
            samples.append(ms)
        # a sandbox at its cap still gets TCP answers: its oldest idle connection goes
        reply, secs = ask(host.sandbox_path(attackers[dripped % 10]),
                          raw_query(9, name_wire([b"svc"])), tcp=True)
        assert reply[:2] == struct.pack("!H", 9) and reply[3] & 0x0F == 0
        worst = max(worst, secs)
        threads, rss = proc_status(pid)
        peak = (max(peak[0], threads), max(peak[1], rss))
        assert open_fds(pid) <= fds0 + tcp.MAX_CONNS + 8
        time.sleep(0.4)
    # every dripping connection was closed within a few seconds of its first byte
    for name in attackers:
        assert all(closed_by_peer(s) for s in drip[name]), name
    open_now = sum(not closed_by_peer(s) for ss in socks.values() for s in ss)
    assert open_now <= tcp.MAX_CONNS
    for ss in socks.values():
        for s in ss:
            s.close()
    assert resolver_pid(host) == pid and service.resolver_health(host.run_dir) is True
    assert max(samples) <= 100, samples
    assert worst < 0.1, worst
    assert peak[0] <= threads0 + tcp.FORWARD_WORKERS, (threads0, peak)
    assert peak[1] <= rss0 + 20 * 1024, (rss0, peak)          # KiB
    with capsys.disabled():
        print("\n[abuse] %d connections from %d sandboxes, 80 dripping; dig query "
              "times (ms) max %d median %d over %d; TCP from a capped sandbox max "
              "%.1f ms; threads %d -> %d; RSS %d -> %d KiB; still open %d"
              % (per * len(attackers), len(attackers), max(samples),
                 sorted(samples)[len(samples) // 2], len(samples), worst * 1000,
                 threads0, peak[0], rss0, peak[1], open_now))


def test_idle_connections_are_closed_and_a_started_query_must_complete(resolver):
    netns = resolver.sandbox_path("client")
    idle, slow, fast = connect_many(netns, 3)
    t0 = time.monotonic()
    slow.send(b"\x00")                                 # first byte of a query, no more
    msg = raw_query(3, name_wire([b"svc"]))
    fast.send(struct.pack("!H", len(msg)) + msg)
    assert eventually(lambda: closed_by_peer(slow), timeout=tcp.MESSAGE_TIMEOUT + 2)
    assert time.monotonic() - t0 < tcp.MESSAGE_TIMEOUT + 1.0
    assert not closed_by_peer(idle)                    # idle: 10 s from the accept
    fast.setblocking(True)
    fast.settimeout(2)
    n = struct.unpack("!H", _recv_exact(fast, 2))[0]
    assert _recv_exact(fast, n)[:2] == msg[:2]
    assert eventually(lambda: closed_by_peer(idle), timeout=tcp.IDLE_TIMEOUT + 2)
    for s in (idle, slow, fast):
        s.close()


# --- a thread cap (pids cgroup) ---------------------------------------------------------
def _pids_cgroup_root():
    """A writable pids cgroup hierarchy: cgroup v2 at /sys/fs/cgroup if it has the pids
    controller, else the v1 pids hierarchy; None (with the reason) when neither."""
    try:
        with open("/sys/fs/cgroup/cgroup.controllers") as f:
            if "pids" in f.read().split():
                return "/sys/fs/cgroup", "v2"
    except OSError:
        pass
    if os.path.exists("/sys/fs/cgroup/pids/cgroup.procs"):
        return "/sys/fs/cgroup/pids", "v1"
    return None, "no cgroup v2 with the pids controller and no v1 pids hierarchy"


def _cgroup_of(pid, version):
    with open("/proc/%d/cgroup" % pid) as f:
        for line in f:
            hid, controllers, path = line.rstrip("\n").split(":", 2)
            if (version == "v2" and hid == "0") or "pids" in controllers.split(","):
                return path
    return "/"


def test_tcp_answers_when_the_resolver_cannot_start_a_thread(resolver, upstream_raw,
                                                             capsys):
    host = resolver
    root, version = _pids_cgroup_root()
    if root is None:
        pytest.skip(version)
    pid = resolver_pid(host)
    parent = os.path.join(root, _cgroup_of(pid, version).lstrip("/"))
    child = os.path.join(parent, "cnmt-pids-%d" % pid)
    try:
        os.mkdir(child)
    except OSError as e:
        pytest.skip("cannot make a %s pids cgroup under %s: %s" % (version, parent, e))
    try:
        threads, _rss = proc_status(pid)
        with open(os.path.join(child, "pids.max"), "w") as f:
            f.write(str(threads))               # no new thread in the resolver
        with open(os.path.join(child, "cgroup.procs"), "w") as f:
            f.write(str(pid))
        netns = host.sandbox_path("client")
        idle = connect_many(netns, 50)
        for _i in range(5):
            r, ms = timed_dig(host, "client", "+tcp", "svc")
            assert (r.status, r.rdata) == ("NOERROR", ["10.70.0.2"]), r.out
            assert ms <= 100
        # a forwarded TCP query needs a worker thread, which cannot start: SERVFAIL at
        # once (never a hang), and serving goes on
        reply, secs = ask(netns, raw_query(5, name_wire([b"example", b"test"])), tcp=True)
        assert reply[3] & 0x0F in (0, 2, 3) and secs < 1.5
        assert dig(host, "client", "svc").rdata == ["10.70.0.2"]
        with open(os.path.join(child, "pids.events")) as f:
            events = f.read()
        assert proc_status(pid)[0] <= threads
        assert resolver_pid(host) == pid and service.resolver_health(host.run_dir)
        for s in idle:
            s.close()
        with capsys.disabled():
            print("\n[pids] cgroup %s (%s): pids.max %d; %s; TCP answered"
                  % (child, version, threads, events.strip().replace("\n", ", ")))
    finally:
        try:
            with open(os.path.join(parent, "cgroup.procs"), "w") as f:
                f.write(str(pid))
        except ProcessLookupError:
            pass                                # (the resolver died: the test failed)
        os.rmdir(child)


@pytest.fixture
def upstream_raw(host):
    up = RawUpstream(host)
    try:
        yield up
    finally:
        up.stop()


# --- malformed names --------------------------------------------------------------------
LONG = name_wire([b"a" * 63] * 4)                       # 257 octets
MALFORMED = {
    "257 octets": LONG,
    "418 octets": name_wire([b"b" * 63] * 6 + [b"c" * 32]),
    "label of 64": name_wire([b"x" * 64, b"test"]),
    "pointer into the header": b"\x03www\xc0\x04",
    "pointer loop": b"\x03www\xc0\x0c",
    "pointer past the end": b"\xc0\xff",
    "reserved label type": b"\x81abc\x00",
}


def test_malformed_names_get_formerr_at_once_and_nothing_goes_upstream(
        resolver, upstream_raw):
    netns = resolver.sandbox_path("client")
    for i, (what, qname) in enumerate(sorted(MALFORMED.items())):
        for edns in (False, True):
            msg = raw_query(100 + i, qname, edns)
            for tcp_ in (False, True):
                reply, secs = ask(netns, msg, tcp_)
                assert reply[:2] == msg[:2] and reply[2] & 0x80, (what, reply)
                assert reply[3] & 0x0F == RCODE_FORMERR, (what, tcp_, reply)
                assert secs < 0.5, (what, tcp_, secs)        # (SERVFAIL took 1 s)
    time.sleep(0.3)
    assert upstream_raw.received == []
    # the upstream is there: a name of 255 octets (the longest) is forwarded to it
    longest = name_wire([b"a" * 63] * 3 + [b"b" * 61])
    assert len(longest) == 255
    reply, _secs = ask(netns, raw_query(7, longest))
    assert reply[3] & 0x0F == 3                         # the fake upstream's NXDOMAIN
    assert len(upstream_raw.received) == 1 and longest in upstream_raw.received[0]


# --- a dead serving loop ------------------------------------------------------------------
FAULTY_RUNNER = '''"""The installed resolver, whose TCP loop ends when a trigger file appears."""
import os
import sys

sys.path.insert(0, %(base)r)
from resolver import daemon, tcp  # noqa: E402

_expire = tcp.TcpServer._expire


def _expire_or_end(self, now):
    if os.path.exists(%(trigger)r):
        raise SystemExit("the test ends the TCP loop")     # not caught: the thread ends
    return _expire(self, now)


tcp.TcpServer._expire = _expire_or_end
raise SystemExit(daemon.main())
'''


def test_resolver_with_a_dead_tcp_loop_is_restarted_by_the_next_module_run(host):
    eng = HostEngine(host)
    eng.network(name="app", ipam={"config": [{"subnet": "10.71.0.0/24"}]})
    eng.endpoint(network="app", sandbox="web", ipv4_address="10.71.0.10")
    paths = service.resolver_paths(host.run_dir)
    base = os.path.dirname(service.install_resolver(host.state_dir))
    trigger = os.path.join(host.root, "end-tcp-loop")
    runner = os.path.join(host.root, "faulty", "cnm-resolver.py")   # (a name of ours)
    os.makedirs(os.path.dirname(runner))
    with open(runner, "w") as f:
        f.write(FAULTY_RUNNER % {"base": base, "trigger": trigger})
    service.stop_resolver(host.run_dir, use_systemd=False)
    host.run([PYTHON, runner, "--config", paths["config"], "--pidfile", paths["pidfile"],
              "--log", paths["log"], "--daemonize"])
    faulty = resolver_pid(host)
    try:
        assert faulty and dig(host, "web", "+tcp", "web").rdata == ["10.71.0.10"]
        assert service.resolver_health(host.run_dir) is True
        open(trigger, "w").close()
        assert eventually(lambda: service.resolver_health(host.run_dir) is False, 3)
        assert dig(host, "web", "+tcp", "+time=1", "web").rdata == []   # TCP is dead
        assert dig(host, "web", "web").rdata == ["10.71.0.10"]          # UDP is not
        assert "tcp not serving" in open(paths["log"]).read()
        eng.dns()                                         # any module run
        new = resolver_pid(host)
        assert new and new != faulty
        assert not service._is_ours(faulty, paths["pidfile"])
        assert dig(host, "web", "+tcp", "web").rdata == ["10.71.0.10"]
        assert service.resolver_health(host.run_dir) is True
        eng.dns()
        assert resolver_pid(host) == new                  # healthy: left alone
    finally:
        if service._is_ours(faulty, paths["pidfile"]):
            os.kill(faulty, 9)
        service.stop_resolver(host.run_dir, use_systemd=False)


def test_health_check_costs_well_under_a_millisecond(resolver, capsys):
    run_dir = resolver.run_dir
    for _i in range(20):
        assert service.resolver_health(run_dir) is True
    samples = []
    for _i in range(500):
        t0 = time.perf_counter()
        service.resolver_health(run_dir)
        samples.append(time.perf_counter() - t0)
    samples.sort()
    median, p90 = samples[len(samples) // 2] * 1e6, samples[len(samples) * 9 // 10] * 1e6
    with capsys.disabled():
        print("\n[health] resolver_health: median %.0f us, p90 %.0f us (python %s)"
              % (median, p90, sys.version.split()[0]))
    assert median < 1000
