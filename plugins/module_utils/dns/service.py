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
``notify_resolver`` (``resolver_client.py``) with the changed sandboxes: it returns once
the daemon applied them.
The daemon also notices changed files by itself within 1 s (hand edits, older engines).
"""
import errno
import os
import shutil
import sys
import tempfile

from ..constants import (
    DNS_RESOLVER_DIR, DNS_RESOLVER_LEGACY_SCRIPT, DNS_RESOLVER_PACKAGE, DNS_RESOLVER_RUNNER,
)
from .files import atomic_write
# The running daemon as the engine sees it (paths, files, status, control socket) lives
# in resolver_client.py, starting and stopping the installed daemon in
# resolver_process.py (an info run revives a dead resolver from its installed copy
# without shipping this file); their names stay importable from here.
from .resolver_process import (  # noqa: F401 pylint: disable=unused-import
    START_TIMEOUT, STOP_TIMEOUT, _systemd_unit, _systemd_unit_name, start_resolver,
    stop_resolver,
)
from .resolver_client import (  # noqa: F401 pylint: disable=unused-import
    HEALTH_TIMEOUT, _is_ours, _runs_legacy, fragment_names, notify_resolver, resolver_config,
    resolver_health, resolver_paths, resolver_status, sandbox_fragment, write_fragment,
    write_resolver_config,
)


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
    start_resolver(python, script, run_dir, use_systemd=use_systemd, running=status["running"])
    return True
