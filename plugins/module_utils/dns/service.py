"""Engine side of the resolver daemon: install, configure, start, check, stop.

The daemon (the package ``dns/resolver/``) must not run from Ansible's temporary module
payload, which is deleted when the module exits: ``install_resolver`` copies the
package's files to ``<state_dir>/resolver/resolver/`` and writes a runner,
``<state_dir>/resolver/cnm-resolver.py``, that python runs. Older releases installed one
file, ``<state_dir>/resolver/cnm_resolver.py``: a daemon running it is recognised as
ours, replaced by the next ``ensure_resolver``, and the file removed. The daemon
reads ``<run_dir>/dns/config.json`` (global settings, ``write_resolver_config``) and one
file per sandbox under ``<run_dir>/dns/sandboxes/`` (``write_fragment``).

Call order for the controller, on every run that touches DNS (see dns_sync.sync):
write the config and the files of the sandboxes the run changed, ``ensure_resolver``
(starts it if it is not running, restarts it after an upgrade), then
``notify_resolver`` with the changed sandboxes: it returns once the daemon applied them.
The daemon also notices changed files by itself within 1 s (hand edits, older engines).
"""
import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from ..constants import (
    DNS_CONFIG_FILE, DNS_CONFIG_VERSION, DNS_CONTROL_SOCKET, DNS_CONTROL_TIMEOUT,
    DNS_FRAGMENTS_SUBDIR, DNS_HOST_RESOLV_CONF, DNS_LOGFILE, DNS_PIDFILE,
    DNS_RESOLVER_DIR, DNS_RESOLVER_LEGACY_SCRIPT, DNS_RESOLVER_PACKAGE, DNS_RESOLVER_RUNNER,
    DNS_RUN_SUBDIR, DNS_SYSTEMD_UNIT, DNS_SYSTEMD_UNIT_DIR, DNS_TTL, DNS_UPSTREAM_TIMEOUT,
    DEFAULT_RUN_DIR,
)
from ..errors import CnmError, DependencyError
from .files import atomic_write

START_TIMEOUT = 10.0     # whole start, including the daemon's first config load
STOP_TIMEOUT = 5.0
HEALTH_TIMEOUT = 5.0     # a daemon that does not answer its health request is stuck

# The daemon's modules besides __init__.py (a unit test keeps this in line with the
# package directory and with the imports in _import_resolver).
RESOLVER_MODULES = ("catalog", "config", "control", "daemon", "forwarder", "listeners",
                    "logs", "redirect", "tcp", "wire")

# python runs this file; it runs the package installed beside it (whatever the cwd).
RUNNER = '''"""cnm embedded DNS resolver: runs the package %s/ installed beside this file.

Written by cnm.core (dns/service.py); changes are overwritten.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from %s.daemon import main  # noqa: E402

raise SystemExit(main())
''' % (DNS_RESOLVER_PACKAGE, DNS_RESOLVER_PACKAGE)


# --- paths ------------------------------------------------------------------------------
def resolver_paths(run_dir):
    """``{"dir", "config", "fragments", "control", "pidfile", "log"}`` under
    ``<run_dir>/dns`` (absolute)."""
    d = os.path.join(os.path.abspath(run_dir), DNS_RUN_SUBDIR)
    return {"dir": d, "config": os.path.join(d, DNS_CONFIG_FILE),
            "fragments": os.path.join(d, DNS_FRAGMENTS_SUBDIR),
            "control": os.path.join(d, DNS_CONTROL_SOCKET),
            "pidfile": os.path.join(d, DNS_PIDFILE), "log": os.path.join(d, DNS_LOGFILE)}


def _resolver_files():
    """``{file name: bytes}`` of the daemon's package, from a checkout or from Ansible's
    zip payload.

    Read as data, not imported: every module run that touches DNS compares them with
    the installed copy, and importing (compiling) the daemon cost a cold run ~10 ms.
    """
    names = ["__init__.py"] + [m + ".py" for m in RESOLVER_MODULES]
    try:
        import pkgutil
        package = __name__.rpartition(".")[0] + ".resolver"
        files = {n: pkgutil.get_data(package, n) for n in names}
        if all(files.values()):
            return files
    except (OSError, ImportError, ValueError):
        pass
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resolver")
    try:
        files = {}
        for n in names:
            with open(os.path.join(here, n), "rb") as f:
                files[n] = f.read()
        return files
    except OSError:
        import inspect
        return {n: inspect.getsource(m).encode("utf-8")
                for n, m in zip(names, _import_resolver())}


