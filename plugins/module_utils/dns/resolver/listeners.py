"""The listeners: one UDP and one TCP socket on 127.0.0.11 inside each sandbox.

For every sandbox a short-lived helper thread setns()es into the sandbox's network
namespace, creates the sockets and leaves; the sockets stay in the sandbox (nothing
listens on the host). They listen at private ports the kernel picks, and the sandbox's
own rules send 127.0.0.11:53 there (``redirect.py``), written by the same thread: port
53 stays free for workloads. Where no rule can be written (no nft, no iptables) the
sockets listen on 127.0.0.11:53 itself, as before (logged). One thread serves UDP for
all sandboxes (epoll, here), one serves TCP, listeners and connections alike (epoll,
``tcp.py``). Queries are answered from the sandbox's view of the catalog (wire.respond)
or handed to the forwarder.
"""
import ctypes
import fcntl
import logging
import os
import select
import socket
import threading
import time

from .redirect import install as install_redirect, lost as redirect_lost
from .redirect import remove as remove_redirect, watch_socket
from .logs import log, log_once
from .wire import FORWARD, respond

LISTEN_ADDRESS = "127.0.0.11"
LISTEN_PORT = 53             # what sandboxes ask; the sockets listen at PRIVATE_PORT
PRIVATE_PORT = 0             # kernel-chosen (as Docker's), redirected from LISTEN_PORT
SOCKET_CLOSE_GRACE = 0.5     # a closed socket's fd number stays taken so it is never misread

CLONE_NEWNET = 0x40000000
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)

_libc = ctypes.CDLL(None, use_errno=True)


class Sandbox:
    __slots__ = ("name", "netns", "ident", "udp", "tcp", "view", "error", "ports",
                 "watch", "how")

    def __init__(self, name, netns):
        self.name, self.netns = name, netns
        self.ident = None               # (st_dev, st_ino) of the namespace when opened
        self.udp = self.tcp = None
        self.view = None
        self.error = None               # last error text, logged once per change
        self.ports = None               # (udp, tcp) private ports redirected from :53
        self.watch = None               # netlink socket: the namespace's ruleset changes
        self.how = None                 # "nftables" or "iptables": what wrote the redirect


def in_namespaces(items, work, timeout=30):
    """Run ``work(name)`` inside each namespace of ``items`` ((name, netns path)) and
    return ``{name: its result or error text}``.

    One throwaway thread setns()es from namespace to namespace and ends there, so no
    thread that lives on ever leaves the host namespace. ``work`` gets ``(name, st)``
    (the namespace file's stat) and raises OSError on failure."""
    results = {}

    def run():
        for name, path in items:
            fd = -1
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                st = os.fstat(fd)
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, "setns: %s" % os.strerror(err))
                results[name] = work(name, st)
            except OSError as e:
                results[name] = "%s: %s" % (path, e.strerror or e)
            finally:
                if fd >= 0:
                    os.close(fd)

    th = threading.Thread(target=run, name="netns-work", daemon=True)
    try:
        th.start()
    except RuntimeError as e:            # can't start new thread: retried later
        return {name: "cannot start a thread: %s" % e for name, _path in items}
    th.join(timeout)
    return results


def _bind_pair(port):
    """A UDP and a TCP socket on 127.0.0.11:``port`` (0: each its own free port)."""
    udp = tcp = None
    try:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        try:
            udp.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 1 << 20)
        except OSError:
            pass
        udp.bind((LISTEN_ADDRESS, port))
        udp.setblocking(False)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        tcp.bind((LISTEN_ADDRESS, port))
        tcp.listen(128)
        tcp.setblocking(False)
        return udp, tcp
    except OSError:
        for s in (udp, tcp):
            if s is not None:
                s.close()
        raise


HIGH_FD = 1024   # glibc's FD_SETSIZE


def _keep_high(sock):
    """Move a long-lived socket to a descriptor above FD_SETSIZE (the daemon raised its
    RLIMIT_NOFILE). libnftables select()s on the netlink socket it opens for each
    redirect it writes, and glibc aborts the process when that descriptor is 1024 or
    more: with three sockets per sandbox that happened past ~340 sandboxes. A new
    socket gets the lowest free descriptor, so keeping ours high keeps its low.
    Returns the socket to use (the same one when the limit allows no move)."""
    if sock is None:
        return None
    try:
        fd = fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD_CLOEXEC, HIGH_FD)
    except OSError:
        return sock
    moved = socket.socket(sock.family, sock.type, sock.proto, fileno=fd)
    moved.setblocking(False)
    sock.close()
    return moved


