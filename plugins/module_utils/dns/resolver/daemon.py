"""The daemon: its main loop, threads and signals, and its life as a process (double fork,
readiness report, pidfile, log).

Run as ``main(["--config", <run_dir>/dns/config.json, "--pidfile", ..., "--log", ...,
"--daemonize"])``. The main thread polls the engine's files (config.json and the
sandboxes directory, mtime+inode+size) every 200 ms, the host's resolv.conf, the
sandboxes' namespace inodes and their rulesets' changes (a deleted redirect is written
again, ``listeners.check_redirects``), and reloads without closing the sockets of sandboxes that
stay; the control thread applies the engine's updates at once. Other threads: UDP
serving, TCP serving (plus up to tcp.FORWARD_WORKERS forwarding TCP queries), forwarding.
Each serving loop stamps a heartbeat at every poll; the control socket's ``health``
request reports the loops whose thread ended or whose heartbeat is older than
HEALTH_MAX_AGE (the engine restarts such a daemon).
Signals: SIGTERM/SIGINT stop (pidfile removed), SIGHUP reloads at once.
"""
import argparse
import os
import select
import signal
import sys
import threading
import time

from .catalog import Catalog
from .config import EngineFiles, file_stamp
from .control import CONTROL_SOCKET, ControlSocket
from .forwarder import Forwarder
from .listeners import Listeners
from .logs import log, setup_logging
from .tcp import TcpServer
from .wire import import_dnspython

POLL_INTERVAL = 0.2          # config / resolv.conf stat interval (changes live within 1 s)
NETNS_CHECK_INTERVAL = 1.0   # namespace inode check and retry of missing namespaces
HEALTH_MAX_AGE = 5.0         # a serving loop that did not poll for this long is stuck
FRAGMENT_GRACE = 0.6         # sandbox files just changed: wait this long for the engine


class Server:
    """The running resolver: catalog, listeners, forwarder and control socket, kept in
    line with the engine's files. State changes (main and control thread) hold ``lock``."""

    def __init__(self, config_path):
        self.files = EngineFiles(config_path)
        self.lock = threading.Lock()
        self.stop = threading.Event()    # set once: every thread ends
        self.wakeup = threading.Event()
        self.catalog = Catalog()
        self.forwarder = Forwarder(self.stop)
        self.listeners = Listeners(self.forwarder, self.stop)
        self.tcp = TcpServer(self.listeners, self.forwarder, self.stop)
        self.control = ControlSocket(
            os.path.join(os.path.dirname(os.path.abspath(config_path)), CONTROL_SOCKET),
            self.apply_request, self.stop)
        self.cfg = {}
        self.cfg_stamp = None
        self.dir_seen = self.dir_seen_at = None  # the sandbox files' stamp, first seen
        self.last_netns_check = 0.0
        self.threads = []

    def start_threads(self):
        loops = [("udp", self.listeners.udp_loop), ("forwarder", self.forwarder.run),
                 ("tcp", self.tcp.run)]
        if self.control.listen():
            loops.append(("control", self.control.serve))
        for name, target in loops:
            th = threading.Thread(target=target, name=name, daemon=True)
            th.start()
            self.threads.append(th)

    def run(self):
        while not self.stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("reload failed")
            self.wakeup.wait(POLL_INTERVAL)
            self.wakeup.clear()

    def request_stop(self):
        """Make ``run`` return soon (signal handlers)."""
        self.stop.set()
        self.wakeup.set()

    def request_reload(self):
        """Re-read every file at the next tick, which comes at once (SIGHUP)."""
        self.cfg_stamp = ("reload",)
        self.wakeup.set()

    def tick(self, force=False):
        with self.lock:
            self._tick(force)

    def _tick(self, force):
        now = time.monotonic()
        stamp = self.files.stamp()
        changed = force
        if stamp != self.cfg_stamp and not force and self._engine_will_tell(stamp, now):
            stamp = self.cfg_stamp
        if stamp != self.cfg_stamp:
            self.cfg_stamp = stamp
            cfg = self.files.load_config()
            if cfg is not None:
                self.cfg = cfg
                self.catalog = self.files.load_catalog(cfg)
                changed = True
        self.forwarder.configure(self.cfg, changed)
        if changed:
            self.listeners.apply(self.catalog)
        elif now - self.last_netns_check >= NETNS_CHECK_INTERVAL:
            self.last_netns_check = now
            self.listeners.apply(self.catalog, only_check=True)
        self.listeners.check_redirects()
        self.listeners.reap(now)

    def health(self):
        """The ``health`` reply: the serving loops whose thread ended or whose heartbeat
        is older than HEALTH_MAX_AGE, and every loop's heartbeat age. Takes no lock."""
        now = time.monotonic()
        beats = {"udp": self.listeners.beat, "tcp": self.tcp.beat,
                 "forwarder": self.forwarder.beat}
        alive = {th.name for th in self.threads if th.is_alive()}
        failed = sorted(n for n, beat in beats.items()
                        if n not in alive or now - beat > HEALTH_MAX_AGE)
        if failed:
            log.error("health check: %s not serving", ", ".join(failed))
        return {"ok": not failed, "failed": failed,
                "age_ms": {n: round((now - b) * 1000, 1) for n, b in beats.items()}}

    def _engine_will_tell(self, stamp, now):
        """Only the sandbox files changed, just now: the engine names the ones it wrote
        on the control socket right after writing them, which rebuilds one sandbox's
        answers instead of every sandbox's; wait FRAGMENT_GRACE for that (a change by
        anything else is still applied within a second)."""
        if self.cfg_stamp is None or stamp[0] != self.cfg_stamp[0]:
            return False
        if self.dir_seen != stamp[1]:
            self.dir_seen, self.dir_seen_at = stamp[1], now
        return now - self.dir_seen_at < FRAGMENT_GRACE

    def apply_request(self, op, names):
        """A control request (control thread): ``health``; ``reload`` everything, or
        ``update`` the sandboxes ``names`` from their files. Returns the reply."""
        if op == "health":
            return self.health()
        with self.lock:
            if op == "reload":
                self.cfg_stamp = None
                self._tick(True)
            else:
                for name in names:
                    self.catalog.set(name, self.files.read_fragment(name))
                self.cfg_stamp = (self.cfg_stamp[0] if self.cfg_stamp else None,
                                  file_stamp(self.files.fragments_dir))
                self.listeners.apply(self.catalog, names=names)
            listening, errors = self.listeners.report(names)
        return {"ok": True, "listening": listening, "errors": errors}

    def shutdown(self):
        self.request_stop()
        self.control.close()
        self.listeners.close_all()


