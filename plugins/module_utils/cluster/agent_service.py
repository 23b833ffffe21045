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
import sys

from .. import constants as C
from ..dns.files import atomic_write
from ..errors import CnmError
from .agent_process import (agent_paths, agent_status, runs_code, start_agent,
                            stop_agent)

# The engine files the agent runs, relative to module_utils/ (a unit test keeps this in
# line with the imports of agent.py and with _import_agent below).
AGENT_FILES = ("__init__.py", "constants.py", "errors.py", "validation.py",
               "cluster/__init__.py", "cluster/agent.py", "cluster/client.py",
               "cluster/keys.py", "cluster/peers.py",
               "dns/__init__.py", "dns/files.py", "dns/resolver_client.py",
               "netns/__init__.py", "netns/esp_marks.py", "netns/fdb.py", "netns/rtnl.py",
               "netns/xfrm.py", "netns/xfrm_netlink.py")

RUNNER = '''"""cnm host agent: runs the package %s/ installed beside this file.

Written by cnm.core (cluster/agent_service.py); changes are overwritten. Code: %%s
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from %s.cluster.agent import main  # noqa: E402

raise SystemExit(main())
''' % (C.AGENT_PACKAGE, C.AGENT_PACKAGE)


def _import_agent():
    """The literal imports that make AnsiballZ (which ships only the module_utils a
    module imports) carry every file of AGENT_FILES; the last resort for their source."""
    from .. import constants, errors, validation
    from ..dns import files, resolver_client
    from ..netns import esp_marks, fdb, rtnl, xfrm, xfrm_netlink
    from . import agent, client, keys, peers
    return (constants, errors, validation, files, resolver_client, esp_marks, fdb, rtnl, xfrm,
            xfrm_netlink, agent, client, keys, peers)


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
            data = _source_of(package, rel)
        if data is None:
            raise CnmError("cannot read the agent's file %s" % rel)
        out[rel] = data
    return out


def _source_of(package, rel):
    """The source of AGENT_FILES entry ``rel`` from its imported module: where the
    modules live in no file (Mitogen serves them from memory). None when unknown."""
    import inspect
    name = package + "." + rel[:-3].replace("/", ".")
    for module in _import_agent():
        if module.__name__ == name:
            try:
                return inspect.getsource(module).encode("utf-8")
            except (OSError, TypeError):
                return None
    return None


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
    config_changed = write_config(run_dir, config)
    status = agent_status(run_dir)
    if status["running"] and runs_code(status["pid"], digest):
        if config_changed:
            os.kill(status["pid"], signal.SIGHUP)
            return "reloaded"
        return None
    if status["running"]:
        stop_agent(run_dir)
    start_agent(python, runner, digest, run_dir)
    return "started"


def retire_agent(run_dir):
    """The host has no overlay network left: stop the agent and remove its
    configuration (so no later run revives it). Returns True when it was running."""
    ran = stop_agent(run_dir)
    try:
        os.unlink(agent_paths(run_dir)["config"])
    except FileNotFoundError:
        pass
    return ran
