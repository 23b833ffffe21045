"""The upstream forwarder: names the catalog does not hold go to the host's nameservers.

Upstreams come from the config or, by default, from the host's resolv.conf (re-read when
it changes). Queries are sent from the daemon's own (host) namespace, so a loopback
upstream such as systemd-resolved's 127.0.0.53 works. Several upstreams are tried with
a per-upstream timeout well under the client's 5 s; failing ones are remembered and
tried last; SERVFAIL when none answers.
"""
import errno
import heapq
import ipaddress
import logging
import os
import select
import socket
import threading
import time
from collections import deque

from .config import file_stamp
from .logs import log, log_once
from .wire import (
    RCODE_NOERROR, RCODE_NXDOMAIN, RCODE_SERVFAIL, error_reply, question_end, recv_message,
    tcp_frame,
)

DEFAULT_HOST_RESOLV_CONF = "/etc/resolv.conf"
DEFAULT_UPSTREAM_TIMEOUT = 1.0
FORWARD_BUDGET = 4.0         # whole forwarding of one query, under the client's 5 s
UPSTREAM_FAIL_MEMORY = 30.0  # a failed upstream is tried last for this long


def parse_upstream(text, default_port=53):
    """``ip``, ``ip:port``, ``[v6]:port`` or ``v6%scope`` -> (family, sockaddr, label)."""
    text = str(text).strip()
    port = default_port
    host = text
    if text.startswith("["):
        host, _sep, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError("bad upstream %r" % text)
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _sep, p = text.partition(":")
        port = int(p)
    if not 0 < port < 65536:
        raise ValueError("bad port in upstream %r" % text)
    ip = ipaddress.ip_address(host.partition("%")[0])
    if ip.version == 4:
        return socket.AF_INET, (str(ip), port), "%s:%d" % (ip, port)
    info = socket.getaddrinfo(host, port, socket.AF_INET6, socket.SOCK_DGRAM, 0,
                              socket.AI_NUMERICHOST)
    return socket.AF_INET6, info[0][4], "[%s]:%d" % (host, port)


def read_resolv_conf_nameservers(path):
    out = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    out.append(parts[1])
    except OSError:
        pass
    return out


def parse_upstreams(texts):
    """Parsed upstreams of ``texts``; invalid ones are logged (once) and left out."""
    ups = []
    for t in texts:
        try:
            ups.append(parse_upstream(t))
        except (ValueError, OSError, socket.gaierror):
            log_once("upstream:%s" % t, logging.WARNING, "ignoring invalid upstream %r", t)
    return ups


class _Pending:
    __slots__ = ("csock", "caddr", "query", "qkey", "ups", "idx", "sock", "sid", "label",
                 "deadline", "end", "best", "nx")