# --- the process --------------------------------------------------------------------------
def _daemonize(ready_w_holder):
    """Classic double fork. The original process waits for the daemon's readiness line
    on a pipe and exits 0 (ready) or 1 (error, printed on stderr)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid > 0:
        os.close(w)
        os.waitpid(pid, 0)
        data = b""
        end = time.monotonic() + 15
        while time.monotonic() < end:
            readable = select.select([r], [], [], max(0.0, end - time.monotonic()))[0]
            if not readable:
                break
            chunk = os.read(r, 4096)
            if not chunk:
                break
            data += chunk
            if b"\n" in data:
                break
        line = data.decode("utf-8", "replace").strip()
        if line.startswith("ready"):
            sys.stdout.write(line + "\n")
            os._exit(0)
        sys.stderr.write((line or "resolver did not report readiness") + "\n")
        os._exit(1)
    os.close(r)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    ready_w_holder.append(w)


def _redirect_stdio(logpath):
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    try:
        fd = os.open(logpath, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(fd, 2)                   # tracebacks of a crash land in the log
        os.close(fd)
    except OSError:
        pass


class _Pidfile:
    """Pidfile held with an exclusive flock: a second instance refuses to start."""

    def __init__(self, path):
        import fcntl
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            self.fd = -1
            raise
        os.ftruncate(self.fd, 0)
        os.write(self.fd, b"%d\n" % os.getpid())
        os.fsync(self.fd)

    def remove(self):
        if self.fd < 0:
            return
        try:
            with open(self.path, "rb") as f:
                mine = f.read().strip() == str(os.getpid()).encode()
            if mine:
                os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = -1


def _raise_nofile():
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = 1 << 20
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


def main(argv=None):
    """Run the resolver until SIGTERM/SIGINT; returns the exit status (2: another one
    holds the pidfile, 3: no dnspython). With ``--daemonize`` the calling process
    returns (exits) only once the daemon is ready or failed, printing why."""
    ap = argparse.ArgumentParser(description="cnm embedded DNS resolver")
    ap.add_argument("--config", required=True)
    ap.add_argument("--pidfile", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--daemonize", action="store_true")
    ap.add_argument("--debug", action="store_true")
    args = ap.parse_args(argv)
    for p in (args.pidfile, args.log):
        os.makedirs(os.path.dirname(os.path.abspath(p)), exist_ok=True)

    ready = []
    if args.daemonize:
        _daemonize(ready)
        os.chdir("/")
        os.umask(0o022)
        _redirect_stdio(args.log)

    def report(line):
        while ready:
            w = ready.pop()
            try:
                os.write(w, (line + "\n").encode())
            except OSError:
                pass
            os.close(w)

    setup_logging(args.log, args.debug)
    try:
        pidfile = _Pidfile(args.pidfile)
    except OSError as e:
        msg = "another resolver holds %s (%s)" % (args.pidfile, e.strerror)
        log.error(msg)
        report("error: " + msg)
        return 2
    try:
        import_dnspython()
    except ImportError as e:
        msg = "dnspython is required (%s): install python3-dnspython or pip dnspython" % e
        log.error(msg)
        report("error: " + msg)
        pidfile.remove()
        return 3

    _raise_nofile()
    server = Server(os.path.abspath(args.config))

    def on_term(signum, _frame):
        log.info("signal %d: stopping", signum)
        server.request_stop()

    def on_hup(_signum, _frame):
        server.request_reload()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, on_hup)
    log.info("starting (pid %d, python %s, config %s)", os.getpid(),
             sys.version.split()[0], args.config)
    server.start_threads()
    try:
        server.tick()
    except Exception:
        log.exception("initial load failed")
    report("ready %d" % os.getpid())
    try:
        server.run()
    finally:
        server.shutdown()
        pidfile.remove()
        stats, tcp = server.listeners.stats, server.tcp.stats
        log.info("stopped (answered udp=%d tcp=%d, forwarded=%d; TCP connections: %d "
                 "accepted, %d at most, %d timed out, %d closed over the caps)",
                 stats["udp"], stats["tcp"], stats["forwarded"], tcp["accepted"],
                 tcp["peak"], tcp["timed_out"], tcp["evicted"])
    return 0