def _open_in(name, st):
    """(In the sandbox's namespace) the sockets at private ports and the redirect;
    without a redirect, the sockets on port 53 itself."""
    udp, tcp = _bind_pair(PRIVATE_PORT)
    ports = (udp.getsockname()[1], tcp.getsockname()[1])
    how, why = install_redirect(*ports)
    if why is not None:
        udp.close()
        tcp.close()
        log.warning("sandbox %s: no redirect of %s:%d (%s): listening there itself",
                    name, LISTEN_ADDRESS, LISTEN_PORT, why)
        udp, tcp = _bind_pair(LISTEN_PORT)
        ports = None
    watch = watch_socket() if how == "nftables" else None
    udp, tcp, watch = _keep_high(udp), _keep_high(tcp), _keep_high(watch)
    return (udp, tcp, (st.st_dev, st.st_ino), ports, watch, how)


def open_sockets(items):
    """Create the listening sockets (and their redirect) inside each namespace.

    ``items`` is a list of (name, netns path). Returns ``{name: (udp, tcp, ident,
    ports, watch, how) or error text}`` (``ports``: the private (udp, tcp) ports, None
    when the sockets listen on port 53 itself; ``watch``: see
    ``redirect.watch_socket``; ``how``: what wrote the redirect)."""
    return in_namespaces(items, _open_in)


