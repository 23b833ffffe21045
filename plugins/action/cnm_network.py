# -*- coding: utf-8 -*-
# Copyright (c) 2026 cnm.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Action plugin of cnm.core.cnm_network: the module run as by ansible.builtin.normal,
its AnsiballZ payload kept from one playbook run to the next
(plugins/plugin_utils/payload_cache.py)."""

from __future__ import annotations

from ansible_collections.cnm.core.plugins.plugin_utils.payload_cache import PayloadCacheAction


class ActionModule(PayloadCacheAction):
    """Runs the module cnm_network; its payload is built once per set of sources."""
