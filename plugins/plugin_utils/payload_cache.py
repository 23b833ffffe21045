# -*- coding: utf-8 -*-
# Copyright (c) 2026 cnm.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Controller side: a module's AnsiballZ payload kept from one playbook run to the next.

Ansible builds the payload of a module (the module plus every module_utils file it
imports, found by parsing each file with ``ast``, zipped) once per ``ansible-playbook``
process, in a cache under that process's local temporary directory, and deletes it at
exit. A module that runs the engine ships ~110 files (~840 KB of source) of this
collection: building its payload takes ~0.45 s, paid by the first task of each cnm module
in every playbook run (issue #13).

``PayloadCacheAction`` is the action plugin of every cnm module. Before the task it
copies a payload Ansible built in an earlier run into this run's cache, if one was kept
for exactly the same sources. After a task whose payload Ansible had to build, it keeps
a copy. The payload is Ansible's own file, copied unread; only when it is built changes.
The key is a hash of everything the payload is built from: ansible-core's version,
location and module_utils files (size and mtime), the configured module_utils paths
(likewise), the module file (path and contents) and every file under this collection's
``plugins/module_utils`` (contents). Keys change with every edit, so a stale payload
cannot be used. The copies live under ``<ANSIBLE_HOME>/cnm_core/payloads/<module>/<key>/``,
the newest ``KEEP`` keys per module.

A failure of the cache (an unreadable or full disk) is ignored: the task then builds its
payload as Ansible always does. ``CNM_PAYLOAD_CACHE=0`` (or ``false``/``no``/``off``)
turns the cache off.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile

import ansible
from ansible import constants as C
from ansible.release import __version__ as ANSIBLE_VERSION
from ansible.plugins.action.normal import ActionModule as NormalAction
from ansible.utils.display import Display

from ansible_collections.cnm.core.plugins.module_utils import bytecode_cache
from ansible_collections.cnm.core.plugins.plugin_utils import slim_payload

display = Display()

ENV_SWITCH = "CNM_PAYLOAD_CACHE"
KEEP = 4  # keys per module: a few checkouts or versions side by side
# Files of Ansible's per-run cache that are not payloads (a lock, a half-written file).
_NOT_PAYLOAD = (".lock", "-part")


def enabled(environ=None):
    """False when ``CNM_PAYLOAD_CACHE`` turns the cache off."""
    value = (environ if environ is not None else os.environ).get(ENV_SWITCH, "1")
    return value.strip().lower() not in ("0", "false", "no", "off")


def payload_prefix(module_path):
    """The name Ansible's per-run cache gives this module's payload files, up to the
    first ``-`` (``ansible_collections.cnm.core.plugins.modules.cnm_topology-``), or None
    for a module outside a collection tree."""
    parts = os.path.normpath(module_path).split(os.sep)
    if "ansible_collections" not in parts or not parts[-1].endswith(".py"):
        return None
    start = len(parts) - 1 - parts[::-1].index("ansible_collections")
    names = parts[start:]
    names[-1] = names[-1][:-3]
    return ".".join(names) + "-"


def _stat_tree(digest, top):
    """Feed (path, size, mtime) of every .py file under ``top`` into ``digest``."""
    for root, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            stat = os.stat(os.path.join(root, name))
            digest.update(("%s/%s %d %d\n" % (root, name, stat.st_size,
                                              stat.st_mtime_ns)).encode())


def _hash_tree(digest, top):
    """Feed (relative path, contents) of every .py file under ``top`` into ``digest``."""
    for root, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(root, name)
            digest.update(("%s\n" % os.path.relpath(path, top)).encode())
            with open(path, "rb") as fh:
                digest.update(hashlib.sha256(fh.read()).digest())


def payload_key(module_path, module_utils_paths=()):
    """Hex key of the sources ``module_path``'s payload is built from (see the module
    docstring). Raises OSError when a source cannot be read."""
    digest = hashlib.sha256()
    ansible_dir = os.path.dirname(os.path.abspath(ansible.__file__))
    digest.update(("ansible-core %s %s\n" % (ANSIBLE_VERSION, ansible_dir)).encode())
    _stat_tree(digest, os.path.join(ansible_dir, "module_utils"))
    for path in module_utils_paths or ():
        digest.update(("module_utils path %s\n" % path).encode())
        if os.path.isdir(path):
            _stat_tree(digest, path)
    # the path too: with ansible-core's debugger extension the payload maps back to it
    digest.update(("module %s\n" % os.path.abspath(module_path)).encode())
    with open(module_path, "rb") as fh:
        digest.update(hashlib.sha256(fh.read()).digest())
    plugins = os.path.dirname(os.path.dirname(os.path.abspath(module_path)))
    _hash_tree(digest, os.path.join(plugins, "module_utils"))
    return digest.hexdigest()[:32]


def _payload_files(directory, prefix):
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix) and not n.endswith(_NOT_PAYLOAD))


