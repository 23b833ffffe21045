# -*- coding: utf-8 -*-
# Copyright (c) 2026 cnm.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The only file that knows AnsibleModule: module params -> engine -> exit_json/fail_json."""

from __future__ import annotations

import traceback

from ansible.module_utils.basic import AnsibleModule, env_fallback

try:
    from ansible_collections.cnm.core.plugins.module_utils.controller import Engine
    from ansible_collections.cnm.core.plugins.module_utils.errors import CnmError
    ENGINE_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - reported through fail_json below
    Engine = CnmError = None
    ENGINE_IMPORT_ERROR = traceback.format_exc()

COMMON_ARGUMENT_SPEC = dict(
    state_dir=dict(type="path", default="/var/lib/cnm",
                   fallback=(env_fallback, ["CNM_STATE_DIR"])),
    run_dir=dict(type="path", default="/run/cnm", fallback=(env_fallback, ["CNM_RUN_DIR"])),
    netns_dir=dict(type="path", default="/run/netns",
                   fallback=(env_fallback, ["CNM_NETNS_DIR"])),
    firewall_backend=dict(type="str", default="auto",
                          choices=["auto", "nftables", "iptables", "none"],
                          fallback=(env_fallback, ["CNM_FIREWALL_BACKEND"])),
)


def run_module(argument_spec, verb, **module_kwargs):
    """Build the AnsibleModule, call ``Engine.<verb>(params)`` and exit.

    Expected failures (CnmError) become ``fail_json(msg=...)`` naming the field; only a
    bug produces a traceback.
    """
    spec = dict(COMMON_ARGUMENT_SPEC)
    spec.update(argument_spec)
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True, **module_kwargs)
    if ENGINE_IMPORT_ERROR:
        module.fail_json(msg="cannot import the cnm engine", exception=ENGINE_IMPORT_ERROR)
    engine = Engine(state_dir=module.params["state_dir"], run_dir=module.params["run_dir"],
                    netns_dir=module.params["netns_dir"],
                    firewall_backend=module.params["firewall_backend"],
                    check_mode=module.check_mode)
    try:
        result = getattr(engine, verb)(module.params)
    except CnmError as exc:
        module.fail_json(msg=str(exc), field=exc.field)
    for warning in result.warnings:
        module.warn(warning)
    out = dict(changed=result.changed, actions=result.actions)
    out.update(result.data)
    if module._diff:  # pylint: disable=protected-access
        out["diff"] = result.diff
    module.exit_json(**out)
