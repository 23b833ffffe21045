#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026 cnm.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: cnm_prune
short_description: Remove unused container networks and leftover implicit sandboxes
version_added: 0.2.0
description:
  - Like C(docker network prune) and C(docker container prune) (and community.docker's
    C(docker_prune)) for the networks and sandboxes of this collection.
  - With O(networks=true), removes every network that has no endpoint attached. The
    predefined networks (V(host), V(none)) are never removed.
  - With O(sandboxes=true), removes every sandbox that M(cnm.core.cnm_endpoint) created
    implicitly and that has no endpoint left (for example after a run was killed while
    detaching its last endpoint). Sandboxes created by M(cnm.core.cnm_sandbox) are never
    removed, nor is a sandbox in which a process runs.
  - Filters use Docker's syntax and are all checked before anything is removed; an
    unknown filter or a bad value fails the task and names the field.
author: Cnm Core Maintainers (@cnm-core)
extends_documentation_fragment:
  - cnm.core.common
  - cnm.core.common.attributes
options:
  networks:
    description: Remove the unused networks that match O(networks_filters).
    type: bool
    default: false
  networks_filters:
    description:
      - Which unused networks to remove, as C(docker network prune --filter). Every key
        given must match (AND).
      - V(label) - a string or a list of strings, each V(key) (the label is set) or
        V(key=value) (set to that value); with a list the network must carry all of them.
      - V(label!) - the same forms; a network carrying the label is kept. With a list, a
        network is kept only when it carries all of them (Docker's rule).
      - V(until) - only networks created at or before this time. A Go duration counted
        back from now (V(10m), V(1h30m), V(24h)), an RFC 3339 timestamp
        (V(2026-11-28T10:00:00Z); fractions of a second and offsets like V(+01:00) are
        accepted), a date (V(2026-11-28)), a date with hours or minutes
        (V(2026-11-28T10), V(2026-11-28T10:00)) or Unix seconds (V(1764324000)). A
        timestamp without a zone is in the managed host's local time.
      - Only with O(networks=true).
    type: dict
  sandboxes:
    description: Remove the implicit sandboxes without endpoints that match O(sandboxes_filters).
    type: bool
    default: false
  sandboxes_filters:
    description:
      - Which implicit sandboxes without endpoints to remove; the keys of
        O(networks_filters).
      - Sandboxes carry no labels, so V(label) matches none of them and V(label!) all
        of them.
      - Only with O(sandboxes=true).
    type: dict
notes:
  - The prune runs under the host-wide lock in one store session, so no other cnm.core
    task attaches to a network while it is being removed.
  - An object whose creation time is not recorded never matches V(until).
  - The V(label) and V(label!) rules for lists are those of the Docker daemon (its
    C(MatchKVList)) - all entries of V(label) must match, and V(label!) keeps an object
    only when all its entries match.
seealso:
  - module: cnm.core.cnm_network
  - module: cnm.core.cnm_sandbox
  - module: cnm.core.cnm_network_info
  - name: docker network prune
    description: The Docker command whose filters this module takes.
    link: https://docs.docker.com/reference/cli/docker/network/prune/
  - name: community.docker.docker_prune
    description: The community.docker module this one mirrors.
    link: https://docs.ansible.com/ansible/latest/collections/community/docker/docker_prune_module.html
"""

EXAMPLES = r"""
- name: Remove every unused network
  cnm.core.cnm_prune:
    networks: true

- name: Remove unused test networks created over a day ago
  cnm.core.cnm_prune:
    networks: true
    networks_filters:
      label: env=test
      until: 24h

- name: Remove unused networks, but keep those labelled keep
  cnm.core.cnm_prune:
    networks: true
    networks_filters:
      label!: keep

- name: Remove implicit sandboxes left without endpoints, and unused networks
  cnm.core.cnm_prune:
    networks: true
    sandboxes: true
  register: pruned

- name: Show what was removed
  ansible.builtin.debug:
    msg: "networks {{ pruned.networks }}, sandboxes {{ pruned.sandboxes }}"
"""

RETURN = r"""
networks:
  description:
    - Names of the networks removed (in check mode, that would be removed).
    - An empty list when O(networks=false) or nothing matched.
  returned: always
  type: list
  elements: str
  sample:
    - test-frontend
    - test-backend
sandboxes:
  description:
    - Names of the sandboxes removed (in check mode, that would be removed).
    - An empty list when O(sandboxes=false) or nothing matched.
  returned: always
  type: list
  elements: str
  sample:
    - web
actions:
  description: What was done (or would be done in check mode), one line each.
  returned: always
  type: list
  elements: str
  sample:
    - remove sandbox web
    - remove network test-frontend
"""

from ansible_collections.cnm.core.plugins.module_utils.ansible_adapter import run_module
from ansible_collections.cnm.core.plugins.module_utils.controller.engine import Engine


def main():
    run_module(
        dict(
            networks=dict(type="bool", default=False),
            networks_filters=dict(type="dict"),
            sandboxes=dict(type="bool", default=False),
            sandboxes_filters=dict(type="dict"),
        ),
        "prune", Engine,
    )


if __name__ == "__main__":
    main()