class Forwarder:
    """Forwards queries to upstreams from the host namespace.

    UDP: ``submit`` (any thread) queues a query; the forwarder thread sends it on a new
    non-blocking socket per attempt (random source port and ID), tries the upstreams in
    order of health with ``timeout`` each, within FORWARD_BUDGET overall, and answers
    the client directly. TCP: ``forward_tcp`` runs in the caller's thread (a worker of
    the TCP server).
    """

    def __init__(self, stop=None):
        self.stop = stop if stop is not None else threading.Event()
        self.timeout = DEFAULT_UPSTREAM_TIMEOUT
        self.upstreams = []              # [(family, sockaddr, label)], replaced whole
        self.sandbox_upstreams = {}      # per-sandbox upstream tuple -> parsed list
        self.resolv_path = None          # the resolv.conf read for upstreams, and its stamp
        self.resolv_stamp = None
        self.failed = {}                 # label -> monotonic time of the last failure
        self.queue = deque()
        self.pending = {}                # fd -> _Pending
        self.heap = []
        self.seq = 0
        self.ep = select.epoll()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.ep.register(self.wake_r, select.EPOLLIN)
        self.beat = time.monotonic()     # the forwarder loop's last poll (health check)

    # -- which upstreams (main thread)
    def configure(self, cfg, cfg_changed):
        """Take the upstreams and timeout of config ``cfg`` (when ``cfg_changed``), or
        of the host's resolv.conf when the config names none and that file changed."""
        if cfg_changed:
            try:
                t = float(cfg.get("upstream_timeout", DEFAULT_UPSTREAM_TIMEOUT))
            except (TypeError, ValueError):
                t = DEFAULT_UPSTREAM_TIMEOUT
            self.timeout = max(0.05, min(t, FORWARD_BUDGET))
            self.sandbox_upstreams = {}
        explicit = cfg.get("upstreams") or []
        if explicit:
            if cfg_changed:
                self.resolv_path = None
                self.upstreams = parse_upstreams(explicit)
            return
        path = cfg.get("host_resolv_conf") or DEFAULT_HOST_RESOLV_CONF
        stamp = file_stamp(path)
        if cfg_changed or path != self.resolv_path or stamp != self.resolv_stamp:
            self.resolv_path, self.resolv_stamp = path, stamp
            ups = parse_upstreams(read_resolv_conf_nameservers(path))
            if [u[2] for u in ups] != [u[2] for u in self.upstreams]:
                log.info("upstreams from %s: %s", path,
                         ", ".join(u[2] for u in ups) or "none")
            self.upstreams = ups

    # -- shared
    def ordered(self, ups):
        """Upstreams healthy first (configured order), then the failed ones, oldest
        failure first: failing upstreams are remembered but never given up on."""
        now = time.monotonic()
        failed = self.failed

        def key(item):
            t = failed.get(item[2])
            if t is None or now - t > UPSTREAM_FAIL_MEMORY:
                return (0, 0.0)
            return (1, t)
        return sorted(ups, key=key)

    def mark_failed(self, label, why):
        if label not in self.failed:
            log.warning("upstream %s failed (%s); trying it last for %ds", label, why,
                        UPSTREAM_FAIL_MEMORY)
        self.failed[label] = time.monotonic()

    def mark_ok(self, label):
        if self.failed.pop(label, None) is not None:
            log.info("upstream %s answers again", label)

    def upstreams_for(self, view):
        if view[3]:
            ups = self.sandbox_upstreams.get(view[3])
            if ups is None:
                ups = parse_upstreams(view[3])
                self.sandbox_upstreams[view[3]] = ups
            return ups
        return self.upstreams

    # -- UDP
    def submit(self, csock, caddr, query, view):
        self.queue.append((csock, caddr, query, view))
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass

    def run(self):
        ep = self.ep
        while not self.stop.is_set():
            timeout = 0.1
            if self.heap:
                timeout = max(0.0, min(timeout, self.heap[0][0] - time.monotonic()))
            try:
                events = ep.poll(timeout)
            except InterruptedError:
                continue
            self.beat = time.monotonic()
            for fd, _ev in events:
                if fd == self.wake_r:
                    try:
                        while os.read(self.wake_r, 4096):
                            pass
                    except OSError:
                        pass
                    continue
                p = self.pending.get(fd)
                if p is not None:
                    try:
                        self._readable(p)
                    except Exception:
                        log.exception("forwarder error")
            while self.queue:
                csock, caddr, query, view = self.queue.popleft()
                try:
                    self._start(csock, caddr, query, view)
                except Exception:
                    log.exception("forwarder error")
            now = time.monotonic()
            while self.heap and self.heap[0][0] <= now:
                _when, _seq, p, s = heapq.heappop(self.heap)
                if p.sock is s:
                    self.mark_failed(p.label, "timeout after %.2fs" % self.timeout)
                    self._drop_sock(p)
                    self._attempt(p, now)

    def _start(self, csock, caddr, query, view):
        qe = question_end(query)
        p = _Pending()
        p.csock, p.caddr, p.query = csock, caddr, query
        p.qkey = query[12:qe].lower() if qe > 0 else b""
        p.ups = self.ordered(self.upstreams_for(view))
        p.idx = 0
        p.sock = None
        p.best = p.nx = None
        now = time.monotonic()
        p.end = now + FORWARD_BUDGET
        self._attempt(p, now)

    def _attempt(self, p, now):
        while p.idx < len(p.ups) and now < p.end:
            fam, sa, label = p.ups[p.idx]
            p.idx += 1
            s = None
            try:
                s = socket.socket(fam, socket.SOCK_DGRAM)
                s.setblocking(False)
                s.connect(sa)
                sid = os.urandom(2)
                s.send(sid + p.query[2:])
            except OSError as e:
                if s is not None:
                    s.close()
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log_once("fwd-res", logging.ERROR, "cannot open upstream socket: %s", e)
                    break
                self.mark_failed(label, e.strerror or str(e))
                continue
            p.sock, p.sid, p.label = s, sid, label
            p.deadline = min(now + self.timeout, p.end)
            self.pending[s.fileno()] = p
            self.ep.register(s.fileno(), select.EPOLLIN)
            self.seq += 1
            heapq.heappush(self.heap, (p.deadline, self.seq, p, s))
            return
        self._finish(p)

    def _drop_sock(self, p):
        s = p.sock
        p.sock = None
        if s is not None:
            fd = s.fileno()
            self.pending.pop(fd, None)
            try:
                self.ep.unregister(fd)
            except OSError:
                pass
            s.close()

    def _readable(self, p):
        while p.sock is not None:
            try:
                resp = p.sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:        # ICMP port/host unreachable: next upstream now
                self.mark_failed(p.label, e.strerror or str(e))
                self._drop_sock(p)
                self._attempt(p, time.monotonic())
                return
            verdict = self._judge(p, resp)
            if verdict is None:
                continue                 # not ours (wrong ID/question): keep waiting
            self._drop_sock(p)
            if verdict:
                self._send(p, resp)
            else:
                self._attempt(p, time.monotonic())
            return

    def _judge(self, p, resp):
        """None: not the answer to our query; True: final; False: try the next one."""
        valid = len(resp) >= 12 and resp[:2] == p.sid and resp[2] & 0x80
        if not valid or resp[12:12 + len(p.qkey)].lower() != p.qkey:
            return None
        self.mark_ok(p.label)
        rcode = resp[3] & 0x0F
        if resp[2] & 0x02 or rcode == RCODE_NOERROR:
            return True                  # answers, and truncated ones (client -> TCP)
        if rcode == RCODE_NXDOMAIN:
            # Authoritative NXDOMAIN ends the search (RFC 8020); otherwise another
            # upstream may know the name (split DNS set-ups), as Docker does.
            if resp[2] & 0x04:
                return True
            if p.nx is None:
                p.nx = resp
        p.best = resp
        return False

    def _finish(self, p):
        resp = p.nx or p.best
        if resp is None:
            resp = error_reply(p.query, RCODE_SERVFAIL)
            if resp is None:
                return
            self._reply(p, resp)
        else:
            self._send(p, resp)

    def _send(self, p, resp):
        self._reply(p, p.query[:2] + resp[2:])

    def _reply(self, p, data):
        try:
            p.csock.sendto(data, p.caddr)
        except OSError:
            pass

    # -- TCP (blocking, in the connection's thread)
    def forward_tcp(self, query, view):
        qe = question_end(query)
        qkey = query[12:qe].lower() if qe > 0 else b""
        end = time.monotonic() + FORWARD_BUDGET
        best = nx = None
        for fam, sa, label in self.ordered(self.upstreams_for(view)):
            left = end - time.monotonic()
            if left <= 0:
                break
            sid = os.urandom(2)
            try:
                with socket.socket(fam, socket.SOCK_STREAM) as s:
                    s.settimeout(min(self.timeout * 2, left))
                    s.connect(sa)
                    msg = sid + query[2:]
                    s.sendall(tcp_frame(msg))
                    resp = recv_message(s)
            except OSError as e:
                self.mark_failed(label, e.strerror or str(e) or type(e).__name__)
                continue
            if not resp or resp[:2] != sid or resp[12:12 + len(qkey)].lower() != qkey:
                self.mark_failed(label, "bad TCP answer")
                continue
            self.mark_ok(label)
            rcode = resp[3] & 0x0F
            if rcode == RCODE_NOERROR or (rcode == RCODE_NXDOMAIN and resp[2] & 0x04):
                return query[:2] + resp[2:]
            if rcode == RCODE_NXDOMAIN and nx is None:
                nx = resp
            best = resp
        resp = nx or best
        if resp is not None:
            return query[:2] + resp[2:]
        return error_reply(query, RCODE_SERVFAIL)
