# -*- coding: utf-8 -*-
# Copyright (c) 2026 cnm.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Controller side: send a module without the engine to a host that has it compiled.

With pipelining, Python reads the module's AnsiballZ script from stdin, and Python 3.11
parses a script from stdin at ~0.5 us per byte against ~0.05 us from a file: the 570 KB
script of a module that runs the engine cost ~280 ms per task before any of it ran,
twice ``ansible.builtin.ping``'s whole 177 KB. Most of those bytes are the engine's
sources, which the host keeps compiled after its first run of them
(``module_utils/bytecode_cache.py``).

So once a host reports (``_cnm_bytecode_cache`` in a module's result) that it holds the
compiled engine of a payload, the next tasks send it a *slim* payload: the same zip
without the engine's files (but the three the module needs to find them) and without
ansible-core's ``module_utils`` (the host caches those too; a stub ``__init__`` finds
them), plus the key of the directories that hold them. A host that does not have it (another host behind the
same name, a cleaned cache, a run without root) answers before doing anything
(``_cnm_bytecode_cache_missing``) and gets the whole payload at once: a slim payload is
never required. What a host was seen to hold is remembered under
``<ANSIBLE_HOME>/cnm_core/hosts/`` between playbook runs. ``CNM_PAYLOAD_CACHE=0`` turns
this off with the payload cache.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import zipfile

from ansible_collections.cnm.core.plugins.module_utils import bytecode_cache

PACKAGE_PREFIX = "ansible_collections/cnm/core/plugins/module_utils/"
ANSIBLE_PREFIX = bytecode_cache.ANSIBLE_PREFIX
ANSIBLE_INIT = ANSIBLE_PREFIX + "__init__.py"
# the zip literal of the AnsiballZ wrapper: ``zip_data='...'`` (ansible-core 2.19),
# ``ZIPDATA = '...'`` (2.18)
ZIP_LITERAL = re.compile(rb"(?m)^\s*(?:zip_data=|ZIPDATA = )'([A-Za-z0-9+/=]+)'")
_SLIM = {}       # sha1 of a zip literal -> (key, slim zip literal)
_MAX_REMEMBERED = 64


def slim_zip(module_data):
    """``(key, slim module_data)`` for an AnsiballZ script of one of our modules, or
    None when the script is not one this understands (then it is sent as it is)."""
    found = list(ZIP_LITERAL.finditer(module_data))
    if len(found) != 1:
        return None
    literal = found[0].group(1)
    digest = hashlib.sha1(literal).hexdigest()
    made = _SLIM.get(digest)
    if made is None:
        made = _make_slim(literal)
        if made is None:
            return None
        if len(_SLIM) >= _MAX_REMEMBERED:
            _SLIM.clear()
        _SLIM[digest] = made
    key, slim = made
    start, end = found[0].span(1)
    return key, module_data[:start] + slim + module_data[end:]


def _make_slim(literal):
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(literal))) as full:
        infos = full.infolist()
        members = bytecode_cache.members_under(infos, PACKAGE_PREFIX)
        names = {i.filename[len(PACKAGE_PREFIX):] for i in members}
        if not members or not set(bytecode_cache.SLIM_KEEPS) <= names:
            return None
        key = bytecode_cache.payload_key(PACKAGE_PREFIX, members)
        ansible_members = bytecode_cache.members_under(infos, ANSIBLE_PREFIX)
        if any(i.filename == ANSIBLE_INIT for i in ansible_members):
            key += bytecode_cache.KEY_SEPARATOR + bytecode_cache.payload_key(
                ANSIBLE_PREFIX, ansible_members)
        else:
            ansible_members = []
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as slim:
            for info in infos:
                if info.filename.startswith(PACKAGE_PREFIX):
                    if info.filename[len(PACKAGE_PREFIX):] not in bytecode_cache.SLIM_KEEPS:
                        continue
                elif ansible_members and info.filename.startswith(ANSIBLE_PREFIX):
                    if info.filename == ANSIBLE_INIT:
                        slim.writestr(info, bytecode_cache.ansible_stub(key),
                                      compress_type=info.compress_type)
                    continue
                slim.writestr(info, full.read(info), compress_type=info.compress_type)
            mark = zipfile.ZipInfo(PACKAGE_PREFIX + bytecode_cache.KEY_MEMBER,
                                   date_time=(1980, 1, 1, 0, 0, 0))
            slim.writestr(mark, key)
    return key, base64.b64encode(out.getvalue())


class HostMemory:
    """Which compiled engines (keys) a host was seen to hold: in memory, and as empty
    files ``<home>/cnm_core/hosts/<host id>/<key>`` for the next playbook runs."""

    _seen = {}   # (host id, key) -> bool, for this controller process

    def __init__(self, home, host_id):
        self.dir = os.path.join(home, "cnm_core", "hosts", host_id)
        self.host_id = host_id

    def has(self, key):
        known = self._seen.get((self.host_id, key))
        if known is None:
            known = os.path.exists(os.path.join(self.dir, key))
            self._seen[(self.host_id, key)] = known
        return known

    def remember(self, key, present):
        """Record what the host answered; a failure to write is ignored (the memory of
        this process still holds it)."""
        if self._seen.get((self.host_id, key)) == present:
            return
        self._seen[(self.host_id, key)] = present
        path = os.path.join(self.dir, key)
        try:
            if present:
                os.makedirs(self.dir, mode=0o700, exist_ok=True)
                with open(path, "w", encoding="ascii"):
                    pass
            elif os.path.exists(path):
                os.unlink(path)
        except OSError:
            pass


def host_id(*identity):
    """A file name for a host as the controller reaches it (connection, address,
    user, become...)."""
    return hashlib.sha256(repr(identity).encode("utf-8")).hexdigest()[:24]
