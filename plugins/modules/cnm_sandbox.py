#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026 cnm.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: cnm_sandbox
short_description: Manage sandboxes (network namespaces for workloads)
version_added: 0.1.0
description:
  - A sandbox is a network namespace bound at C(<netns_dir>/<name>) (so
    C(ip netns exec <name>) works with the default O(netns_dir)) with loopback up, a
    hostname and DNS files. A workload (process, systemd unit with
    C(NetworkNamespacePath=), OCI runtime) lives in it.
  - O(state=absent) detaches its endpoints first, then removes the namespace.
  - A sandbox created by this module stays when its last endpoint is removed.
author: Cnm Core Maintainers (@cnm-core)
extends_documentation_fragment:
  - cnm.core.common
  - cnm.core.common.attributes
options:
  name:
    description: Sandbox name.
    type: str
    required: true
  state:
    description: Whether the sandbox should exist.
    type: str
    choices: [present, absent]
    default: present
  hostname:
    description: Hostname recorded for the sandbox (default its name).
    type: str
"""

EXAMPLES = r"""
- name: A sandbox for a workload
  cnm.core.cnm_sandbox:
    name: web
    hostname: web01

- name: Remove it with all its endpoints
  cnm.core.cnm_sandbox:
    name: web
    state: absent
"""

RETURN = r"""
sandbox:
  description: The sandbox (Id, Name, SandboxKey, Hostname, Networks); V(null) when absent.
  returned: always
  type: dict
actions:
  description: What was done (or would be done in check mode).
  returned: always
  type: list
  elements: str
"""

from ansible_collections.cnm.core.plugins.module_utils.ansible_adapter import run_module


def main():
    run_module(
        dict(
            name=dict(type="str", required=True),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            hostname=dict(type="str"),
        ),
        "sandbox",
    )


if __name__ == "__main__":
    main()