def _copy_atomic(src, dest_dir, name):
    """Copy ``src`` to ``dest_dir/name`` so that no reader ever sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=".%s." % name)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, os.path.join(dest_dir, name))
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def seed(runtime_dir, store_dir, prefix):
    """Before a task: copy the kept payload files of ``store_dir`` into Ansible's per-run
    cache ``runtime_dir``. Returns True when it did (nothing to keep after the task),
    False when none is kept yet. Raises OSError."""
    kept = _payload_files(store_dir, prefix)
    if not kept:
        return False
    os.makedirs(runtime_dir, exist_ok=True)
    for name in kept:
        _copy_atomic(os.path.join(store_dir, name), runtime_dir, name)
    os.utime(store_dir)  # the newest keys survive the pruning in keep()
    return True


def keep(runtime_dir, store_dir, prefix):
    """After a task whose payload Ansible built: copy it from ``runtime_dir`` into
    ``store_dir``, then drop all but the ``KEEP`` newest keys of this module.
    Raises OSError."""
    built = _payload_files(runtime_dir, prefix)
    if not built:
        return
    os.makedirs(store_dir, exist_ok=True)
    for name in built:
        _copy_atomic(os.path.join(runtime_dir, name), store_dir, name)
    module_dir = os.path.dirname(store_dir)
    keys = sorted((os.path.join(module_dir, k) for k in os.listdir(module_dir)),
                  key=os.path.getmtime, reverse=True)
    for old in keys[KEEP:]:
        shutil.rmtree(old, ignore_errors=True)


def _home():
    return getattr(C, "ANSIBLE_HOME", None) or os.path.expanduser("~/.ansible")


class PayloadCacheAction(NormalAction):
    """The ``normal`` action (run the module), with its payload kept across runs and
    sent slim to a host that holds the compiled engine (``slim_payload.py``)."""

    _cnm_slim = None    # during _execute_module: {"memory", "sent", "full"}

    def _execute_module(self, *args, **kwargs):
        """Run the module; slim when the host is known to hold its engine, again whole
        when the host answers that it does not."""
        module_name = kwargs.get("module_name") or (args[0] if args else None)
        if (not enabled() or kwargs.get("wrap_async") or self._task.async_val
                or (module_name and module_name != self._task.action)):
            return super(PayloadCacheAction, self)._execute_module(*args, **kwargs)
        pc = self._play_context
        memory = slim_payload.HostMemory(_home(), slim_payload.host_id(
            getattr(self._connection, "transport", None), pc.remote_addr, pc.port,
            pc.remote_user, pc.become, pc.become_user,
            (kwargs.get("task_vars") or {}).get("inventory_hostname")))
        self._cnm_slim = {"memory": memory, "sent": None, "full": False}
        try:
            result = super(PayloadCacheAction, self)._execute_module(*args, **kwargs)
            if self._learn(result) and self._cnm_slim["sent"] == "slim":
                self._cnm_slim["full"] = True
                result = super(PayloadCacheAction, self)._execute_module(*args, **kwargs)
                self._learn(result)
        finally:
            self._cnm_slim = None
        return result

    def _learn(self, result):
        """Take our keys out of ``result`` and remember what they say of the host;
        True when a slim payload found its engine missing."""
        if not isinstance(result, dict):
            return False
        used = result.pop(bytecode_cache.USED_RESULT_KEY, None)
        missing = result.pop(bytecode_cache.MISSING_RESULT_KEY, None)
        memory = self._cnm_slim["memory"]
        if used:
            memory.remember(used, True)
        if missing:
            memory.remember(missing, False)
            display.vvv("cnm.core: the host has no compiled engine %s: sending it whole"
                        % missing)
            return True
        return False

    def _configure_module(self, *args, **kwargs):
        built = super(PayloadCacheAction, self)._configure_module(*args, **kwargs)
        state = self._cnm_slim
        if not state or state["full"]:
            return built
        try:
            if len(built) == 2:     # ansible-core 2.19: (_BuiltModule, module_path)
                data = built[0].b_module_data
            else:                   # 2.18: (style, shebang, data, module_path)
                data = built[2]
            slim = slim_payload.slim_zip(data)
            if slim is None or not state["memory"].has(slim[0]):
                state["sent"] = "full"
                return built
            state["sent"] = "slim"
            if len(built) == 2:
                import dataclasses
                return dataclasses.replace(built[0], b_module_data=slim[1]), built[1]
            return built[0], built[1], slim[1], built[3]
        except Exception as exc:  # pylint: disable=broad-except
            display.vvvv("cnm.core slim payload: not used (%s)" % exc)
            state["sent"] = "full"
            return built

    def run(self, tmp=None, task_vars=None):
        pending = None if self._under_mitogen() else self._seed_payload()
        result = super(PayloadCacheAction, self).run(tmp, task_vars)
        if pending:
            try:
                keep(*pending)
            except OSError as exc:
                display.vvvv("cnm.core payload cache: not kept (%s)" % exc)
        return result

    def _under_mitogen(self):
        """True when Mitogen runs the task: it sends the module its own way (no AnsiballZ
        payload is built), so there is nothing to seed or keep, and hashing the sources
        for a key (~4 ms) would be a cost of every task."""
        return type(self._connection).__module__.startswith("ansible_mitogen")

    def _seed_payload(self):
        """Seed this run's payload cache; returns (runtime_dir, store_dir, prefix) when
        the payload Ansible is about to build should be kept, else None."""
        if not enabled():
            return None
        try:
            found = self._shared_loader_obj.module_loader.find_plugin_with_context(
                self._task.action, collection_list=self._task.collections)
            module_path = found.plugin_resolved_path if found.resolved else None
            prefix = payload_prefix(module_path) if module_path else None
            if not prefix:
                return None
            runtime_dir = os.path.join(C.DEFAULT_LOCAL_TMP, "ansiballz_cache")
            if _payload_files(runtime_dir, prefix):
                return None  # built or seeded earlier in this run
            key = payload_key(module_path, C.DEFAULT_MODULE_UTILS_PATH)
            store_dir = os.path.join(_home(), "cnm_core", "payloads", prefix[:-1], key)
            if seed(runtime_dir, store_dir, prefix):
                return None
            return runtime_dir, store_dir, prefix
        except OSError as exc:
            display.vvvv("cnm.core payload cache: not used (%s)" % exc)
            return None
