#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026 cnm.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: cnm_sandbox_info
short_description: Facts about sandboxes, their endpoints, ports and DNS settings
version_added: 0.1.0
description:
  - Returns every sandbox (or the one named) with its endpoints by network. A missing
    name is not an error - RV(exists) is V(false).
author: Cnm Core Maintainers (@cnm-core)
extends_documentation_fragment:
  - cnm.core.common
  - cnm.core.common.info_module
options:
  name:
    description: Sandbox name. Without it, every sandbox.
    type: str
notes:
  - Read-only - it never creates the state database, so it can run on a host where no
    cnm.core module has run yet (RV(exists) is V(false) there).
  - It reports what the state database records; drift in the kernel (a namespace or
    interface deleted by hand) is reported by the modules that change state, in check mode.
seealso:
  - module: cnm.core.cnm_sandbox
  - module: cnm.core.cnm_endpoint
  - module: cnm.core.cnm_port_mapping
  - module: cnm.core.cnm_dns
  - module: cnm.core.cnm_network_info
"""

EXAMPLES = r"""
- name: Where is web attached?
  cnm.core.cnm_sandbox_info:
    name: web
  register: web

- name: Its address on network frontend
  ansible.builtin.debug:
    msg: "{{ web.sandboxes[0].Networks.frontend.IPAddress }}"
  when: web.exists and 'frontend' in web.sandboxes[0].Networks
"""

RETURN = r"""
exists:
  description: Whether at least one sandbox matched.
  returned: always
  type: bool
  sample: true
sandboxes:
  description:
    - Matching sandboxes, each as RV(cnm.core.cnm_sandbox#module:sandbox) - Id, Name,
      SandboxKey, Hostname, Created, Mode, Networks (endpoints by network name, with their
      published ports) and Dns (the settings made with M(cnm.core.cnm_dns)).
    - An empty list when none matched.
  returned: always
  type: list
  elements: dict
  sample:
    # abridged: each entry of Networks has all the keys of cnm.core.cnm_endpoint's endpoint
    - Id: 6f09c82e44436300cd7eba3d2e8cb704253368207f67ef83088989ab2a272aaf
      Name: web
      SandboxKey: /run/netns/web
      Hostname: web01
      Created: "2026-11-28T04:32:08.796311Z"
      Mode: own
      Networks:
        frontend:
          NetworkName: frontend
          InterfaceName: eth0
          IPAddress: 10.89.1.10
          MacAddress: "02:42:0a:59:01:0a"
          Ports:
            80/tcp:
              - HostIp: 0.0.0.0
                HostPort: "8080"
      Dns:
        domainname: example.internal
        extra_hosts:
          - - db.legacy
            - 10.0.0.5
"""

from ansible_collections.cnm.core.plugins.module_utils.ansible_adapter import run_module
from ansible_collections.cnm.core.plugins.module_utils.controller.reader import Reader


def main():
    run_module(dict(name=dict(type="str")), "sandbox_info", Reader)


if __name__ == "__main__":
    main()
