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
"""

EXAMPLES = r"""
- name: Where is web attached?
  cnm.core.cnm_sandbox_info:
    name: web
  register: web
"""

RETURN = r"""
exists:
  description: Whether at least one sandbox matched.
  returned: always
  type: bool
sandboxes:
  description: Matching sandboxes (Id, Name, SandboxKey, Hostname, Networks, Dns).
  returned: always
  type: list
  elements: dict
"""

from ansible_collections.cnm.core.plugins.module_utils.ansible_adapter import run_module


def main():
    run_module(dict(name=dict(type="str")), "sandbox_info")


if __name__ == "__main__":
    main()
