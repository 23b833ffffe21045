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
  network_mode:
    description:
      - V(container:<sandbox>) makes this sandbox the network namespace of that one, as
        Docker's C(--network container:<name>) (a sidecar), with the same interfaces, addresses,
        routes, published ports and 127.0.0.1. It takes no endpoints of its own.
      - Omitted or V(default), the sandbox has its own namespace. Changing it needs the
        sandbox removed first.
    type: str
    version_added: 0.2.0
  sysctls:
    description:
      - Sysctls of the sandbox's network namespace, as Docker's C(--sysctl), for example
        C(net.core.somaxconn=1024). Only namespaced C(net.*) keys; others are refused
        naming the key. Keys given are enforced (a value changed by hand is drift); a key
        left out later is no longer managed (its value stays).
    type: dict
    version_added: 0.2.0
  force:
    description:
      - With O(state=absent), also remove the sandboxes that share this one's namespace
        (O(network_mode=container:<name>)); without it their presence fails the task.
    type: bool
    default: false
    version_added: 0.2.0
notes:
  - Creating a sandbox fails when C(<netns_dir>/<name>) already exists but is not a sandbox
    of this collection (for example a namespace made with C(ip netns add)); it is never
    taken over or removed.
  - A sandbox that M(cnm.core.cnm_endpoint) created implicitly becomes a managed one once
    this module names it, and then stays when its last endpoint is removed.
  - A deleted namespace file is reported as drift and made again by the next run; the
    next run of M(cnm.core.cnm_endpoint) re-attaches its endpoints.
  - A workload still running in a removed sandbox keeps its (now unnamed) network
    namespace until it exits.
seealso:
  - module: cnm.core.cnm_endpoint
  - module: cnm.core.cnm_sandbox_info
  - module: cnm.core.cnm_dns
  - name: ip-netns(8)
    description: The named network namespaces that sandboxes are, with the default O(netns_dir).
    link: https://man7.org/linux/man-pages/man8/ip-netns.8.html
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
  description:
    - The sandbox - Id, Name, SandboxKey (the namespace file), Hostname, Created, Mode
      (V(own) for a namespace of its own, V(host) for a sandbox on the network V(host)),
      Networks (its endpoints by network name, each as
      RV(cnm.core.cnm_endpoint#module:endpoint)) and Dns (the settings made with
      M(cnm.core.cnm_dns)).
    - V(null) when the sandbox is absent.
  returned: always
  type: dict
  sample:
    Id: 40149631ddf1adc519de17a91acfc71891fae715e860f7a674c5055eed5129eb
    Name: web
    SandboxKey: /run/netns/web
    Hostname: web01
    Created: "2026-11-28T04:32:08.965119Z"
    Mode: own
    Networks: {}
    Dns: {}
actions:
  description: What was done (or would be done in check mode), one line each.
  returned: always
  type: list
  elements: str
  sample:
    - create sandbox web
"""

from ansible_collections.cnm.core.plugins.module_utils.ansible_adapter import run_module
from ansible_collections.cnm.core.plugins.module_utils.controller.engine import Engine


def main():
    run_module(
        dict(
            name=dict(type="str", required=True),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            hostname=dict(type="str"),
            network_mode=dict(type="str"),
            sysctls=dict(type="dict"),
            force=dict(type="bool", default=False),
        ),
        "sandbox", Engine,
    )


if __name__ == "__main__":
    main()
