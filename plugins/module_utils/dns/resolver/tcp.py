"""DNS over TCP: one thread serves every sandbox's TCP listener and connection (epoll).

No thread per connection. Bounds, so that no client can exhaust the daemon:
- at most MAX_CONNS connections open in all, MAX_CONNS_PER_SANDBOX per sandbox; a new
  connection past a cap closes the least recently active idle one (waiting for a query),
  or failing that the least recently active one;
- a query must be complete (length and message) within MESSAGE_TIMEOUT of its first
  byte, a connection closes after IDLE_TIMEOUT without a byte since it was accepted or
  answered, and an answer must be taken by the client within WRITE_TIMEOUT;
- a length over MAX_QUERY closes the connection (the UDP side reads 4096 bytes too);
- one query at a time per connection: pipelined queries wait in the (bounded) buffer.
Queries for upstreams go to at most FORWARD_WORKERS threads (started when needed; the
blocking ``Forwarder.forward_tcp``), FORWARD_QUEUE waiting; beyond that, or when no
thread can be started, SERVFAIL at once. The loop never dies of an exception: it is
logged (rate-limited) and the connection concerned closed. ``beat`` is the time of the
loop's last poll (the daemon's health check reads it).
"""
import errno
import logging
import os
import queue
import select
import threading
import time

from .forwarder import FORWARD_BUDGET
from .logs import log, log_once
from .wire import FORWARD, RCODE_SERVFAIL, error_reply, respond, tcp_frame

MAX_CONNS = 512
MAX_CONNS_PER_SANDBOX = 64
IDLE_TIMEOUT = 10.0
MESSAGE_TIMEOUT = 3.0
WRITE_TIMEOUT = 5.0
MAX_QUERY = 4096
ACCEPT_BATCH = 64            # accepts per listener per poll
FORWARD_WORKERS = 4
FORWARD_QUEUE = 64
TICK = 0.25                  # poll timeout: timeouts are checked this often

_IN, _OUT = select.EPOLLIN, select.EPOLLOUT
_GONE = select.EPOLLHUP | select.EPOLLERR


class Conn:
    """One client connection: input buffer, unsent answer, state and deadline."""

    __slots__ = ("sock", "fd", "name", "buf", "out", "busy", "deadline", "last", "mask")

    def __init__(self, sock, name, now):
        self.sock, self.fd, self.name = sock, sock.fileno(), name
        self.buf = bytearray()
        self.out = b""
        self.busy = False                # a forwarded query is out
        self.deadline = now + IDLE_TIMEOUT
        self.last = now                  # accepted or last answered
        self.mask = _IN

    def idle(self):
        return not (self.buf or self.out or self.busy)


