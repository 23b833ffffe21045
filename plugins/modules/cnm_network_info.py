#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026 cnm.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: cnm_network_info
short_description: Facts about container networks
version_added: 0.1.0
description:
  - Returns networks in the shape of C(docker network inspect). A missing name is not an
    error - RV(exists) is V(false).
author: Cnm Core Maintainers (@cnm-core)
extends_documentation_fragment:
  - cnm.core.common
  - cnm.core.common.info_module
options:
  name:
    description: Network name (or full/12-character id). Without it, every network.
    type: str
  filters:
    description:
      - Keep networks matching all filters - V(driver) (exact), V(name) (substring),
        V(label) (V(key) or V(key=value)); each a string or a list.
      - A list under V(driver) or V(name) matches any of its values; under V(label), all
        of them. Another filter key fails the task.
    type: dict
notes:
  - Read-only - it never creates the state database, so it can run on a host where no
    cnm.core module has run yet (RV(exists) is V(false) there).
seealso:
  - module: cnm.core.cnm_network
  - module: cnm.core.cnm_sandbox_info
  - name: docker network inspect
    description: The Docker command whose output shape RV(networks) has.
    link: https://docs.docker.com/reference/cli/docker/network/inspect/
"""

EXAMPLES = r"""
- name: Look up one network
  cnm.core.cnm_network_info:
    name: frontend
  register: net

- name: All bridge networks labelled tier=web
  cnm.core.cnm_network_info:
    filters:
      driver: bridge
      label: tier=web
  register: web_nets

- name: Show the subnet of network frontend
  ansible.builtin.debug:
    msg: "{{ net.networks[0].IPAM.Config[0].Subnet }}"
  when: net.exists
"""

RETURN = r"""
exists:
  description: Whether at least one network matched.
  returned: always
  type: bool
  sample: true
networks:
  description:
    - Matching networks, each as C(docker network inspect) prints it (the same keys as
      RV(cnm.core.cnm_network#module:network)); an empty list when none matched.
  returned: always
  type: list
  elements: dict
  sample:
    # abridged: every entry has all the keys of cnm.core.cnm_network's network
    - Name: backend
      Id: c41d9e2b7a035f68e1b04d2c9f7a61e3b85d0c4f2a9e7b16d3c8f05a4e2b9d71
      Driver: bridge
      IPAM:
        Driver: default
        Options: null
        Config:
          - Subnet: 172.18.0.0/16
            Gateway: 172.18.0.1
      Internal: true
      Containers: {}
      Labels:
        tier: web
"""

from ansible_collections.cnm.core.plugins.module_utils.ansible_adapter import run_module
from ansible_collections.cnm.core.plugins.module_utils.controller.reader import Reader


def main():
    run_module(
        dict(name=dict(type="str"), filters=dict(type="dict")),
        "network_info", Reader,
    )


if __name__ == "__main__":
    main()
