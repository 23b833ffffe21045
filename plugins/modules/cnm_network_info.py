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
    type: dict
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
"""

RETURN = r"""
exists:
  description: Whether at least one network matched.
  returned: always
  type: bool
networks:
  description: Matching networks, each as C(docker network inspect) prints it.
  returned: always
  type: list
  elements: dict
"""

from ansible_collections.cnm.core.plugins.module_utils.ansible_adapter import run_module


def main():
    run_module(
        dict(name=dict(type="str"), filters=dict(type="dict")),
        "network_info",
    )


if __name__ == "__main__":
    main()
