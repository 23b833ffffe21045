#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026 cnm.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: cnm_network
short_description: Manage Docker-style container networks without Docker
version_added: 0.1.0
description:
  - Creates, updates and removes networks of the Container Network Model (libnetwork's
    CNM) on a Linux host - a bridge with its gateway address, IPAM pools, firewall rules.
  - Compares the store with the kernel on every run; a missing bridge, address or rule
    is reported in check mode and repaired by a real run.
  - The predefined networks V(host) and V(none) always exist and cannot be removed.
author: Cnm Core Maintainers (@cnm-core)
extends_documentation_fragment:
  - cnm.core.common
  - cnm.core.common.attributes
options:
  name:
    description: Network name (letters, digits, V(_), V(.), V(-); at most 64 characters).
    type: str
    required: true
  state:
    description: Whether the network should exist.
    type: str
    choices: [present, absent]
    default: present
  driver:
    description:
      - Network driver. V(bridge) (default), V(macvlan), V(ipvlan).
      - V(host) and V(null) are the predefined networks V(host) and V(none).
      - Changing the driver of an existing network needs O(force=true).
    type: str
  ipam:
    description: IP address management, as C(docker network create --subnet ...).
    type: dict
    suboptions:
      driver:
        description: IPAM driver; only V(default).
        type: str
      config:
        description:
          - Address pools. Without any IPv4 pool a free subnet is chosen from the default
            pools (V(172.17.0.0/16) ... V(172.31.0.0/16), then V(192.168.0.0/16) in /20s),
            skipping subnets of other networks and routes/addresses of the host.
          - Overlapping an existing network's subnet is refused.
        type: list
        elements: dict
        suboptions:
          subnet:
            description: Subnet in CIDR form, e.g. V(10.1.0.0/24) or V(fd00:1::/64).
            type: str
          ip_range:
            description: Sub-range of O(ipam.config[].subnet) from which addresses are allocated.
            type: str
          gateway:
            description: Gateway address; default the first address of the subnet.
            type: str
          aux_addresses:
            description: Named addresses that are never allocated to endpoints.
            type: dict
      options:
        description: IPAM driver options (kept and returned, not interpreted).
        type: dict
  enable_ipv6:
    description: Give the network an IPv6 pool (a /64 is chosen when none is given).
    type: bool
  internal:
    description: No egress, no masquerade and no published ports for this network.
    type: bool
  labels:
    description: Labels (key/value strings); changed in place.
    type: dict
  driver_options:
    description:
      - Driver options with Docker's keys. Bridge -
        V(com.docker.network.bridge.name), V(com.docker.network.bridge.enable_icc),
        V(com.docker.network.bridge.enable_ip_masquerade),
        V(com.docker.network.bridge.host_binding_ipv4), V(com.docker.network.driver.mtu).
        macvlan/ipvlan - V(parent), V(macvlan_mode), V(ipvlan_mode), V(com.docker.network.driver.mtu).
      - Unknown keys are refused. MTU, ICC, masquerade and host binding change in place;
        the bridge name and parent need O(force=true).
    type: dict
  force:
    description:
      - With O(state=absent), detach every endpoint first (otherwise removing a network
        with endpoints fails and lists them).
      - With O(state=present), allow changes that need the network rebuilt (subnet,
        driver, bridge name); endpoints are re-attached with their full configuration.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: A bridge network with a fixed subnet
  cnm.core.cnm_network:
    name: frontend
    ipam:
      config:
        - subnet: 10.89.1.0/24
          gateway: 10.89.1.1

- name: A network whose subnet is chosen from the default pools, no inter-container traffic
  cnm.core.cnm_network:
    name: backend
    driver_options:
      com.docker.network.bridge.enable_icc: false

- name: Remove a network and detach whatever is still attached
  cnm.core.cnm_network:
    name: backend
    state: absent
    force: true
"""

RETURN = r"""
network:
  description:
    - The network in the shape of C(docker network inspect) (Name, Id, Created, Scope,
      Driver, EnableIPv6, IPAM, Internal, Attachable, Ingress, ConfigFrom, ConfigOnly,
      Containers, Options, Labels). V(null) when the network is absent.
  returned: always
  type: dict
  sample:
    Name: frontend
    Id: 3f2c8e0d1b6a4c5e9f7a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e
    Driver: bridge
    Scope: local
    EnableIPv6: false
    IPAM:
      Driver: default
      Options: null
      Config:
        - Subnet: 10.89.1.0/24
          Gateway: 10.89.1.1
    Internal: false
    Containers: {}
    Options: {}
    Labels: {}
actions:
  description: What was done (or would be done in check mode), one line each.
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
            driver=dict(type="str"),
            ipam=dict(type="dict", options=dict(
                driver=dict(type="str"),
                config=dict(type="list", elements="dict", options=dict(
                    subnet=dict(type="str"),
                    ip_range=dict(type="str"),
                    gateway=dict(type="str"),
                    aux_addresses=dict(type="dict"),
                )),
                options=dict(type="dict"),
            )),
            enable_ipv6=dict(type="bool"),
            internal=dict(type="bool"),
            labels=dict(type="dict"),
            driver_options=dict(type="dict"),
            force=dict(type="bool", default=False),
        ),
        "network",
    )


if __name__ == "__main__":
    main()
