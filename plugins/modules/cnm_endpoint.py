#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026 cnm.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: cnm_endpoint
short_description: Join a sandbox (network namespace) to a container network
version_added: 0.1.0
description:
  - Attaches the sandbox O(sandbox) to network O(network) - a veth pair whose peer lives in
    the sandbox, an address from the network's IPAM, a MAC derived from it, a default
    route - or detaches it.
  - The sandbox is created when missing (a namespace at C(<netns_dir>/<sandbox>)); a
    sandbox made this way is removed again with its last endpoint.
  - A sandbox on V(host) shares the host's namespace; one on V(none) has only loopback.
author: Cnm Core Maintainers (@cnm-core)
extends_documentation_fragment:
  - cnm.core.common
  - cnm.core.common.attributes
options:
  network:
    description: Network name.
    type: str
    required: true
  sandbox:
    description: Sandbox name (the namespace file name under O(netns_dir)).
    type: str
    required: true
  state:
    description: Whether the endpoint should exist.
    type: str
    choices: [present, absent]
    default: present
  ipv4_address:
    description: Static IPv4 address; must be inside the subnet (and its ip_range) and free.
    type: str
  ipv6_address:
    description: Static IPv6 address (the network needs O(cnm.core.cnm_network#module:enable_ipv6)).
    type: str
  mac_address:
    description: Static MAC address; default C(02:42) followed by the IPv4 address bytes.
    type: str
  aliases:
    description: DNS names of this endpoint on this network (answered by the embedded resolver).
    type: list
    elements: str
  interface_name:
    description: Interface name inside the sandbox; default the first free V(ethN).
    type: str
  gw_priority:
    description:
      - When the sandbox is on several networks, the endpoint with the highest priority
        provides the default route (ties - the oldest endpoint).
    type: int
"""

EXAMPLES = r"""
- name: Attach sandbox web to network frontend with a fixed address
  cnm.core.cnm_endpoint:
    network: frontend
    sandbox: web
    ipv4_address: 10.89.1.10
    aliases: [www]

- name: Detach it
  cnm.core.cnm_endpoint:
    network: frontend
    sandbox: web
    state: absent
"""

RETURN = r"""
endpoint:
  description: The endpoint (EndpointID, NetworkID, SandboxKey, InterfaceName, IPAddress,
    IPPrefixLen, Gateway, GlobalIPv6Address, MacAddress, Aliases, ...); V(null) when absent.
  returned: always
  type: dict
  sample:
    EndpointID: 9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b
    NetworkID: 3f2c8e0d1b6a4c5e9f7a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e
    SandboxKey: /run/netns/web
    InterfaceName: eth0
    IPAddress: 10.89.1.10
    IPPrefixLen: 24
    Gateway: 10.89.1.1
    GlobalIPv6Address: ""
    MacAddress: "02:42:0a:59:01:0a"
    Aliases: [www]
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
            network=dict(type="str", required=True),
            sandbox=dict(type="str", required=True),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            ipv4_address=dict(type="str"),
            ipv6_address=dict(type="str"),
            mac_address=dict(type="str"),
            aliases=dict(type="list", elements="str"),
            interface_name=dict(type="str"),
            gw_priority=dict(type="int"),
        ),
        "endpoint",
    )


if __name__ == "__main__":
    main()
