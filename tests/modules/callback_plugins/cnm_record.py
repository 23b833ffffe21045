# Copyright (c) 2025 cnm.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Test aid: append every task result of a playbook run to a JSON-lines file.

ansible-core 2.19 no longer ships a JSON stdout callback (``ansible.builtin.json`` is a
redirect to ansible.posix), so tests/modules/ansible_runner.py enables this one beside the
default stdout callback: the human-readable output stays on stdout, and the results land in
the file named by the environment variable ``CNM_RECORD_FILE``.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: cnm_record
type: aggregate
short_description: Record task results as JSON lines (tests only)
description:
  - Appends one JSON object per task result to the file named by E(CNM_RECORD_FILE).
requirements:
  - E(CNM_RECORD_FILE) set to a writable path.
"""

import json
import os

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    """Write ``{"task", "host", "status", "action", "result"}`` per task result."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "cnm_record"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._path = os.environ.get("CNM_RECORD_FILE")

    def _write(self, record):
        if not self._path:
            return
        with open(self._path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=str, sort_keys=True) + "\n")

    def _record(self, result, status):
        # ansible-core 2.19's public names, or 2.18's private ones
        task = getattr(result, "task", None) or result._task
        host = getattr(result, "host", None) or result._host
        values = getattr(result, "result", None)
        self._write({
            "kind": "result",
            "task": task.get_name(),
            "action": task.action,
            "host": host.get_name(),
            "status": status,
            "result": dict(values if values is not None else result._result),
        })

    def v2_runner_on_ok(self, result):
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, "ignored" if ignore_errors else "failed")

    def v2_runner_on_skipped(self, result):
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._record(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        self._write({"kind": "stats", "stats": {
            host: stats.summarize(host) for host in sorted(stats.processed)}})
