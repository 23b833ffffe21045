"""The listeners: one UDP and one TCP socket on 127.0.0.11:53 inside each sandbox.

For every sandbox a short-lived helper thread setns()es into the sandbox's network
namespace, creates the sockets and leaves; the sockets stay in the sandbox (nothing
listens on the host). One thread serves UDP for all sandboxes (epoll, here), one serves
TCP, listeners and connections alike (epoll, ``tcp.py``). Queries are answered from the
sandbox's view of the catalog (wire.respond) or handed to the forwarder.
"""
import ctypes
import logging
import os
import select
import socket
import threading
import time

from .logs import log, log_once
from .wire import FORWARD, respond

LISTEN_ADDRESS = "127.0.0.11"
LISTEN_PORT = 53
SOCKET_CLOSE_GRACE = 0.5     # closed sockets linger so a reused fd number is never misread

CLONE_NEWNET = 0x40000000
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)

_libc = ctypes.CDLL(None, use_errno=True)


class Sandbox:
    __slots__ = ("name", "netns", "ident", "udp", "tcp", "view", "error")

    def __init__(self, name, netns):
        self.name, self.netns = name, netns
        self.ident = None               # (st_dev, st_ino) of the namespace when opened
        self.udp = self.tcp = None
        self.view = None
        self.error = None               # last error text, logged once per change


def open_sockets(items):
    """Create the listening sockets inside each namespace.

    ``items`` is a list of (name, netns path). One throwaway thread setns()es from
    namespace to namespace and ends there, so no thread that lives on ever leaves the
    host namespace. Returns ``{name: (udp, tcp, ident) or error text}``.
    """
    results = {}

    def work():
        for name, path in items:
            fd = -1
            udp = tcp = None
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                st = os.fstat(fd)
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, "setns: %s" % os.strerror(err))
                udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                udp.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
                try:
                    udp.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 1 << 20)
                except OSError:
                    pass
                udp.bind((LISTEN_ADDRESS, LISTEN_PORT))
                udp.setblocking(False)
                tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
                tcp.bind((LISTEN_ADDRESS, LISTEN_PORT))
                tcp.listen(128)
                tcp.setblocking(False)
                results[name] = (udp, tcp, (st.st_dev, st.st_ino))
            except OSError as e:
                for s in (udp, tcp):
                    if s is not None:
                        s.close()
                results[name] = "%s: %s" % (path, e.strerror or e)
            finally:
                if fd >= 0:
                    os.close(fd)

    th = threading.Thread(target=work, name="netns-open", daemon=True)
    try:
        th.start()
    except RuntimeError as e:            # can't start new thread: retried later
        return {name: "cannot start a thread: %s" % e for name, _path in items}
    th.join(30)
    return results


