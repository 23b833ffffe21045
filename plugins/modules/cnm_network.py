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
      - Network driver. V(bridge) (default), V(macvlan), V(ipvlan), V(overlay).
      - V(overlay) makes a global network shared by every host using the same
        O(cluster_store) (VXLAN between hosts, addresses allocated cluster-wide).
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
  enable_ipv4:
    description:
      - Give the network an IPv4 pool (the default). V(false) makes an IPv6-only network, as
        Docker 28's C(--ipv4=false); it needs O(enable_ipv6=true).
      - Sandboxes whose endpoint is on a network without IPv6 get C(disable_ipv6=1) on that
        interface, as Docker does.
      - Changing it needs the network rebuilt (O(force=true)).
    type: bool
    version_added: 0.2.0
  internal:
    description: No egress, no masquerade and no published ports for this network.
    type: bool
  attachable:
    description:
      - Docker's C(--attachable) flag, kept and returned as C(Attachable) (false unless
        asked, as Docker prints it); every cnm network can be joined by M(cnm.core.cnm_endpoint).
    type: bool
    version_added: 0.2.0
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
      - A V(parent) named C(<iface>.<vid>) (VLAN id 1-4094) that does not exist is made as
        an 802.1q sub-interface of C(<iface>) (kernel module C(8021q)) and removed with
        the network that made it, as Docker does; an existing one is only used.
    type: dict
  force:
    description:
      - With O(state=absent), detach every endpoint first (otherwise removing a network
        with endpoints fails and lists them).
      - With O(state=present), allow changes that need the network rebuilt (subnet,
        driver, bridge name); endpoints are re-attached with their full configuration.
    type: bool
    default: false
  key_rotation:
    description:
      - Only for V(overlay) networks with V(encrypted=true) in O(driver_options). The key
        generation wanted - when the network's keys in the cluster store are of a lower
        generation, this run rotates them. Every member host installs the new key for
        receiving, then all switch sending to it, then the old key is dropped; each step
        waits until every member host's agent has applied it (15 seconds at most, else
        the task fails naming O(key_rotation) and a later run resumes).
      - Keys never appear in the task's result or in a log.
    type: int
notes:
  - Without an IPv4 subnet in O(ipam.config) the network gets a free one from Docker's
    default pools, which hold 31 networks (15 /16s, then 16 /20s); more networks need
    explicit subnets.
  - V(overlay) networks (Scope V(global)) are defined once in the cluster store (etcd) and
    instantiated on each host that runs this task; a different definition of the same
    name fails naming the field. Subnets without O(ipam) come from V(10.0.0.0/8) in /24s.
    Each host gets a bridge V(ov-<id>) and a VXLAN port V(vx-<id>) (UDP 4789, MTU of the
    underlay minus 50). Removing it on one host removes that host's instance; the
    definition goes with the last host, or at once with O(force=true).
  - V(encrypted=true) in the O(driver_options) of an V(overlay) network carries its VXLAN
    traffic between hosts in IPsec ESP (AES-GCM), keys kept in the cluster store; the MTU
    is then the underlay's minus 90. It needs a kernel with ESP and AES-GCM
    (CONFIG_INET_ESP and CONFIG_CRYPTO_GCM, or the modules esp4 and gcm).
  - V(ipvlan) needs a kernel with
    ipvlan support; V(macvlan) and V(ipvlan) need the key V(parent) in O(driver_options)
    (an existing host interface, or C(<iface>.<vid>) to have the VLAN sub-interface made).
  - A network with O(internal=true) has no default route, no masquerade and no published
    ports (M(cnm.core.cnm_port_mapping) refuses them).
  - O(force=true) with O(state=present) tears the network down and makes it again; its
    endpoints are re-attached (with their addresses where possible), so their workloads lose
    connectivity meanwhile.
seealso:
  - module: cnm.core.cnm_network_info
  - module: cnm.core.cnm_endpoint
  - module: cnm.core.cnm_port_mapping
  - module: cnm.core.cnm_dns
  - name: docker network create
    description: The Docker command whose options and driver options this module takes.
    link: https://docs.docker.com/reference/cli/docker/network/create/
  - name: Docker bridge network driver
    description: Isolation, ICC and masquerading of bridge networks, as implemented here.
    link: https://docs.docker.com/engine/network/drivers/bridge/
  - name: Docker macvlan network driver
    description: Parent interface and modes of macvlan networks.
    link: https://docs.docker.com/engine/network/drivers/macvlan/
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
      Driver, EnableIPv4, EnableIPv6, IPAM, Internal, Attachable, Ingress, ConfigFrom,
      ConfigOnly, Containers, Options, Labels). C(Containers) is keyed by sandbox id.
    - V(null) when the network is absent.
  returned: always
  type: dict
  sample:
    Name: frontend
    Id: 7bbbb0cdb2f7760601dbe74c45da49ca9ef1744f01d3ed9f4c1961a0428f267b
    Created: "2026-11-28T04:32:08.751219Z"
    Scope: local
    Driver: bridge
    EnableIPv4: true
    EnableIPv6: false
    IPAM:
      Driver: default
      Options: null
      Config:
        - Subnet: 10.89.1.0/24
          Gateway: 10.89.1.1
    Internal: false
    Attachable: true
    Ingress: false
    ConfigFrom:
      Network: ""
    ConfigOnly: false
    Containers:
      6f09c82e44436300cd7eba3d2e8cb704253368207f67ef83088989ab2a272aaf:
        Name: web
        EndpointID: 2ab6cc4c109abcacda698444508e25a7e29c6a8db676017f9a065198232792ed
        MacAddress: "02:42:0a:59:01:0a"
        IPv4Address: 10.89.1.10/24
        IPv6Address: ""
    Options:
      com.docker.network.bridge.name: cnm-frontend
    Labels:
      tier: web
actions:
  description: What was done (or would be done in check mode), one line each.
  returned: always
  type: list
  elements: str
  sample:
    - create network frontend (10.89.1.0/24)
"""

from ansible_collections.cnm.core.plugins.module_utils.ansible_adapter import run_module
from ansible_collections.cnm.core.plugins.module_utils.controller.engine import Engine


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
            enable_ipv4=dict(type="bool"),
            attachable=dict(type="bool"),
            internal=dict(type="bool"),
            labels=dict(type="dict"),
            driver_options=dict(type="dict"),
            force=dict(type="bool", default=False),
            key_rotation=dict(type="int", no_log=False),
        ),
        "network", Engine,
    )


if __name__ == "__main__":
    main()
