#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026 cnm.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: cnm_topology
short_description: Apply a whole host's container networks, sandboxes, ports and DNS in one task
version_added: 0.2.0
description:
  - Makes the host hold the networks, the sandboxes with their endpoints (addresses, MAC,
    aliases, interface names, gateway priority), the published ports and the DNS settings
    given, in one task.
  - Each item takes the options of the module of its kind under the same names
    (M(cnm.core.cnm_network), M(cnm.core.cnm_sandbox), M(cnm.core.cnm_endpoint),
    M(cnm.core.cnm_port_mapping), M(cnm.core.cnm_dns)) and is applied by the same engine
    operation, so an item behaves here exactly as that module's task would.
  - Everything is validated before anything changes; an error names the object and the
    field, for example C(sandboxes[web].endpoints[0].ipv4_address).
  - The whole topology is applied in one store session under the host-wide lock, in
    order - networks, sandboxes with their endpoints, published ports, DNS settings,
    then the purge.
  - With O(purge=true), the networks, sandboxes, endpoints and published ports that the
    topology does not name are removed. Only objects of this collection are ever
    removed, and never the predefined networks (V(host), V(none), V(bridge)).
author: Cnm Core Maintainers (@cnm-core)
extends_documentation_fragment:
  - cnm.core.common
  - cnm.core.common.attributes
  - cnm.core.topology
options:
  purge:
    description:
      - Remove what the topology does not name - networks, sandboxes, the endpoints of
        the named sandboxes on networks their O(sandboxes[].endpoints) do not list, and
        published ports not listed in O(sandboxes[].endpoints[].ports).
      - A sandbox's DNS settings are not objects and are never reset by the purge.
    type: bool
    default: false
notes:
  - Each object is applied whole or not at all, by the operation its own module uses
    (which undoes its own partial work). A failure part-way leaves every object either as
    it was or as asked, and fails the task naming the object. A run killed part-way is
    finished or rolled back by the next cnm.core task on the host, and the same task run
    again converges.
  - The embedded resolver is told once about every sandbox the task changed, after the
    last object; the published ports of each network change in one firewall batch.
  - In check mode on a host where a network does not exist yet, its endpoints and ports
    are predicted as changes without their addresses.
seealso:
  - module: cnm.core.cnm_network
  - module: cnm.core.cnm_sandbox
  - module: cnm.core.cnm_endpoint
  - module: cnm.core.cnm_port_mapping
  - module: cnm.core.cnm_dns
  - module: cnm.core.cnm_prune
"""

EXAMPLES = r"""
- name: A web tier and a database on two networks, in one task
  cnm.core.cnm_topology:
    networks:
      - name: frontend
        ipam:
          config:
            - subnet: 10.89.1.0/24
      - name: backend
        internal: true
        ipam:
          config:
            - subnet: 10.89.2.0/24
    sandboxes:
      - name: web
        endpoints:
          - network: frontend
            ipv4_address: 10.89.1.10
            aliases: [www]
            ports:
              - container_port: 80
                host_port: 8080
          - network: backend
            gw_priority: -1
      - name: db
        endpoints:
          - network: backend
            ipv4_address: 10.89.2.20
            aliases: [database]
        dns:
          search: [example.internal]

- name: The same, removing every network and sandbox no longer named
  cnm.core.cnm_topology:
    networks: "{{ cnm_networks }}"
    sandboxes: "{{ cnm_sandboxes }}"
    purge: true
  register: topology

- name: Show what the purge removed
  ansible.builtin.debug:
    var: topology.purged
"""

RETURN = r"""
objects:
  description:
    - Every object the task applied or purged, by its path in the topology, with
      C(changed) and the C(actions) taken (or, in check mode, that would be taken).
  returned: always
  type: dict
  sample:
    networks[frontend]:
      changed: true
      actions:
        - create network frontend (10.89.1.0/24)
    sandboxes[web]:
      changed: true
      actions:
        - create sandbox web
    sandboxes[web].endpoints[0]:
      changed: true
      actions:
        - attach web to frontend (10.89.1.10/24)
    sandboxes[web].endpoints[0].ports:
      changed: true
      actions:
        - publish *:8080 -> 80/tcp
