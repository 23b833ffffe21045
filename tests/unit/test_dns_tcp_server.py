"""The resolver's TCP loop (tcp.py) on loopback sockets: caps, eviction order, deadlines,
pipelining, forwarding workers, and a loop that survives its errors.

No namespaces: the listeners are plain sockets on 127.0.0.1 handed to ``TcpServer`` as
``Listeners`` would; the timeouts and caps are made small for the test.
"""
import select
import socket
import struct
import threading
import time

import pytest

from test_dns_wire_malformed import CONFIG, name_wire, query as raw_query

from ansible_collections.cnm.core.plugins.module_utils.dns.resolver import (
    config, tcp, wire,
)


def query(name, qid=1):
    """A framed A query for ``name``."""
    msg = raw_query(name_wire([p.encode() for p in name.split(".")]), qid)
    return struct.pack("!H", len(msg)) + msg


class Boom(dict):
    """Views whose sandbox ``boom`` raises (a bug in the loop's path)."""

    def get(self, key, default=None):
        if key == "boom":
            raise RuntimeError("a bug")
        return dict.get(self, key, default)


class FakeListeners:
    def __init__(self):
        view = config.build_views(CONFIG)["web"][1]
        self.tcp_ep = select.epoll()
        self.tcp_fdmap = {}
        self.views = Boom(web=view, db=view, boom=view)
        self.stats = {"tcp": 0}
        self.socks = []

    def listen(self, name):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(128)
        s.setblocking(False)
        self.socks.append(s)
        self.tcp_ep.register(s.fileno(), select.EPOLLIN)
        self.tcp_fdmap = {**self.tcp_fdmap, s.fileno(): (s, name)}
        return s.getsockname()


class FakeForwarder:
    def __init__(self):
        self.calls = 0
        self.threads = set()

    def forward_tcp(self, msg, view):
        self.calls += 1
        self.threads.add(threading.current_thread().name + str(id(threading.current_thread())))
        time.sleep(0.05)
        return wire.error_reply(msg, wire.RCODE_NXDOMAIN)


@pytest.fixture
def server(monkeypatch):
    for name, value in (("MAX_CONNS", 6), ("MAX_CONNS_PER_SANDBOX", 3), ("TICK", 0.02),
                        ("IDLE_TIMEOUT", 1.0), ("MESSAGE_TIMEOUT", 0.3),
                        ("FORWARD_WORKERS", 2)):
        monkeypatch.setattr(tcp, name, value)
    listeners, stop = FakeListeners(), threading.Event()
    srv = tcp.TcpServer(listeners, FakeForwarder(), stop)
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    srv.addr = {name: listeners.listen(name) for name in ("web", "db", "boom")}
    try:
        yield srv
    finally:
        stop.set()
        th.join(2)
        for s in listeners.socks:
            s.close()


def connect(srv, name="web"):
    s = socket.create_connection(srv.addr[name], timeout=2)
    time.sleep(0.03)                              # accepted, in this order
    return s


def answer(s):
    n = struct.unpack("!H", recv_exact(s, 2))[0]
    return recv_exact(s, n)


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def is_closed(s, wait=0.2):
    s.settimeout(wait)
    try:
        return s.recv(1) == b""
    except socket.timeout:
        return False
    except OSError:
        return True


def test_pipelined_queries_are_all_answered_in_order(server):
    s = connect(server)
    s.sendall(query("web", 1) + query("web", 2) + query("web", 3)[:5])
    assert [answer(s)[:2] for _i in range(2)] == [b"\x00\x01", b"\x00\x02"]
    s.sendall(query("web", 3)[5:])
    r = answer(s)
    assert r[:2] == b"\x00\x03" and r[3] & 0x0F == 0 and r.endswith(bytes([172, 18, 0, 2]))


def test_past_the_sandbox_cap_the_oldest_idle_connection_is_closed_first(server,
                                                                         monkeypatch):
    monkeypatch.setattr(tcp, "MESSAGE_TIMEOUT", 5.0)
    busy, idle1, idle2 = connect(server), connect(server), connect(server)
    busy.sendall(b"\x00")                        # a query started: not idle
    time.sleep(0.03)
    newest = connect(server)
    assert is_closed(idle1) and not is_closed(busy, 0.01) and not is_closed(idle2, 0.01)
    newest.sendall(query("web"))
    assert answer(newest)[3] & 0x0F == 0
    idle2.sendall(query("web"))                   # answered: the most recently active
    answer(idle2)
    connect(server)
    assert is_closed(newest)
    assert not is_closed(busy, 0.01) and not is_closed(idle2, 0.01)
    assert server.stats["evicted"] == 2


def test_past_the_total_cap_the_oldest_idle_connection_anywhere_is_closed(server):
    conns = [connect(server, "web"), connect(server, "web"), connect(server, "db"),
             connect(server, "db"), connect(server, "boom"), connect(server, "boom")]
    new = connect(server, "db")
    assert is_closed(conns[0])
    assert not any(is_closed(c, 0.01) for c in conns[1:])
    new.sendall(query("web"))
    assert answer(new)[3] & 0x0F == 0
    assert len(server.conns) == tcp.MAX_CONNS


def test_a_started_query_must_complete_within_the_message_timeout(server):
    slow, idle = connect(server), connect(server)
    t0 = time.monotonic()
    q = query("web")
    for k in range(len(q)):                       # slowloris: a byte every 0.1 s
        try:
            slow.send(q[k:k + 1])
        except OSError:
            break
        if is_closed(slow, 0.1):
            break
    assert is_closed(slow, 0.01) and time.monotonic() - t0 < tcp.MESSAGE_TIMEOUT + 0.2
    assert not is_closed(idle, 0.01)              # idle: IDLE_TIMEOUT from its accept
    assert is_closed(idle, tcp.IDLE_TIMEOUT + 0.3)
    assert server.stats["timed_out"] == 2


def test_an_oversized_length_closes_the_connection(server):
    s = connect(server)
    s.sendall(struct.pack("!H", tcp.MAX_QUERY + 1) + b"x" * 100)
    assert is_closed(s, 1.0)


def test_forwarded_queries_use_at_most_the_worker_threads_and_are_all_answered(server):
    conns = [connect(server, name) for name in ("web", "web", "db", "db", "boom")[:4]]
    for i, c in enumerate(conns):
        c.sendall(query("example.test", i))
    for i, c in enumerate(conns):
        r = answer(c)
        assert r[:2] == struct.pack("!H", i) and r[3] & 0x0F == wire.RCODE_NXDOMAIN
    assert server.forwarder.calls == 4
    assert len(server.workers) <= tcp.FORWARD_WORKERS
    assert server.forwarding == 0


def test_no_worker_thread_means_servfail_at_once(server, monkeypatch):
    class NoThread(threading.Thread):
        def start(self):
            raise RuntimeError("can't start new thread")
    monkeypatch.setattr(tcp.threading, "Thread", NoThread)
    s = connect(server)
    t0 = time.monotonic()
    s.sendall(query("example.test", 9))
    r = answer(s)
    assert r[3] & 0x0F == wire.RCODE_SERVFAIL and time.monotonic() - t0 < 0.5
    s.sendall(query("web", 10))                   # and the connection is served on
    assert answer(s)[3] & 0x0F == 0


def test_the_loop_survives_an_error_and_serves_on(server):
    bad = connect(server, "boom")
    bad.sendall(query("web"))
    assert is_closed(bad, 1.0)                    # the connection concerned is closed
    good = connect(server, "web")
    good.sendall(query("web"))
    assert answer(good)[3] & 0x0F == 0
    assert time.monotonic() - server.beat < 0.5
