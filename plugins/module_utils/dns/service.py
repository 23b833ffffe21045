"""Engine side of the resolver daemon: install, configure, start, check, stop.

The daemon (``server.py``) must not run from Ansible's temporary module payload, which
is deleted when the module exits: ``install_resolver`` copies its source to
``<state_dir>/resolver/cnm_resolver.py`` and the daemon runs from there. The daemon
reads ``<run_dir>/dns/config.json`` (global settings, ``write_resolver_config``) and one
file per sandbox under ``<run_dir>/dns/sandboxes/`` (``write_fragment``).

Call order for the controller, on every run that touches DNS (see dns_sync.sync):
write the config and the files of the sandboxes the run changed, ``ensure_resolver``
(starts it if it is not running, restarts it after an upgrade), then
``notify_resolver`` with the changed sandboxes: it returns once the daemon applied them.
The daemon also notices changed files by itself within 1 s (hand edits, older engines).
"""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

from ..constants import (
    DNS_CONFIG_FILE, DNS_CONFIG_VERSION, DNS_CONTROL_SOCKET, DNS_CONTROL_TIMEOUT,
    DNS_FRAGMENTS_SUBDIR, DNS_HOST_RESOLV_CONF, DNS_LOGFILE, DNS_PIDFILE,
    DNS_RESOLVER_DIR, DNS_RESOLVER_SCRIPT, DNS_RUN_SUBDIR, DNS_SYSTEMD_UNIT,
    DNS_SYSTEMD_UNIT_DIR, DNS_TTL, DNS_UPSTREAM_TIMEOUT, DEFAULT_RUN_DIR,
)
from ..errors import CnmError, DependencyError
from .files import atomic_write

START_TIMEOUT = 10.0     # whole start, including the daemon's first config load
STOP_TIMEOUT = 5.0


# --- paths ------------------------------------------------------------------------------
def resolver_paths(run_dir):
    """``{"dir", "config", "fragments", "control", "pidfile", "log"}`` under
    ``<run_dir>/dns`` (absolute)."""
    d = os.path.join(os.path.abspath(run_dir), DNS_RUN_SUBDIR)
    return {"dir": d, "config": os.path.join(d, DNS_CONFIG_FILE),
            "fragments": os.path.join(d, DNS_FRAGMENTS_SUBDIR),
            "control": os.path.join(d, DNS_CONTROL_SOCKET),
            "pidfile": os.path.join(d, DNS_PIDFILE), "log": os.path.join(d, DNS_LOGFILE)}


def _server_source():
    """The daemon's source, from a checkout or from Ansible's zip payload.

    Read as data, not imported: every module run that touches DNS compares it with the
    installed copy, and importing the 1,400-line daemon cost a cold run ~10 ms.
    """
    try:
        import pkgutil
        data = pkgutil.get_data(__name__.rpartition(".")[0], "server.py")
        if data:
            return data
    except (OSError, ImportError, ValueError):
        pass
    try:
        with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "server.py"),
                  "rb") as f:
            return f.read()
    except OSError:
        import inspect
        # this import also makes AnsiballZ ship server.py with the module
        from . import server
        return inspect.getsource(server).encode("utf-8")


def _install(state_dir):
    path = os.path.join(os.path.abspath(state_dir), DNS_RESOLVER_DIR, DNS_RESOLVER_SCRIPT)
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    return path, atomic_write(path, _server_source(), mode=0o644)


def install_resolver(state_dir):
    """Copy the daemon to ``<state_dir>/resolver/cnm_resolver.py`` (only if it differs).

    Returns the installed path. Raises OSError when the directory is not writable.
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
    named listen on 127.0.0.11:53 (or failed to), so a workload started after this call
    gets answers from its first query. Returns the reply (``{"ok", "listening",
    "errors"}``), or None when no daemon answers on the control socket (not running,
    or one without a control socket): the caller then falls back to SIGHUP.
    """
    import socket
    path = resolver_paths(run_dir)["control"]
    if not os.path.exists(path):
        return None
    request = json.dumps({"op": "reload" if reload else "update",
                          "sandboxes": sorted(names)}).encode()
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
    except (OSError, ValueError):
        return None
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


def _is_ours(pid, pidfile):
    args = _cmdline(pid)
    return (any(a.endswith(DNS_RESOLVER_SCRIPT.encode()) for a in args)
            and os.fsencode(pidfile) in args)


def resolver_status(run_dir):
    """``{"running": bool, "pid": int or None}`` from the pidfile and /proc.

    A pid is only ours if ``/proc/<pid>/cmdline`` runs cnm_resolver.py with this
    pidfile: a stale pidfile whose pid now belongs to another process reads as not
    running (zombies have an empty cmdline and read as not running too).
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


def ensure_resolver(state_dir, run_dir, python=sys.executable, use_systemd=None):
    """Make sure the resolver daemon runs; called on every module run that needs DNS.

    Installs the daemon (if its code differs), then returns False when it already runs
    the current code, else starts it (restarting it after an upgrade) and returns True.
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
    if status["running"] and not code_changed:
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
