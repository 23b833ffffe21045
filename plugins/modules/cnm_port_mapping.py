#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026 cnm.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: cnm_port_mapping
short_description: Publish sandbox ports on the host (DNAT, like docker run -p)
version_added: 0.1.0
description:
  - Forwards host ports to ports of a sandbox's endpoint with kernel DNAT only (no
    userland proxy) - from other hosts (prerouting), from the host itself (output), and
    from the sandbox to itself through the host address (hairpin).
  - A V(127.0.0.1) binding answers on the host only, never from the LAN.
  - Host ports omitted or V(0) are chosen from C(net.ipv4.ip_local_port_range), skipping
    reserved ports, ports bound on the host and ports already published; the choice is
    stable across runs.
  - A host port, protocol and address already published by another sandbox is refused
    with the name of that sandbox.
author: Cnm Core Maintainers (@cnm-core)
extends_documentation_fragment:
  - cnm.core.common
  - cnm.core.common.attributes
options:
  sandbox:
    description: The sandbox whose endpoint publishes the ports.
    type: str
    required: true
  network:
    description: Which endpoint (network) of the sandbox; needed when it is on several bridge networks.
    type: str
  state:
    description:
      - V(present) publishes O(ports); V(absent) withdraws them (all when O(ports) is omitted).
    type: str
    choices: [present, absent]
    default: present
  exclusive:
    description: With O(state=present), withdraw every published port not listed in O(ports).
    type: bool
    default: false
  ports:
    description: The mappings.
    type: list
    elements: dict
    suboptions:
      container_port:
        description: Port (V(80)) or range (V(80-81)) inside the sandbox.
        type: raw
        required: true
      host_port:
        description: Host port, range of the same length, or omitted/V(0) for ephemeral ports.
        type: raw
      host_ip:
        description:
          - Host address to bind (default the network's
            C(com.docker.network.bridge.host_binding_ipv4), else every address).
        type: str
      protocol:
        description: Protocol.
        type: str
        choices: [tcp, udp, sctp]
        default: tcp
notes:
  - Ports are published from an endpoint on a V(bridge) network only, and never from an
    internal one (O(cnm.core.cnm_network#module:internal=true)).
  - Publishing needs a firewall backend - with O(firewall_backend=none) the task fails, as
    nothing would forward the ports.
  - O(ports) is required with O(state=present). Without O(exclusive), mappings of other
    container ports, and those of the same container port bound to another host address,
    stay published.
  - Each mapping is an element of an nft set or map (or one line in the network's iptables
    chains), so publishing a port never rewrites the ruleset. Conntrack entries of
    withdrawn mappings are deleted, so established flows do not keep using them.
  - With O(state=absent) a sandbox that does not exist has nothing published - no change,
    no error. In check mode, publishing ports of a sandbox that an earlier task would create
    is reported as a change.
seealso:
  - module: cnm.core.cnm_endpoint
  - module: cnm.core.cnm_network
  - module: cnm.core.cnm_sandbox_info
  - name: Docker port publishing and mapping
    description: The behaviour of C(docker run -p) that this module reproduces.
    link: https://docs.docker.com/engine/network/port-publishing/
"""

EXAMPLES = r"""
- name: Publish port 80 of sandbox web on host port 8080
  cnm.core.cnm_port_mapping:
    sandbox: web
    ports:
      - container_port: 80
        host_port: 8080

- name: A range, a UDP port and an ephemeral port only reachable from the host
  cnm.core.cnm_port_mapping:
    sandbox: web
    ports:
      - {container_port: "8000-8001", host_port: "9000-9001"}
      - {container_port: 53, host_port: 5353, protocol: udp}
      - {container_port: 9090, host_ip: 127.0.0.1}
"""

RETURN = r"""
ports:
  description:
    - The endpoint's published ports after the task, in Docker's NetworkSettings.Ports
      shape - keys V(<container port>/<protocol>), each a list of C(HostIp) and
      C(HostPort) (a string). V({}) when none are published.
  returned: always
  type: dict
  sample:
    53/udp:
      - HostIp: 0.0.0.0
        HostPort: "5353"
    80/tcp:
      - HostIp: 0.0.0.0
        HostPort: "8080"
actions:
  description: What was done (or would be done in check mode), one line each.
  returned: always
  type: list
  elements: str
  sample:
    - publish *:8080 -> 80/tcp
    - publish *:5353 -> 53/udp
"""

from ansible_collections.cnm.core.plugins.module_utils.ansible_adapter import run_module
from ansible_collections.cnm.core.plugins.module_utils.controller.engine import Engine


def main():
    run_module(
        dict(
            sandbox=dict(type="str", required=True),
            network=dict(type="str"),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            exclusive=dict(type="bool", default=False),
            ports=dict(type="list", elements="dict", options=dict(
                container_port=dict(type="raw", required=True),
                host_port=dict(type="raw"),
                host_ip=dict(type="str"),
                protocol=dict(type="str", default="tcp", choices=["tcp", "udp", "sctp"]),
            )),
        ),
        "port_mapping", Engine,
    )


if __name__ == "__main__":
    main()
