"""The host agent's process: its status, start and stop, by pidfile and own PID.

Kept apart from ``agent_service.py`` (which installs the agent's code and writes its
configuration) so that a module that only reads, ``cnm_network_info`` for one, can bring
a dead agent back from its existing configuration without shipping or importing the
agent's code, the cluster client or netlink.
"""
import os
import signal
import subprocess
import sys
import time

from .. import constants as C
from ..dns.files import atomic_write
from ..errors import CnmError

START_TIMEOUT = 3.0
STOP_TIMEOUT = 3.0
CODE_ENV = "CNM_AGENT_CODE"
CODE_MARK = "Code: "


def agent_paths(run_dir):
    """``{"dir", "config", "pidfile", "log"}`` under ``<run_dir>/agent`` (absolute)."""
    d = os.path.join(os.path.abspath(run_dir), C.AGENT_RUN_SUBDIR)
    return {"dir": d, "config": os.path.join(d, C.AGENT_CONFIG_FILE),
            "pidfile": os.path.join(d, C.AGENT_PIDFILE),
            "log": os.path.join(d, C.AGENT_LOGFILE)}


def agent_status(run_dir):
    """``{"running": bool, "pid": int or None}`` from the pidfile (a pid whose command
    line is not our agent's does not count)."""
    paths = agent_paths(run_dir)
    try:
        with open(paths["pidfile"]) as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return {"running": False, "pid": None}
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmdline = f.read().split(b"\0")
    except OSError:
        return {"running": False, "pid": pid}
    ours = any(arg.endswith(C.AGENT_RUNNER.encode()) for arg in cmdline) and \
        paths["config"].encode() in cmdline
    return {"running": ours, "pid": pid}


def runs_code(pid, digest):
    """Whether the running agent started from the runner stamped ``digest``."""
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            env = f.read()
    except OSError:
        return True
    marker = CODE_ENV.encode() + b"="
    if marker not in env:
        return True
    return (marker + digest.encode()) in env.split(b"\0")


def start_agent(python, runner, digest, run_dir):
    """Start the agent (``python runner --config <run_dir>/agent/config.json``) in
    this process's network namespace, detached (its own session, output to its log),
    and wait up to START_TIMEOUT s for its first full sync. Raises CnmError when it
    exits at once (the message carries its log's end)."""
    paths = agent_paths(run_dir)
    with open(paths["log"], "ab") as log:
        proc = subprocess.Popen([python, runner, "--config", paths["config"]],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, close_fds=True, cwd="/",
                                env=dict(os.environ, **{CODE_ENV: digest}))
    atomic_write(paths["pidfile"], "%d\n" % proc.pid)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CnmError("the host agent exited at once (%s): %s"
                           % (proc.returncode, _log_tail(paths)))
        if os.path.exists(paths["pidfile"] + ".ready"):
            break
        time.sleep(0.02)


def agent_configured(state_dir, run_dir):
    """True when this host has an agent to run (configuration and code installed)."""
    runner = os.path.join(os.path.abspath(state_dir), C.AGENT_DIR, C.AGENT_RUNNER)
    return os.path.exists(agent_paths(run_dir)["config"]) and os.path.exists(runner)


def revive_agent(state_dir, run_dir, python=sys.executable):
    """Called when any module run opens a host: an agent that was configured (the host
    has overlay networks) but is not running is started again from its configuration
    and installed code; it catches up with a full sync. Returns True when it was
    started. Never contacts the cluster store. Raises CnmError when it cannot start."""
    paths = agent_paths(run_dir)
    runner = os.path.join(os.path.abspath(state_dir), C.AGENT_DIR, C.AGENT_RUNNER)
    if not os.path.exists(paths["config"]) or not os.path.exists(runner):
        return False
    if agent_status(run_dir)["running"]:
        return False
    digest = ""
    try:
        with open(runner) as f:
            for line in f:
                if CODE_MARK in line:
                    digest = line.rsplit(CODE_MARK, 1)[1].strip()
                    break
    except OSError:
        return False
    start_agent(python, runner, digest, run_dir)
    return True


def stop_agent(run_dir):
    """Stop the agent by its pid (SIGTERM, then SIGKILL). Returns True if it ran."""
    paths = agent_paths(run_dir)
    status = agent_status(run_dir)
    for suffix in ("", ".ready"):
        try:
            os.unlink(paths["pidfile"] + suffix)
        except OSError:
            pass
    if not status["running"]:
        return False
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 1.0)):
        try:
            os.kill(status["pid"], sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not os.path.exists("/proc/%d" % status["pid"]) or _zombie(status["pid"]):
                return True
            time.sleep(0.02)
    return True


def _zombie(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _log_tail(paths, lines=5):
    try:
        with open(paths["log"], errors="replace") as f:
            return " | ".join(f.read().splitlines()[-lines:])
    except OSError:
        return "(no log)"