def _reassert_in(name, st, ports):
    why = install_redirect(*ports)[1]
    if why is not None:
        raise OSError(0, why)
    return None


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
        self.fds = {}                    # sandbox name -> its (udp, tcp) fds in the maps
        self.udp_ep = select.epoll()
        self.tcp_ep = select.epoll()
        self.watch_ep = select.epoll()   # the sandboxes' ruleset changes (main thread)
        self.watches = {}                # fd -> sandbox name
        self.graveyard = []              # (close after, socket whose fd is a placeholder)
        self.placeholder = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
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
        if names is not None:
            self.check_redirects()      # a loss not seen by a tick yet: before the reply
        to_open, unredirect = [], []
        for name in [n for n in scope if n in self.sandboxes]:
            if name not in desired:
                sb = self.sandboxes.pop(name)
                if sb.ports is not None and _ns_ident(sb.netns) == sb.ident:
                    unredirect.append((name, sb.netns, sb.how))  # port 53 is free again
                self._close(sb)
                log.info("sandbox %s removed", name)
                changed = True
        if unredirect:
            self._unredirect(unredirect)
        reassert = []
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
            elif names is not None and sb.ports is not None and sb.watch is None:
                reassert.append((name, netns))   # unwatched (iptables): the engine's step
                #                                  writes it again, whatever became of it
        if reassert:
            self._reassert(reassert)
        if to_open:
            for name, res in open_sockets(to_open).items():
                sb = self.sandboxes[name]
                if isinstance(res, str):
                    if sb.error != res:
                        log.warning("sandbox %s: cannot listen on %s:%d: %s (retrying)",
                                    name, LISTEN_ADDRESS, LISTEN_PORT, res)
                    sb.error = res
                    continue
                sb.udp, sb.tcp, sb.ident, sb.ports, sb.watch, sb.how = res
                if sb.watch is not None:
                    self.watch_ep.register(sb.watch.fileno(), select.EPOLLIN)
                    self.watches[sb.watch.fileno()] = name
                sb.error = None
                self.udp_ep.register(sb.udp.fileno(), select.EPOLLIN)
                self.tcp_ep.register(sb.tcp.fileno(), select.EPOLLIN)
                log.info("sandbox %s: listening in %s", name, sb.netns)
                changed = True
        if changed:
            self._publish(scope if names is not None else None)
            if names is not None:
                log.debug("update of %s applied: %d sandboxes (%d listening), %.1f ms",
                          ", ".join(sorted(names)), len(self.sandboxes),
                          len(self.udp_fdmap), (time.monotonic() - t0) * 1000)
            elif not only_check:
                log.info("config applied: %d sandboxes (%d listening), %.1f ms",
                         len(self.sandboxes), len(self.udp_fdmap),
                         (time.monotonic() - t0) * 1000)

    def _publish(self, names=None):
        """Replace the maps the serving threads read (``udp_fdmap``, ``tcp_fdmap``,
        ``views``) by new ones matching ``sandboxes``. ``names``: only these sandboxes
        changed (an update): the maps are copied and only their entries redone, so an
        update costs the same with 10 sandboxes or 1,000 (a copy of a dict is a C loop;
        rebuilding them entry by entry in Python cost ~1 ms per 1,000 sandboxes)."""
        if names is None:
            udp, tcp, views, fds = {}, {}, {}, {}
            todo = self.sandboxes
        else:
            udp, tcp = dict(self.udp_fdmap), dict(self.tcp_fdmap)
            views, fds = dict(self.views), self.fds
            for name in names:
                views.pop(name, None)
                for fd in fds.pop(name, ()):
                    udp.pop(fd, None)
                    tcp.pop(fd, None)
            todo = {n: self.sandboxes[n] for n in names if n in self.sandboxes}
        for name, sb in todo.items():
            views[name] = sb.view
            if sb.udp is not None:
                fds[name] = (sb.udp.fileno(), sb.tcp.fileno())
                udp[fds[name][0]] = (sb.udp, sb.view)
                tcp[fds[name][1]] = (sb.tcp, name)
        self.udp_fdmap, self.tcp_fdmap, self.views, self.fds = udp, tcp, views, fds

    @staticmethod
    def _unredirect(items):
        """Remove the redirects of ``items`` ((name, netns, how)): port 53 is as it was."""
        if items:
            how = {name: h for name, _netns, h in items}
            in_namespaces([item[:2] for item in items],
                          lambda name, _st: remove_redirect(how[name]))

    def _reassert(self, items):
        """Write the redirect of listening sandboxes ``items`` again (one atomic batch
        each, replacing their table): a flushed or deleted table is back."""
        ports = {name: self.sandboxes[name].ports for name, _netns in items}
        for name, res in in_namespaces(
                items, lambda n, st: _reassert_in(n, st, ports[n])).items():
            sb = self.sandboxes[name]
            if res is not None and sb.error != res:
                log.warning("sandbox %s: cannot write the redirect of %s:%d: %s", name,
                            LISTEN_ADDRESS, LISTEN_PORT, res)
            sb.error = res

    def check_redirects(self):
        """Write again the redirects deleted or flushed since the last call (main
        thread, every tick: one epoll poll while no sandbox's ruleset changes)."""
        if not self.watches:
            return
        try:
            events = self.watch_ep.poll(0)
        except OSError:
            return
        items = []
        for fd, _ev in events:
            sb = self.sandboxes.get(self.watches.get(fd))
            if sb is None or sb.watch is None or sb.ports is None:
                continue
            if redirect_lost(sb.watch):
                log.warning("sandbox %s: its redirect of %s:%d was removed: writing it "
                            "again", sb.name, LISTEN_ADDRESS, LISTEN_PORT)
                items.append((sb.name, sb.netns))
        if items:
            self._reassert(items)

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
            self._release(s)
            self.graveyard.append((time.monotonic() + SOCKET_CLOSE_GRACE, s))
        if sb.watch is not None:
            self.watches.pop(sb.watch.fileno(), None)
            try:
                self.watch_ep.unregister(sb.watch.fileno())
            except (OSError, ValueError):
                pass
            sb.watch.close()
        sb.udp = sb.tcp = sb.watch = None
        sb.ident = sb.ports = sb.how = None

    def _release(self, sock):
        """Free ``sock`` now but keep its fd number taken until ``reap`` closes it.

        The socket is what keeps a removed sandbox's namespace, and with it the host
        end of its veth, alive: it must go when the engine's request is answered, not
        at the end of the grace. ``dup2`` puts /dev/null on the same fd number in one
        step, so a serving thread that still holds the old map reads an error from it
        (never a new sandbox's socket that took the number) until the grace is over."""
        try:
            os.dup2(self.placeholder, sock.fileno(), inheritable=False)
        except (OSError, ValueError):
            pass                        # already closed: nothing holds the namespace

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
        """Remove the redirects and close every sandbox's sockets (the daemon stops: a
        daemon started next, of this release or another, finds port 53 as it was)."""
        self._unredirect([(name, sb.netns, sb.how) for name, sb in self.sandboxes.items()
                          if sb.ports is not None and _ns_ident(sb.netns) == sb.ident])
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
