"""The host agent's lifecycle: installed, configured, started and stopped by module runs.

The agent (``agent.py``) is a small long-running process per host, a sibling of the DNS
resolver with the same lifecycle: its code is installed under
``<state_dir>/agent/cnm_agent/`` (the few engine files it runs, copied from this
package, written only when they differ), its configuration, pidfile and log live under
``<run_dir>/agent/``, and any module run of a host that has overlay networks starts it
again when it is not running (no systemd needed; it inherits the module's network
namespace, the host's). The configuration holds the cluster store's credentials: it is
written mode 0600 and never logged.
"""
import hashlib
import json
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
# The engine files the agent runs, relative to module_utils/ (a unit test keeps this in
# line with the imports of agent.py and with _import_agent below).
AGENT_FILES = ("__init__.py", "constants.py", "errors.py", "validation.py",
               "cluster/__init__.py", "cluster/agent.py", "cluster/client.py",
               "cluster/keys.py", "cluster/peers.py",
               "dns/__init__.py", "dns/files.py", "dns/resolver_client.py",
               "netns/__init__.py", "netns/fdb.py", "netns/rtnl.py")

RUNNER = '''"""cnm host agent: runs the package %s/ installed beside this file.

Written by cnm.core (cluster/agent_service.py); changes are overwritten. Code: %%s
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from %s.cluster.agent import main  # noqa: E402

raise SystemExit(main())
''' % (C.AGENT_PACKAGE, C.AGENT_PACKAGE)


def agent_paths(run_dir):
    """``{"dir", "config", "pidfile", "log"}`` under ``<run_dir>/agent`` (absolute)."""
    d = os.path.join(os.path.abspath(run_dir), C.AGENT_RUN_SUBDIR)
    return {"dir": d, "config": os.path.join(d, C.AGENT_CONFIG_FILE),
            "pidfile": os.path.join(d, C.AGENT_PIDFILE),
            "log": os.path.join(d, C.AGENT_LOGFILE)}


def _import_agent():
    """The literal imports that make AnsiballZ (which ships only the module_utils a
    module imports) carry every file of AGENT_FILES; the last resort for their source."""
    from .. import constants, errors, validation
    from ..dns import files, resolver_client
    from ..netns import fdb, rtnl
    from . import agent, client, keys, peers
    return (constants, errors, validation, files, resolver_client, fdb, rtnl, agent, client, keys,
            peers)


def _agent_sources():
    """``{relative path: bytes}`` of AGENT_FILES, from a checkout or Ansible's payload."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    package = __name__.rsplit(".", 2)[0]
    out = {}
    for rel in AGENT_FILES:
        data = None
        try:
            import pkgutil
            data = pkgutil.get_data(package, rel)
        except (OSError, ImportError, ValueError):
            data = None
        if data is None:
            try:
                with open(os.path.join(root, rel), "rb") as f:
                    data = f.read()
            except OSError:
                data = b'"""empty"""\n' if rel.endswith("__init__.py") else None
        if data is None:
            _import_agent()
            raise CnmError("cannot read the agent's file %s" % rel)
        out[rel] = data
    return out


def install_agent(state_dir):
    """Install the agent's code under ``<state_dir>/agent`` (only what differs; the
    runner last, stamped with the code's hash). Returns ``(runner path, code hash)``.
    Raises OSError when the directory is not writable."""
    base = os.path.join(os.path.abspath(state_dir), C.AGENT_DIR)
    sources = _agent_sources()
    digest = hashlib.sha256(b"".join(sources[k] for k in sorted(sources))).hexdigest()[:16]
    for rel, data in sorted(sources.items()):
        path = os.path.join(base, C.AGENT_PACKAGE, rel)
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        atomic_write(path, data.decode("utf-8"))
    runner = os.path.join(base, C.AGENT_RUNNER)
    atomic_write(runner, RUNNER % digest)
    return runner, digest


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


def write_config(run_dir, config):
    """Write the agent's configuration (mode 0600) if it differs; True when changed."""
    paths = agent_paths(run_dir)
    os.makedirs(paths["dir"], mode=0o755, exist_ok=True)
    return atomic_write(paths["config"], json.dumps(config, indent=1, sort_keys=True) + "\n",
                        mode=0o600)


def ensure_agent(state_dir, run_dir, config, python=sys.executable):
    """Make the agent run the current code with ``config``; called by every module run
    that sets up or changes an overlay network, and on session open of a host that has
    any. Returns "started", "reloaded" or None (it ran already, nothing changed).
    Raises CnmError when it does not start (the message carries its log's end)."""
    runner, digest = install_agent(state_dir)
    paths = agent_paths(run_dir)
    config_changed = write_config(run_dir, config)
    status = agent_status(run_dir)
    if status["running"] and _runs_code(status["pid"], digest):
        if config_changed:
            os.kill(status["pid"], signal.SIGHUP)
            return "reloaded"
        return None
    if status["running"]:
        stop_agent(run_dir)
    with open(paths["log"], "ab") as log:
        proc = subprocess.Popen([python, runner, "--config", paths["config"]],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, close_fds=True, cwd="/",
                                env=dict(os.environ, CNM_AGENT_CODE=digest))
    atomic_write(paths["pidfile"], "%d\n" % proc.pid)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CnmError("the host agent exited at once (%s): %s"
                           % (proc.returncode, _log_tail(paths)))
        if os.path.exists(paths["pidfile"] + ".ready"):
            break
        time.sleep(0.02)
    return "started"


def _runs_code(pid, digest):
    """Whether the running agent started from the runner stamped ``digest``."""
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            env = f.read()
    except OSError:
        return True
    marker = b"CNM_AGENT_CODE="
    if marker not in env:
        return True
    return (marker + digest.encode()) in env.split(b"\0")


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
