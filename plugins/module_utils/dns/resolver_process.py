"""Starting and stopping the resolver daemon installed under ``<state_dir>/resolver``.

``service.py`` installs the daemon's code (it ships the resolver package) and calls
``start_resolver``; an info run, which ships no resolver code, brings a dead daemon back
from its installed copy with ``revive_installed``. Without systemd the daemon
double-forks out of the calling process and reports readiness (pidfile written, first
config applied) before ``start_resolver`` returns; with systemd a unit with
``Restart=always`` runs it.
"""
import hashlib
import os
import signal
import subprocess
import sys
import time

from ..constants import (
    DEFAULT_RUN_DIR, DNS_RESOLVER_DIR, DNS_RESOLVER_PACKAGE, DNS_RESOLVER_RUNNER,
    DNS_SYSTEMD_UNIT, DNS_SYSTEMD_UNIT_DIR,
)
from ..errors import CnmError, DependencyError
from .files import atomic_write
from .resolver_client import _is_ours, notify_resolver, resolver_paths, resolver_status

START_TIMEOUT = 10.0     # whole start, including the daemon's first config load
STOP_TIMEOUT = 5.0


def start_resolver(python, script, run_dir, use_systemd=None, running=False):
    """Start the daemon ``script`` (an installed runner) for ``run_dir``, replacing the
    one running when ``running``; return once it reports ready.

    Called by ``service.ensure_resolver`` after installing, and by ``revive_installed``.
    Raises DependencyError when dnspython is missing for ``python``, CnmError when the
    daemon does not start (the message carries the end of its log).
    """
    paths = resolver_paths(run_dir)
    os.makedirs(paths["dir"], mode=0o755, exist_ok=True)
    if _use_systemd(use_systemd):
        _start_systemd(python, script, paths, run_dir, restart=running)
    else:
        if running:
            stop_resolver(run_dir, use_systemd=False)
        _start_detached(python, script, paths, run_dir)
    st = _wait_running(run_dir, 1.0)
    if not st["running"]:
        raise CnmError("resolver did not start (no pidfile %s): %s"
                       % (paths["pidfile"], _log_tail(paths)))


def revive_installed(state_dir, run_dir, python=sys.executable, restart=False):
    """Start the daemon already installed under ``<state_dir>/resolver`` when it does
    not run (or, with ``restart``, in any case). Called by the info runs, which ship
    no resolver code. Returns True when it started one, False when one runs already
    or no complete installed copy exists (the next writing run installs and starts
    it). Raises as ``start_resolver``.
    """
    base = os.path.join(os.path.abspath(state_dir), DNS_RESOLVER_DIR)
    script = os.path.join(base, DNS_RESOLVER_RUNNER)
    package = os.path.join(base, DNS_RESOLVER_PACKAGE, "daemon.py")
    if not (os.path.isfile(script) and os.path.isfile(package)):
        return False
    running = resolver_status(run_dir)["running"]
    if running and not restart:
        return False
    start_resolver(python, script, run_dir, running=running)
    return True


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
    end = time.monotonic() + START_TIMEOUT
    if _wait_running(run_dir, START_TIMEOUT)["running"]:
        # The pidfile comes first, the first config load after it: wait for the load
        # too, as the detached start does (a boot-time `cnm restore` otherwise returns
        # while sandboxes' 127.0.0.11 does not answer yet).
        _wait_serving(run_dir, end - time.monotonic())


def _wait_serving(run_dir, timeout):
    """Wait until the daemon has applied its config: a ``reload`` on its control
    socket is answered only after the load in progress. Returns False on timeout."""
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return False
        if notify_resolver(run_dir, reload=True, timeout=left) is not None:
            return True
        time.sleep(0.05)


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
