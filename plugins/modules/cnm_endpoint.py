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
    description:
      - Network name. The default, V(bridge), is the predefined default bridge network
        (Docker's C(docker0)) with device C(cnm0), 172.17.0.0/16 unless taken, ICC and
        masquerade on, made on first use. It has no embedded DNS (its sandboxes get the
        host's nameservers without loopback ones) and takes no O(aliases), as in Docker.
    type: str
    default: bridge
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
  bandwidth:
    description:
      - Bandwidth limits of this endpoint, as the CNI bandwidth plugin sets them (bridge
        networks only). Into the sandbox - a C(tbf) qdisc on the host side of the veth;
        out of the sandbox - the host veth's ingress redirected to an C(ifb) device
        carrying a C(tbf) (shaped, not policed).
      - A rate without its burst gets 10 ms of traffic at the rate, at least 16 KiB.
      - V({}) removes every limit; an omitted O(bandwidth) is not compared.
      - While limits are set they are read back from the kernel (C(tc -j)) on every run; a
        qdisc removed by hand is drift (reported in check mode, repaired otherwise).
    type: dict
    suboptions:
      egress_rate:
        description:
          - Rate of traffic out of the sandbox - V(10mbit), V(1gbit), V(500kbit) or bits
            per second (decimal units, as C(tc)).
        type: raw
      egress_burst:
        description:
          - Burst of traffic out of the sandbox - V(32kb), V(1mb) or bytes (binary units,
            as C(tc)); needs O(bandwidth.egress_rate).
        type: raw
      ingress_rate:
        description: Rate of traffic into the sandbox, as O(bandwidth.egress_rate).
        type: raw
      ingress_burst:
        description: Burst of traffic into the sandbox, as O(bandwidth.egress_burst).
        type: raw
notes:
  - Changing O(ipv4_address), O(ipv6_address), O(mac_address), O(aliases),
    O(gw_priority), O(bandwidth) or O(interface_name) of an existing endpoint is done in place; its
    published ports (M(cnm.core.cnm_port_mapping)) follow a new address.
  - A sandbox on the network V(host) or V(none) cannot join any other network. A sandbox
    joins V(host) only when this module creates it (it is then a bind of the host's
    namespace, and has no interface of its own).
  - On networks without interfaces (V(host), V(none)) O(ipv4_address), O(ipv6_address),
    O(mac_address) and O(interface_name) are refused.
  - In check mode, an attach to a network that does not exist yet (an earlier task of the
    same play would create it) is reported as a change instead of failing.
seealso:
  - module: cnm.core.cnm_network
  - module: cnm.core.cnm_sandbox
  - module: cnm.core.cnm_port_mapping
  - module: cnm.core.cnm_dns
  - module: cnm.core.cnm_sandbox_info
  - name: docker network connect
    description: The Docker command this module corresponds to (C(--ip), C(--ip6), C(--alias)).
    link: https://docs.docker.com/reference/cli/docker/network/connect/
"""

EXAMPLES = r"""
- name: Attach sandbox web to network frontend with a fixed address
  cnm.core.cnm_endpoint:
    network: frontend
    sandbox: web
    ipv4_address: 10.89.1.10
    aliases: [www]

- name: Limit web to 10 Mbit/s each way
  cnm.core.cnm_endpoint:
    network: frontend
    sandbox: web
    bandwidth:
      egress_rate: 10mbit
      egress_burst: 32kb
      ingress_rate: 10mbit

- name: Detach it
  cnm.core.cnm_endpoint:
    network: frontend
    sandbox: web
    state: absent
"""

RETURN = r"""
endpoint:
  description:
    - The endpoint, in the shape of Docker's EndpointSettings plus the names of its network
      and sandbox and its published ports (EndpointID, NetworkID, NetworkName, Sandbox,
      SandboxID, SandboxKey, InterfaceName, HostInterfaceName, IPAddress, IPPrefixLen,
      Gateway, GlobalIPv6Address, GlobalIPv6PrefixLen, IPv6Gateway, MacAddress, Aliases,
      GwPriority, Ports, Bandwidth).
    - C(HostInterfaceName) is the host end of the veth on bridge networks, else empty.
      C(Gateway) and C(IPv6Gateway) are empty on internal networks.
    - C(Bandwidth) holds the limits set with O(bandwidth), rates in bits per second and
      bursts in bytes (V({}) when none).
    - V(null) when the endpoint is absent.
  returned: always
  type: dict
  sample:
    EndpointID: 2ab6cc4c109abcacda698444508e25a7e29c6a8db676017f9a065198232792ed
    NetworkID: 7bbbb0cdb2f7760601dbe74c45da49ca9ef1744f01d3ed9f4c1961a0428f267b
    NetworkName: frontend
    Sandbox: web
    SandboxID: 6f09c82e44436300cd7eba3d2e8cb704253368207f67ef83088989ab2a272aaf
    SandboxKey: /run/netns/web
    InterfaceName: eth0
    HostInterfaceName: veth2ab6cc4c
    IPAddress: 10.89.1.10
    IPPrefixLen: 24
    Gateway: 10.89.1.1
    GlobalIPv6Address: ""
    GlobalIPv6PrefixLen: 0
    IPv6Gateway: ""
    MacAddress: "02:42:0a:59:01:0a"
    Aliases:
      - www
    GwPriority: 0
    Ports: {}
    Bandwidth: {}
actions:
  description: What was done (or would be done in check mode), one line each.
  returned: always
  type: list
  elements: str
  sample:
    - create sandbox web
    - attach web to frontend (10.89.1.10/24)
"""

from ansible_collections.cnm.core.plugins.module_utils.ansible_adapter import run_module
from ansible_collections.cnm.core.plugins.module_utils.controller.engine import Engine


def main():
    run_module(
        dict(
            network=dict(type="str", default="bridge"),
            sandbox=dict(type="str", required=True),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            ipv4_address=dict(type="str"),
            ipv6_address=dict(type="str"),
            mac_address=dict(type="str"),
            aliases=dict(type="list", elements="str"),
            interface_name=dict(type="str"),
            gw_priority=dict(type="int"),
            bandwidth=dict(type="dict", options=dict(
                egress_rate=dict(type="raw"),
                egress_burst=dict(type="raw"),
                ingress_rate=dict(type="raw"),
                ingress_burst=dict(type="raw"),
            )),
        ),
        "endpoint", Engine,
    )


if __name__ == "__main__":
    main()