networks:
  description: Each named network in the shape of C(docker network inspect) (V(null) in
    check mode when it would be created).
  returned: always
  type: dict
  sample:
    frontend:
      Name: frontend
      Driver: bridge
      Scope: local
sandboxes:
  description:
    - Each named sandbox as M(cnm.core.cnm_sandbox) returns it (C(Id), C(Name),
      C(SandboxKey), C(Hostname), C(HostConfig), C(Dns)...), its C(Networks) the
      endpoints by network name as M(cnm.core.cnm_endpoint) returns them, with the
      C(Ports) published by this task.
    - C(NetworkSettings) is left out; M(cnm.core.cnm_sandbox_info) returns the whole view.
    - In check mode an endpoint that would be made on a network not created yet is V(null).
  returned: always
  type: dict
  sample:
    web:
      Name: web
      SandboxKey: /run/netns/web
      Networks:
        frontend:
          IPAddress: 10.89.1.10
          InterfaceName: eth0
          Aliases:
            - www
          Ports:
            80/tcp:
              - HostIp: 0.0.0.0
                HostPort: "8080"
purged:
  description: What O(purge) removed (or would remove in check mode).
  returned: always
  type: dict
  sample:
    networks:
      - old-net
    sandboxes:
      - old-sandbox
    endpoints:
      - web on old-net
actions:
  description: What was done (or would be done in check mode), one line each, prefixed
    with the object's path.
  returned: always
  type: list
  elements: str
  sample:
    - "networks[frontend]: create network frontend (10.89.1.0/24)"
    - "sandboxes[web]: create sandbox web"
diff:
  description:
    - In diff mode, one entry per changed object, with C(before_header) and
      C(after_header) naming it.
  returned: when diff mode is on
  type: list
  elements: dict
  sample:
    - before_header: sandboxes[web]
      after_header: sandboxes[web]
      before: {}
      after:
        Name: web
"""

from ansible_collections.cnm.core.plugins.module_utils.ansible_adapter import run_module
from ansible_collections.cnm.core.plugins.module_utils.controller.engine import Engine


def main():
    port = dict(
        container_port=dict(type="raw", required=True),
        host_port=dict(type="raw"),
        host_ip=dict(type="str"),
        protocol=dict(type="str", default="tcp", choices=["tcp", "udp", "sctp"]),
    )
    endpoint = dict(
        network=dict(type="str", default="bridge"),
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
        ports=dict(type="list", elements="dict", options=port),
    )
    sandbox_dns = dict(
        nameservers=dict(type="list", elements="str"),
        sandbox_upstreams=dict(type="list", elements="str"),
        search=dict(type="list", elements="str"),
        options=dict(type="list", elements="str"),
        hostname=dict(type="str"),
        domainname=dict(type="str"),
        extra_hosts=dict(type="raw"),
    )
    run_module(
        dict(
            networks=dict(type="list", elements="dict", default=[], options=dict(
                name=dict(type="str", required=True),
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
            )),
            sandboxes=dict(type="list", elements="dict", default=[], options=dict(
                name=dict(type="str", required=True),
                hostname=dict(type="str"),
                network_mode=dict(type="str"),
                sysctls=dict(type="dict"),
                endpoints=dict(type="list", elements="dict", default=[], options=endpoint),
                dns=dict(type="dict", options=sandbox_dns),
            )),
            dns=dict(type="dict", options=dict(
                resolver=dict(type="str", choices=["started", "stopped"]),
                upstreams=dict(type="list", elements="str"),
                ttl=dict(type="int"),
            )),
            purge=dict(type="bool", default=False),
        ),
        "topology",
        Engine,
    )


if __name__ == "__main__":
    main()