class TcpServer:
    """Serves the TCP listeners of ``listeners`` (its ``tcp_ep``/``tcp_fdmap``/``views``)
    and their connections in the thread running ``run``."""

    def __init__(self, listeners, forwarder, stop):
        self.listeners, self.forwarder, self.stop = listeners, forwarder, stop
        self.ep = listeners.tcp_ep
        self.conns = {}                  # fd -> Conn, least recently active first
        self.per_sandbox = {}            # sandbox name -> {fd: Conn}, same order
        self.jobs = queue.Queue()        # (conn, query, view) for the workers
        self.done = queue.SimpleQueue()  # (conn, answer) from the workers
        self.workers = []
        self.forwarding = 0              # queries given to workers, not yet answered
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.ep.register(self.wake_r, _IN)
        self.next_scan = 0.0
        self.beat = time.monotonic()
        self.stats = {"accepted": 0, "evicted": 0, "timed_out": 0, "peak": 0}

    # -- the loop
    def run(self):
        poll = self.ep.poll
        while not self.stop.is_set():
            try:
                events = poll(TICK)
            except InterruptedError:
                continue
            except Exception as e:       # (a closed epoll: no heartbeat, unhealthy)
                log_once("tcp-poll", logging.ERROR, "TCP loop: poll failed: %s", e,
                         every=10.0)
                time.sleep(TICK)
                continue
            now = self.beat = time.monotonic()
            for fd, ev in events:
                try:
                    self._event(fd, ev, now)
                except Exception:
                    log_once("tcp-exc", logging.ERROR, "error serving DNS over TCP",
                             every=10.0)
                    log.debug("details", exc_info=True)
                    c = self.conns.get(fd)
                    if c is not None:
                        self._close(c)
            if now >= self.next_scan:
                self.next_scan = now + TICK
                try:
                    self._expire(now)
                except Exception:
                    log_once("tcp-scan", logging.ERROR, "error checking TCP timeouts",
                             every=10.0)
                    log.debug("details", exc_info=True)
        for c in list(self.conns.values()):
            self._close(c)

    def _event(self, fd, ev, now):
        c = self.conns.get(fd)
        if c is not None:
            if ev & _OUT:
                self._flush(c, now)
            elif ev & _IN:
                self._read(c, now)
            elif ev & _GONE:
                self._close(c)
            return
        if fd == self.wake_r:
            self._answers_from_workers(now)
            return
        ent = self.listeners.tcp_fdmap.get(fd)
        if ent is not None:
            self._accept(ent[0], ent[1], now)

    # -- connections
    def _accept(self, lsock, name, now):
        for _n in range(ACCEPT_BATCH):
            try:
                sock, _addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log_once("tcp-accept", logging.ERROR, "TCP accept: %s", e)
                    if not self._evict(self.conns):
                        time.sleep(0.01)  # nothing of ours to free: do not spin
                return
            sock.setblocking(False)
            per = self.per_sandbox.setdefault(name, {})
            if len(per) >= MAX_CONNS_PER_SANDBOX:
                self._evict(per)
            if len(self.conns) >= MAX_CONNS:
                self._evict(self.conns)
            c = Conn(sock, name, now)
            try:
                self.ep.register(c.fd, _IN)
            except OSError:
                sock.close()
                continue
            self.conns[c.fd] = per[c.fd] = c
            self.stats["accepted"] += 1
            if len(self.conns) > self.stats["peak"]:
                self.stats["peak"] = len(self.conns)

    def _evict(self, conns):
        """Close the least recently active idle connection of ``conns`` (else the least
        recently active one). Returns False when ``conns`` is empty."""
        victim = next((c for c in conns.values() if c.idle()), None)
        if victim is None:
            victim = next(iter(conns.values()), None)
        if victim is None:
            return False
        log_once("tcp-cap", logging.WARNING, "too many DNS TCP connections (sandbox %s: "
                 "%d, all: %d): closing the least recently active", victim.name,
                 len(self.per_sandbox.get(victim.name, ())), len(self.conns))
        self.stats["evicted"] += 1
        self._close(victim)
        return True

    def _close(self, c):
        if self.conns.pop(c.fd, None) is None:
            return
        per = self.per_sandbox.get(c.name)
        if per is not None:
            per.pop(c.fd, None)
            if not per:
                del self.per_sandbox[c.name]
        try:
            self.ep.unregister(c.fd)
        except (OSError, ValueError):
            pass
        c.sock.close()

    def _touch(self, c, now):
        """``c`` was answered: it becomes the most recently active."""
        c.last = now
        for conns in (self.conns, self.per_sandbox.get(c.name)):
            if conns is not None and conns.pop(c.fd, None) is not None:
                conns[c.fd] = c

    def _expire(self, now):
        views = self.listeners.views
        for c in [c for c in self.conns.values() if c.deadline <= now or (
                c.name not in views)]:
            if c.deadline <= now:
                self.stats["timed_out"] += 1
            self._close(c)

    def _read(self, c, now):
        try:
            data = c.sock.recv(MAX_QUERY + 2)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(c)
            return
        if not c.buf:
            c.deadline = now + MESSAGE_TIMEOUT  # the whole query from its first byte
        c.buf += data
        self._serve(c, now)

    def _serve(self, c, now):
        """Answer the complete queries in ``c``'s buffer, one at a time."""
        buf = c.buf
        while len(buf) >= 2 and not (c.busy or c.out):
            n = (buf[0] << 8) | buf[1]
            if n > MAX_QUERY:
                self._close(c)
                return
            if len(buf) < n + 2:
                break
            msg = bytes(buf[2:n + 2])
            del buf[:n + 2]
            if not self._answer(c, msg, now):
                return
        self._rearm(c, now)

    def _answer(self, c, msg, now):
        """Answer (or forward) one query; False when ``c`` was closed."""
        view = self.listeners.views.get(c.name)
        if view is None:
            self._close(c)
            return False
        self.listeners.stats["tcp"] += 1
        r = respond(msg, view, True)
        if r is FORWARD:
            if self._forward(c, msg, view, now):
                return True
            r = error_reply(msg, RCODE_SERVFAIL)
        return self._reply(c, r, now, rearm=False) if r else True

    def _reply(self, c, r, now, rearm=True):
        """Send answer ``r``: the client must take all of it within WRITE_TIMEOUT."""
        c.out = tcp_frame(r)
        c.deadline = now + WRITE_TIMEOUT
        return self._flush(c, now, rearm)

    def _flush(self, c, now, rearm=True):
        """Send what is left of ``c``'s answer; False when ``c`` was closed."""
        try:
            k = c.sock.send(c.out)
        except (BlockingIOError, InterruptedError):
            k = 0
        except OSError:
            self._close(c)
            return False
        c.out = c.out[k:]
        if not c.out:
            self._touch(c, now)
            # the next query is due within IDLE_TIMEOUT of this answer, a started one
            # within MESSAGE_TIMEOUT
            c.deadline = now + (MESSAGE_TIMEOUT if c.buf else IDLE_TIMEOUT)
        if rearm:
            self._serve(c, now)
        return True

    def _rearm(self, c, now):
        mask = _OUT if c.out else (0 if c.busy else _IN)
        if mask != c.mask:
            c.mask = mask
            self.ep.modify(c.fd, mask)

    # -- forwarding (worker threads)
    def _forward(self, c, msg, view, now):
        """Give the query to a worker; False when none can take it (SERVFAIL)."""
        if self.forwarding >= FORWARD_QUEUE or not self._worker_for(self.forwarding + 1):
            log_once("tcp-fwd-full", logging.WARNING, "DNS over TCP: too many queries "
                     "being forwarded (%d): SERVFAIL", self.forwarding, every=10.0)
            return False
        self.forwarding += 1
        c.busy = True
        c.deadline = now + FORWARD_BUDGET + 1.0
        self.jobs.put((c, msg, view))
        return True

    def _worker_for(self, wanted):
        """Make sure there are workers for ``wanted`` queries (up to FORWARD_WORKERS);
        False when there is none at all."""
        self.workers = [w for w in self.workers if w.is_alive()]
        if len(self.workers) < min(wanted, FORWARD_WORKERS):
            th = threading.Thread(target=self._work, name="tcp-forward", daemon=True)
            try:
                th.start()
                self.workers.append(th)
            except RuntimeError as e:    # can't start new thread: the others will do
                log_once("tcp-fwd-thread", logging.ERROR,
                         "cannot start a TCP forwarding thread: %s", e)
        return bool(self.workers)

    def _work(self):
        while not self.stop.is_set():
            try:
                c, msg, view = self.jobs.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                r = self.forwarder.forward_tcp(msg, view)
            except Exception:
                log.exception("forwarding a TCP query failed")
                r = error_reply(msg, RCODE_SERVFAIL)
            self.done.put((c, r))
            try:
                os.write(self.wake_w, b"x")
            except OSError:
                pass

    def _answers_from_workers(self, now):
        try:
            while os.read(self.wake_r, 4096):
                pass
        except OSError:
            pass
        while True:
            try:
                c, r = self.done.get_nowait()
            except queue.Empty:
                return
            self.forwarding -= 1
            c.busy = False
            if self.conns.get(c.fd) is not c:
                continue                 # closed meanwhile
            if r:
                self._reply(c, r, now)
            else:
                c.deadline = now + (MESSAGE_TIMEOUT if c.buf else IDLE_TIMEOUT)
                self._serve(c, now)