def _import_resolver():
    """The daemon's package and modules, imported (same order as ``RESOLVER_MODULES``).

    The last resort for reading their source, and above all the literal imports that
    make AnsiballZ, which ships only the module_utils a module imports (it scans import
    statements, those inside functions too), carry the whole package.
    """
    from . import resolver
    from .resolver import (
        catalog, config, control, daemon, forwarder, listeners, logs, redirect, tcp, wire,
    )
    return (resolver, catalog, config, control, daemon, forwarder, listeners, logs, redirect,
            tcp, wire)


def _read_tree(path):
    """``{name: bytes}`` of the .py files in directory ``path`` ({} without it)."""
    try:
        names = os.listdir(path)
    except OSError:
        return {}
    out = {}
    for name in names:
        if name.endswith(".py"):
            try:
                with open(os.path.join(path, name), "rb") as f:
                    out[name] = f.read()
            except OSError:
                out[name] = None
    return out


def _install_tree(target, files):
    """Make directory ``target`` hold exactly ``files`` (``{name: bytes}``, mode 0644).

    Returns False when it does already (nothing is written). Otherwise the new tree is
    written and synced in a temporary directory beside ``target`` and renamed into
    place: the daemon never runs a half-copied tree. Returns True.
    """
    if _read_tree(target) == files:
        return False
    parent = os.path.dirname(target)
    tmp = tempfile.mkdtemp(prefix=".%s." % os.path.basename(target), dir=parent)
    try:
        for name, data in files.items():
            fd = os.open(os.path.join(tmp, name),
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            with os.fdopen(fd, "wb") as f:
                os.fchmod(fd, 0o644)
                f.write(data)
                f.flush()
                os.fsync(fd)
        os.chmod(tmp, 0o755)
        _replace_dir(tmp, target)
        _fsync_dir(parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)      # the replaced tree, if any
    return True


def _replace_dir(new, target):
    """Rename directory ``new`` to ``target``; the tree it replaces ends up at ``new``.

    rename(2) does not replace a non-empty directory: an existing one is moved aside
    first, so ``target`` is missing for a moment, but never holds a partial tree.
    """
    try:
        os.rename(new, target)
        return
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    aside = new + ".old"
    os.rename(target, aside)
    os.rename(new, target)
    os.rename(aside, new)


def _fsync_dir(path):
    """Make a rename in directory ``path`` durable (the code is on disk, not in /run)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _install(state_dir):
    """Install the daemon under ``<state_dir>/resolver``: its package, then the runner
    (so a runner never exists before a complete package), and remove the single file of
    older releases. Returns ``(runner path, True when the installed code changed)``."""
    base = os.path.join(os.path.abspath(state_dir), DNS_RESOLVER_DIR)
    os.makedirs(base, mode=0o755, exist_ok=True)
    changed = _install_tree(os.path.join(base, DNS_RESOLVER_PACKAGE), _resolver_files())
    runner = os.path.join(base, DNS_RESOLVER_RUNNER)
    changed = atomic_write(runner, RUNNER, mode=0o644) or changed
    try:
        os.unlink(os.path.join(base, DNS_RESOLVER_LEGACY_SCRIPT))
    except FileNotFoundError:
        pass
    return runner, changed


def install_resolver(state_dir):
    """Install the daemon under ``<state_dir>/resolver`` (only what differs): the
    package in ``resolver/`` and the runner ``cnm-resolver.py``.

    Returns the runner's path (``python <path> --config ...`` runs the daemon). Raises
    OSError when the directory is not writable.
    """
    return _install(state_dir)[0]


# --- configuration ----------------------------------------------------------------------
def resolver_config(sandboxes, networks, ttl=DNS_TTL, upstreams=(),
                    host_resolv_conf=DNS_HOST_RESOLV_CONF,
                    upstream_timeout=DNS_UPSTREAM_TIMEOUT):
    """Build the daemon's config (the contract of ``config.json``), names lower-cased.

    ``sandboxes``: ``{name: {"netns": path, "networks": [net], "forward": bool}}``
    (optionally ``"upstreams": [...]`` per sandbox). ``networks``: ``{net: [{"sandbox":
    name, "names": [sandbox, hostname, aliases...], "ipv4": ip or None, "ipv6": ip or
    None}]}``. Only sandboxes on at least one network with DNS belong in ``sandboxes``.
    """
    out_sb = {}
    for name in sorted(sandboxes):
        s = sandboxes[name]
        entry = {"netns": s["netns"], "networks": sorted(s.get("networks") or []),
                 "forward": bool(s.get("forward", True))}
        if s.get("upstreams"):
            entry["upstreams"] = list(s["upstreams"])
        out_sb[name] = entry
    out_net = {}
    for net in sorted(networks):
        eps = []
        for ep in networks[net]:
            names = []
            for n in ep.get("names") or []:
                n = str(n).lower().rstrip(".")
                if n and n not in names:
                    names.append(n)
            eps.append({"sandbox": ep.get("sandbox"), "names": names,
                        "ipv4": ep.get("ipv4"), "ipv6": ep.get("ipv6")})
        eps.sort(key=lambda e: (str(e["sandbox"]), e["names"]))
        out_net[net] = {"endpoints": eps}
    return {"version": DNS_CONFIG_VERSION, "ttl": int(ttl), "upstreams": list(upstreams),
            "host_resolv_conf": host_resolv_conf,
            "upstream_timeout": float(upstream_timeout),
            "sandboxes": out_sb, "networks": out_net}


def write_resolver_config(run_dir, config):
    """Write ``<run_dir>/dns/config.json`` atomically (mode 0600) if it changed.

    The running daemon notices the new file within 200 ms and applies it without
    closing the sockets of sandboxes that stay. Returns True when the content changed.
    """
    p = resolver_paths(run_dir)
    os.makedirs(p["dir"], mode=0o755, exist_ok=True)
    text = json.dumps(config, sort_keys=True, separators=(",", ":")) + "\n"
    return atomic_write(p["config"], text, mode=0o600)


def sandbox_fragment(netns, forward, records, upstreams=None):
    """The content of one sandbox's file for the daemon (the contract of
    ``<run_dir>/dns/sandboxes/<name>.json``), names lower-cased.

    ``records``: ``{net: {"names": [...], "ipv4": ip or None, "ipv6": ip or None,
    "seq": n}}`` for each network with DNS the sandbox is on (``seq`` orders answers
    with several addresses: older endpoints first).
    """
    nets = {}
    for net in sorted(records):
        rec = records[net]
        names = []
        for n in rec.get("names") or []:
            n = str(n).lower().rstrip(".")
            if n and n not in names:
                names.append(n)
        nets[net] = {"names": names, "ipv4": rec.get("ipv4"), "ipv6": rec.get("ipv6"),
                     "seq": int(rec.get("seq") or 0)}
    doc = {"version": DNS_CONFIG_VERSION, "netns": netns, "forward": bool(forward),
           "networks": nets}
    if upstreams:
        doc["upstreams"] = list(upstreams)
    return doc


def write_fragment(run_dir, name, fragment):
    """Write (or, for ``fragment`` None, remove) sandbox ``name``'s file atomically,
    mode 0600. O(1): nothing else is read or written. Returns True when it changed."""
    d = resolver_paths(run_dir)["fragments"]
    path = os.path.join(d, name + ".json")
    os.makedirs(d, mode=0o755, exist_ok=True)  # its existence means: files are complete
    if fragment is None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        return True
    text = json.dumps(fragment, sort_keys=True, separators=(",", ":")) + "\n"
    return atomic_write(path, text, mode=0o600)


def fragment_names(run_dir):
    """Names of the sandboxes that have a file for the daemon."""
    try:
        entries = os.listdir(resolver_paths(run_dir)["fragments"])
    except OSError:
        return []
    return sorted(e[:-5] for e in entries if e.endswith(".json") and not e.startswith("."))


def notify_resolver(run_dir, names=(), reload=False, timeout=DNS_CONTROL_TIMEOUT):
    """Tell the running daemon what changed and wait until it has applied it.

    Called by the engine after writing sandbox files (``names``) or the config
    (``reload``). The daemon re-reads only those files and replies once the sandboxes
    named answer on 127.0.0.11:53 (or failed to), so a workload started after this call
    gets answers from its first query. Returns the reply (``{"ok", "listening",
    "errors"}``), or None when no daemon answers on the control socket (not running,
    or one without a control socket): the caller then falls back to SIGHUP.
    """
    try:
        return _control_request(resolver_paths(run_dir)["control"],
                                {"op": "reload" if reload else "update",
                                 "sandboxes": sorted(names)}, timeout)
    except (OSError, ValueError):
        return None


def resolver_health(run_dir, timeout=HEALTH_TIMEOUT):
    """Whether the running daemon serves: True when it reports its UDP, TCP and
    forwarding loops alive, False when it reports one dead or stuck or does not answer
    its control socket within ``timeout``, None when it cannot tell: no control socket,
    or nobody listening on it (a daemon starting, or one that could not bind it), or a
    daemon of an older release that has no ``health`` request.

    One request on the control socket, answered by the daemon without taking its lock:
    ~0.2 ms (median, busy 2-core test machine; the pidfile check before it ~0.05 ms).
    """
    try:
        reply = _control_request(resolver_paths(run_dir)["control"], {"op": "health"},
                                 timeout)
    except (FileNotFoundError, ConnectionRefusedError):
        return None
    except (OSError, ValueError):
        return False                    # no answer in time, or garbage
    if not isinstance(reply, dict):
        return False
    if "failed" not in reply:
        return None                     # an older daemon: unknown op
    return bool(reply.get("ok"))


def _control_request(path, request, timeout):
    """Send ``request`` (a dict) on the daemon's control socket ``path`` and return the
    decoded reply (None when the daemon closed without one). Raises OSError (no
    socket: FileNotFoundError, nobody listening: ConnectionRefusedError, timeout) or
    ValueError (not JSON)."""
    import socket
    request = json.dumps(request).encode()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    dir_fd = -1
    try:
        sock.settimeout(timeout)
        address = path
        if len(os.fsencode(path)) >= 100:
            dir_fd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
            address = "/proc/self/fd/%d/%s" % (dir_fd, os.path.basename(path))
        sock.connect(address)
        sock.send(request)
        reply = sock.recv(1 << 20)
        return json.loads(reply) if reply else None
    finally:
        sock.close()
        if dir_fd >= 0:
            os.close(dir_fd)


# --- process ----------------------------------------------------------------------------
def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def _daemon_script(pid, pidfile):
    """The script process ``pid`` runs if it is our resolver with ``pidfile`` (the
    runner, or the single file of older releases), else None."""
    args = _cmdline(pid)
    if os.fsencode(pidfile) not in args:
        return None
    scripts = (DNS_RESOLVER_RUNNER.encode(), DNS_RESOLVER_LEGACY_SCRIPT.encode())
    for a in args:
        if a.endswith(scripts):
            return a
    return None


def _is_ours(pid, pidfile):
    return _daemon_script(pid, pidfile) is not None


def _runs_legacy(pid, pidfile):
    """True when ``pid`` is the single-file daemon of an older release."""
    script = _daemon_script(pid, pidfile)
    return script is not None and script.endswith(DNS_RESOLVER_LEGACY_SCRIPT.encode())


def resolver_status(run_dir):
    """``{"running": bool, "pid": int or None}`` from the pidfile and /proc.

    A pid is only ours if ``/proc/<pid>/cmdline`` runs the daemon (cnm-resolver.py, or
    cnm_resolver.py of older releases) with this pidfile: a stale pidfile whose pid now
    belongs to another process reads as not running (zombies have an empty cmdline and
    read as not running too).
    """
    pidfile = resolver_paths(run_dir)["pidfile"]
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return {"running": False, "pid": None}
    if pid > 0 and _is_ours(pid, pidfile):
        return {"running": True, "pid": pid}
    return {"running": False, "pid": None}


def _systemd_unit_name(run_dir):
    if os.path.abspath(run_dir) == DEFAULT_RUN_DIR:
        return DNS_SYSTEMD_UNIT
    h = hashlib.sha256(os.path.abspath(run_dir).encode()).hexdigest()[:8]
    return DNS_SYSTEMD_UNIT.replace(".service", "-%s.service" % h)


def _use_systemd(use_systemd):
    if use_systemd is None:
        return os.path.isdir("/run/systemd/system")
    return bool(use_systemd)


def _argv(python, script, paths):
    return [python, script, "--config", paths["config"], "--pidfile", paths["pidfile"],
            "--log", paths["log"]]


def _log_tail(paths, lines=5):
    try:
        with open(paths["log"], encoding="utf-8", errors="replace") as f:
            return " | ".join(f.read().splitlines()[-lines:])
    except OSError:
        return ""


def _wait_running(run_dir, timeout):
    end = time.monotonic() + timeout
    while True:
        st = resolver_status(run_dir)
        if st["running"] or time.monotonic() >= end:
            return st
        time.sleep(0.02)


def ensure_resolver(state_dir, run_dir, python=sys.executable, use_systemd=None,
                    restart=False):
    """Make sure the resolver daemon runs; called on every module run that needs DNS.

    Installs the daemon (if its code differs), then returns False when it already runs
    the current code, else starts it (restarting it after an upgrade, and replacing a
    single-file daemon of an older release) and returns True. ``restart``: restart a
    running daemon in any case (one that failed its health check).
    Without systemd the daemon double-forks out of this process (it does not die with
    the module) and reports readiness (pidfile written, first config applied) before this
    returns. With systemd (``/run/systemd/system`` exists, or ``use_systemd=True``) a
    unit with ``Restart=always`` runs it instead. The daemon inherits this process's
    network namespace: call it from the host namespace.
    Raises DependencyError when dnspython is missing for ``python``, CnmError when the
    daemon does not start (the message carries the end of its log).
    """
    script, code_changed = _install(state_dir)
    paths = resolver_paths(run_dir)
    os.makedirs(paths["dir"], mode=0o755, exist_ok=True)
    status = resolver_status(run_dir)
    current = not (code_changed or restart)
    if status["running"] and current and not _runs_legacy(status["pid"], paths["pidfile"]):
        return False
    if _use_systemd(use_systemd):
        _start_systemd(python, script, paths, run_dir, restart=status["running"])
    else:
        if status["running"]:
            stop_resolver(run_dir, use_systemd=False)
        _start_detached(python, script, paths, run_dir)
    st = _wait_running(run_dir, 1.0)
    if not st["running"]:
        raise CnmError("resolver did not start (no pidfile %s): %s"
                       % (paths["pidfile"], _log_tail(paths)))
    return True


def _start_detached(python, script, paths, run_dir):
    try:
        proc = subprocess.run(_argv(python, script, paths) + ["--daemonize"],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=START_TIMEOUT + 5, start_new_session=True,
                              cwd="/", check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CnmError("cannot start the resolver with %s: %s" % (python, e))
    if proc.returncode == 0:
        return
    if resolver_status(run_dir)["running"]:
        return                          # another run started it at the same moment
    msg = (proc.stderr or proc.stdout or "").strip()
    if "dnspython" in msg:
        raise DependencyError("the DNS resolver needs dnspython for %s: %s" % (python, msg))
    raise CnmError("resolver did not start (exit %d): %s %s"
                   % (proc.returncode, msg, _log_tail(paths)))


def _systemd_unit(python, script, paths):
    return (
        "# Generated by cnm.core: changes are overwritten.\n"
        "[Unit]\n"
        "Description=cnm embedded DNS resolver (127.0.0.11 in sandboxes)\n"
        "After=network.target\n\n"
        "[Service]\n"
        "Type=simple\n"
        "ExecStart=%s\n"
        "Restart=always\n"
        "RestartSec=1\n"
        "KillMode=process\n" % " ".join(_argv(python, script, paths))
    )


def _start_systemd(python, script, paths, run_dir, restart=False):
    unit = _systemd_unit_name(run_dir)
    path = os.path.join(DNS_SYSTEMD_UNIT_DIR, unit)
    if atomic_write(path, _systemd_unit(python, script, paths)):
        subprocess.run(["systemctl", "daemon-reload"], capture_output=True, check=False)
    proc = subprocess.run(["systemctl", "restart" if restart else "start", unit],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise CnmError("systemctl start %s failed: %s" % (unit, proc.stderr.strip()))
    _wait_running(run_dir, START_TIMEOUT)


def stop_resolver(run_dir, use_systemd=None):
    """Stop the daemon: SIGTERM, wait up to 5 s, then SIGKILL. Returns True if it ran.

    With systemd the unit is stopped too (otherwise ``Restart=always`` would bring it
    back). A stale pidfile is removed.
    """
    if _use_systemd(use_systemd):
        unit = _systemd_unit_name(run_dir)
        if os.path.exists(os.path.join(DNS_SYSTEMD_UNIT_DIR, unit)):
            subprocess.run(["systemctl", "stop", unit], capture_output=True, check=False)
    paths = resolver_paths(run_dir)
    st = resolver_status(run_dir)
    pid = st["pid"]
    if not st["running"]:
        _remove_stale_pidfile(paths["pidfile"], None)
        return False
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 2.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        end = time.monotonic() + wait
        while time.monotonic() < end and _is_ours(pid, paths["pidfile"]):
            time.sleep(0.02)
        if not _is_ours(pid, paths["pidfile"]):
            break
    _remove_stale_pidfile(paths["pidfile"], pid)
    return True


def _remove_stale_pidfile(pidfile, pid):
    try:
        with open(pidfile) as f:
            text = f.read().strip()
        if pid is None or text == str(pid):
            if not (text.isdigit() and _is_ours(int(text), pidfile)):
                os.unlink(pidfile)
    except (OSError, ValueError):
        pass
