# Copyright (c) 2026 cnm.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment(object):
    """The item shapes of a whole host's topology (``cnm.core.topology``).

    Each item takes the options of the single-object module of its kind, under the same
    names: a network those of cnm_network, a sandbox those of cnm_sandbox, an endpoint
    those of cnm_endpoint, its ports the entries of cnm_port_mapping, a sandbox's DNS
    settings and the host resolver settings those of cnm_dns.
    """

    DOCUMENTATION = r"""
options:
  networks:
    description:
      - The networks of the host, each with the options of M(cnm.core.cnm_network) but
        O(cnm.core.cnm_network#module:state) (a network named here is present).
      - A network not named here is left alone, unless O(purge=true).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Network name (M(cnm.core.cnm_network)'s O(cnm.core.cnm_network#module:name)).
        type: str
        required: true
      driver:
        description: As O(cnm.core.cnm_network#module:driver) (default V(bridge)).
        type: str
      ipam:
        description: As O(cnm.core.cnm_network#module:ipam).
        type: dict
        suboptions:
          driver:
            description: As O(cnm.core.cnm_network#module:ipam.driver).
            type: str
          config:
            description: As O(cnm.core.cnm_network#module:ipam.config).
            type: list
            elements: dict
            suboptions:
              subnet:
                description: As O(cnm.core.cnm_network#module:ipam.config[].subnet).
                type: str
              ip_range:
                description: As O(cnm.core.cnm_network#module:ipam.config[].ip_range).
                type: str
              gateway:
                description: As O(cnm.core.cnm_network#module:ipam.config[].gateway).
                type: str
              aux_addresses:
                description: As O(cnm.core.cnm_network#module:ipam.config[].aux_addresses).
                type: dict
          options:
            description: As O(cnm.core.cnm_network#module:ipam.options).
            type: dict
      enable_ipv6:
        description: As O(cnm.core.cnm_network#module:enable_ipv6).
        type: bool
      enable_ipv4:
        description: As O(cnm.core.cnm_network#module:enable_ipv4).
        type: bool
      attachable:
        description: As O(cnm.core.cnm_network#module:attachable).
        type: bool
      internal:
        description: As O(cnm.core.cnm_network#module:internal).
        type: bool
      labels:
        description: As O(cnm.core.cnm_network#module:labels).
        type: dict
      driver_options:
        description: As O(cnm.core.cnm_network#module:driver_options).
        type: dict
      force:
        description: As O(cnm.core.cnm_network#module:force) - allow a change that needs
          the network rebuilt.
        type: bool
        default: false
  sandboxes:
    description:
      - The sandboxes of the host, each with the options of M(cnm.core.cnm_sandbox) but
        O(cnm.core.cnm_sandbox#module:state) and O(cnm.core.cnm_sandbox#module:force),
        plus its O(sandboxes[].endpoints) and its O(sandboxes[].dns) settings.
      - A sandbox not named here is left alone, unless O(purge=true).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Sandbox name (the namespace file name under O(netns_dir)).
        type: str
        required: true
      hostname:
        description: As O(cnm.core.cnm_sandbox#module:hostname).
        type: str
      network_mode:
        description:
          - As O(cnm.core.cnm_sandbox#module:network_mode). The sandbox named after
            V(container:) is applied first when it is in the topology too.
        type: str
      sysctls:
        description: As O(cnm.core.cnm_sandbox#module:sysctls).
        type: dict
      endpoints:
        description:
          - The sandbox's endpoints, one per network, each with the options of
            M(cnm.core.cnm_endpoint) but O(cnm.core.cnm_endpoint#module:sandbox) and
            O(cnm.core.cnm_endpoint#module:state), plus the O(sandboxes[].endpoints[].ports)
            it publishes.
          - With O(purge=true), the sandbox's endpoints on networks not listed here are
            removed.
        type: list
        elements: dict
        default: []
        suboptions:
          network:
            description: As O(cnm.core.cnm_endpoint#module:network).
            type: str
            default: bridge
          ipv4_address:
            description: As O(cnm.core.cnm_endpoint#module:ipv4_address).
            type: str
          ipv6_address:
            description: As O(cnm.core.cnm_endpoint#module:ipv6_address).
            type: str
          mac_address:
            description: As O(cnm.core.cnm_endpoint#module:mac_address).
            type: str
          aliases:
            description: As O(cnm.core.cnm_endpoint#module:aliases).
            type: list
            elements: str
          interface_name:
            description: As O(cnm.core.cnm_endpoint#module:interface_name).
            type: str
          gw_priority:
            description: As O(cnm.core.cnm_endpoint#module:gw_priority).
            type: int
          bandwidth:
            description: As O(cnm.core.cnm_endpoint#module:bandwidth).
            type: dict
            suboptions:
              egress_rate:
                description: As O(cnm.core.cnm_endpoint#module:bandwidth.egress_rate).
                type: raw
              egress_burst:
                description: As O(cnm.core.cnm_endpoint#module:bandwidth.egress_burst).
                type: raw
              ingress_rate:
                description: As O(cnm.core.cnm_endpoint#module:bandwidth.ingress_rate).
                type: raw
              ingress_burst:
                description: As O(cnm.core.cnm_endpoint#module:bandwidth.ingress_burst).
                type: raw
          ports:
            description:
              - Ports published from this endpoint (bridge networks only), entries as
                O(cnm.core.cnm_port_mapping#module:ports).
              - Not given - the endpoint's published ports are left as they are
                (withdrawn with O(purge=true)).
              - Without O(purge), mappings not named again stay, as with
                M(cnm.core.cnm_port_mapping)'s default; with O(purge=true) this list is
                the endpoint's whole set (O(cnm.core.cnm_port_mapping#module:exclusive=true)).
            type: list
            elements: dict
            suboptions:
              container_port:
                description: As O(cnm.core.cnm_port_mapping#module:ports[].container_port).
                type: raw
                required: true
              host_port:
                description: As O(cnm.core.cnm_port_mapping#module:ports[].host_port).
                type: raw
              host_ip:
                description: As O(cnm.core.cnm_port_mapping#module:ports[].host_ip).
                type: str
              protocol:
                description: As O(cnm.core.cnm_port_mapping#module:ports[].protocol).
                type: str
                choices: [tcp, udp, sctp]
                default: tcp
      dns:
        description:
          - The sandbox's name settings, as the per-sandbox options of M(cnm.core.cnm_dns).
            Settings not given are left as they are.
        type: dict
        suboptions:
          nameservers:
            description: As O(cnm.core.cnm_dns#module:nameservers).
            type: list
            elements: str
          sandbox_upstreams:
            description: As O(cnm.core.cnm_dns#module:sandbox_upstreams).
            type: list
            elements: str
          search:
            description: As O(cnm.core.cnm_dns#module:search).
            type: list
            elements: str
          options:
            description: As O(cnm.core.cnm_dns#module:options).
            type: list
            elements: str
          hostname:
            description: As O(cnm.core.cnm_dns#module:hostname).
            type: str
          domainname:
            description: As O(cnm.core.cnm_dns#module:domainname).
            type: str
          extra_hosts:
            description: As O(cnm.core.cnm_dns#module:extra_hosts).
            type: raw
  dns:
    description: The host resolver settings, as the host-wide options of M(cnm.core.cnm_dns).
    type: dict
    suboptions:
      resolver:
        description: As O(cnm.core.cnm_dns#module:resolver).
        type: str
        choices: [started, stopped]
      upstreams:
        description: As O(cnm.core.cnm_dns#module:upstreams).
        type: list
        elements: str
      ttl:
        description: As O(cnm.core.cnm_dns#module:ttl).
        type: int
"""
