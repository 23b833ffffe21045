#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026 cnm.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: cnm_cluster_host
short_description: Remove a host that is gone for good from the cnm cluster store
version_added: 0.2.0
description:
  - Overlay networks keep, in the cluster store (etcd), which hosts use them, the peer
    records of their endpoints and the addresses they hold. A host that died and will
    not come back keeps all of them until it is removed with this module, run on any
    other host.
  - Removes the host's membership of every global network, its endpoints' peer records
    (the other hosts' agents then drop its FDB entries and DNS names) and every address
    it holds (they can be allocated again). Network definitions stay.
author: Cnm Core Maintainers (@cnm-core)
extends_documentation_fragment:
  - cnm.core.common
  - cnm.core.common.attributes
options:
  host:
    description:
      - The host's name in the cluster, which is its advertise address (O(advertise_address)
        on that host).
    type: str
    required: true
  state:
    description: Only V(absent) - the host is removed from the cluster.
    type: str
    choices: [absent]
    default: absent
notes:
  - Refused for the host the task runs on while it still has overlay networks; remove
    them with M(cnm.core.cnm_network) instead.
  - Needs O(cluster_store).
seealso:
  - module: cnm.core.cnm_network
  - name: docker node rm
    description: The Docker command that removes a node from a swarm.
    link: https://docs.docker.com/reference/cli/docker/node/rm/
"""

EXAMPLES = r"""
- name: Forget a host that was decommissioned
  cnm.core.cnm_cluster_host:
    host: 10.0.0.23
    cluster_store: ["http://10.0.0.5:2379"]
"""

RETURN = r"""
host:
  description: The host removed.
  returned: always
  type: str
  sample: 10.0.0.23
removed:
  description: What the cluster held of the host and no longer does.
  returned: always
  type: dict
  sample: {"networks": ["ov1"], "endpoints": ["web3"], "addresses": ["10.0.1.7"]}
actions:
  description: What was done (or would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: ["forget host 10.0.0.23: 1 network membership(s), 1 endpoint(s), 1 address(es)"]
"""

from ansible_collections.cnm.core.plugins.module_utils.ansible_adapter import run_module
from ansible_collections.cnm.core.plugins.module_utils.controller.engine import Engine


def main():
    run_module(
        dict(
            host=dict(type="str", required=True),
            state=dict(type="str", choices=["absent"], default="absent"),
        ),
        "cluster_host", Engine)


if __name__ == "__main__":
    main()