def _ns_ident(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


class Listeners:
    """The sandboxes' sockets, and the UDP loop serving them (TCP: ``tcp.TcpServer``,
    on ``tcp_ep``).

    ``apply`` (main or control thread, under the daemon's lock) opens, keeps, reopens
    and closes sockets to match the catalog; the serving threads read ``udp_fdmap``,
    ``tcp_fdmap`` and ``views``, which are replaced whole, never changed in place.
    """

    def __init__(self, forwarder, stop):
        self.forwarder = forwarder
        self.stop = stop
        self.sandboxes = {}              # name -> Sandbox
        self.udp_fdmap = {}              # fd -> (socket, view), replaced whole
        self.tcp_fdmap = {}              # fd -> (socket, sandbox name), replaced whole
        self.views = {}                  # sandbox name -> view (read by TCP threads)
        self.udp_ep = select.epoll()
        self.tcp_ep = select.epoll()
        self.graveyard = []              # (close after, socket)
        self.stats = {"udp": 0, "tcp": 0, "forwarded": 0}
        self.beat = time.monotonic()     # the UDP loop's last poll (health check)

    def apply(self, catalog, only_check=False, names=None):
        """Bring the sockets in line with ``catalog``: open, keep, reopen, close.

        ``names``: only these sandboxes changed (an update from the control socket);
        ``only_check``: the catalog did not change, look for replaced namespaces."""
        t0 = time.monotonic()
        if names is not None:
            views = catalog.views
            desired = {n: (catalog.specs[n].netns, views[n]) for n in names
                       if n in views}
            scope = set(names)
        elif not only_check:
            desired = catalog.desired()
            scope = set(self.sandboxes)
        else:
            desired = {n: (sb.netns, sb.view) for n, sb in self.sandboxes.items()}
            scope = set(self.sandboxes)
        changed = not only_check
        to_open = []
        for name in [n for n in scope if n in self.sandboxes]:
            if name not in desired:
                self._close(self.sandboxes.pop(name))
                log.info("sandbox %s removed", name)
                changed = True
        for name, (netns, view) in desired.items():
            sb = self.sandboxes.get(name)
            if sb is None:
                sb = self.sandboxes[name] = Sandbox(name, netns)
            elif sb.netns != netns:
                self._close(sb)
                sb.netns = netns
            sb.view = view
            if sb.udp is not None and _ns_ident(netns) != sb.ident:
                log.info("sandbox %s: namespace %s was replaced; reopening", name, netns)
                self._close(sb)
                changed = True
            if sb.udp is None:
                to_open.append((name, netns))
        if to_open:
            for name, res in open_sockets(to_open).items():
                sb = self.sandboxes[name]
                if isinstance(res, str):
                    if sb.error != res:
                        log.warning("sandbox %s: cannot listen on %s:%d: %s (retrying)",
                                    name, LISTEN_ADDRESS, LISTEN_PORT, res)
                    sb.error = res
                    continue
                sb.udp, sb.tcp, sb.ident = res
                sb.error = None
                self.udp_ep.register(sb.udp.fileno(), select.EPOLLIN)
                self.tcp_ep.register(sb.tcp.fileno(), select.EPOLLIN)
                log.info("sandbox %s: listening in %s", name, sb.netns)
                changed = True
        if changed:
            udp, tcp, views = {}, {}, {}
            for name, sb in self.sandboxes.items():
                views[name] = sb.view
                if sb.udp is not None:
                    udp[sb.udp.fileno()] = (sb.udp, sb.view)
                    tcp[sb.tcp.fileno()] = (sb.tcp, name)
            self.udp_fdmap, self.tcp_fdmap, self.views = udp, tcp, views
            if names is not None:
                log.debug("update of %s applied: %d sandboxes (%d listening), %.1f ms",
                          ", ".join(sorted(names)), len(self.sandboxes), len(udp),
                          (time.monotonic() - t0) * 1000)
            elif not only_check:
                log.info("config applied: %d sandboxes (%d listening), %.1f ms",
                         len(self.sandboxes), len(udp), (time.monotonic() - t0) * 1000)

    def report(self, names):
        """``(listening, errors)`` of sandboxes ``names``: those whose sockets are open,
        and ``{name: error}`` of those that cannot listen."""
        listening = [n for n in names if n in self.sandboxes and (
            self.sandboxes[n].udp is not None)]
        errors = {n: self.sandboxes[n].error for n in names
                  if n in self.sandboxes and self.sandboxes[n].error}
        return listening, errors

    def _close(self, sb):
        for s, ep in ((sb.udp, self.udp_ep), (sb.tcp, self.tcp_ep)):
            if s is None:
                continue
            try:
                ep.unregister(s.fileno())
            except (OSError, ValueError):
                pass
            self.graveyard.append((time.monotonic() + SOCKET_CLOSE_GRACE, s))
        sb.udp = sb.tcp = None
        sb.ident = None

    def reap(self, now):
        """Close the sockets whose grace time is over."""
        if self.graveyard:
            keep = []
            for when, s in self.graveyard:
                if when <= now:
                    s.close()
                else:
                    keep.append((when, s))
            self.graveyard = keep

    def close_all(self):
        """Close every sandbox's sockets at once (the daemon stops)."""
        for sb in self.sandboxes.values():
            for s in (sb.udp, sb.tcp):
                if s is not None:
                    s.close()

    def _ready(self, ep, fdmap):
        """The entries (of the map ``fdmap()`` returns, current at each poll) of the
        sockets ``ep`` reports readable, until the daemon stops. Stamps ``beat``."""
        poll = ep.poll
        while not self.stop.is_set():
            try:
                events = poll(0.5)
            except InterruptedError:
                continue
            except Exception as e:       # (a closed epoll: no heartbeat, unhealthy)
                log_once("udp-poll", logging.ERROR, "UDP loop: poll failed: %s", e,
                         every=10.0)
                time.sleep(0.5)
                continue
            self.beat = time.monotonic()
            current = fdmap()
            for fd, _ev in events:
                ent = current.get(fd)
                if ent is not None:
                    yield ent

    # -- UDP fast path (one thread)
    def udp_loop(self):
        fwd = self.forwarder
        stats = self.stats
        for sock, view in self._ready(self.udp_ep, lambda: self.udp_fdmap):
            recvfrom = sock.recvfrom
            sendto = sock.sendto
            count = 0
            while count < 256:
                try:
                    d, addr = recvfrom(4096)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                count += 1
                try:
                    r = respond(d, view, False)
                    if r is None:
                        continue
                    if r is FORWARD:
                        stats["forwarded"] += 1
                        fwd.submit(sock, addr, d, view)
                        continue
                    sendto(r, addr)
                except OSError:
                    pass
                except Exception:
                    log_once("udp-exc", logging.ERROR, "error answering a query",
                             every=10.0)
                    log.debug("details", exc_info=True)
            stats["udp"] += count
