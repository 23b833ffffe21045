# -*- coding: utf-8 -*-
# Copyright (c) 2026 cnm.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The only file that knows AnsibleModule: module params -> engine -> exit_json/fail_json.

It imports no engine entry itself: each module imports the one it runs (``Engine`` for
the writing verbs, ``Reader`` for the info verbs) and passes it to ``run_module``, so
AnsiballZ (which ships every module_utils file a module imports) ships an info module
without netlink or firewall code.
"""

from __future__ import annotations

# first: in an AnsiballZ payload, the engine files imported after it come compiled from
# the host's cache (bytecode_cache.py)
from ansible_collections.cnm.core.plugins.module_utils import bytecode_cache
from ansible.module_utils.basic import AnsibleModule, env_fallback

from ansible_collections.cnm.core.plugins.module_utils.errors import CnmError

COMMON_ARGUMENT_SPEC = dict(
    state_dir=dict(type="path", default="/var/lib/cnm",
                   fallback=(env_fallback, ["CNM_STATE_DIR"])),
    run_dir=dict(type="path", default="/run/cnm", fallback=(env_fallback, ["CNM_RUN_DIR"])),
    netns_dir=dict(type="path", default="/run/netns",
                   fallback=(env_fallback, ["CNM_NETNS_DIR"])),
    firewall_backend=dict(type="str", default="auto",
                          choices=["auto", "nftables", "iptables", "none"],
                          fallback=(env_fallback, ["CNM_FIREWALL_BACKEND"])),
    cluster_store=dict(type="list", elements="str",
                       fallback=(env_fallback, ["CNM_CLUSTER_STORE"])),
    cluster_store_tls=dict(type="dict", options=dict(
        ca=dict(type="path"), cert=dict(type="path"), key=dict(type="path", no_log=False))),
    cluster_store_auth=dict(type="dict", no_log=False, options=dict(
        username=dict(type="str"), password=dict(type="str", no_log=True))),
    advertise_address=dict(type="str", fallback=(env_fallback, ["CNM_ADVERTISE_ADDRESS"])),
)
# Read only when a global (overlay) network is touched.
CLUSTER_OPTIONS = ("cluster_store", "cluster_store_tls", "cluster_store_auth",
                   "advertise_address")


def run_module(argument_spec, verb, engine_class, **module_kwargs):
    """Build the AnsibleModule, call ``engine_class(...).<verb>(params)`` and exit.

    ``engine_class``: ``controller.engine.Engine`` or, for the info verbs,
    ``controller.reader.Reader`` (same constructor). Expected failures (CnmError) become
    ``fail_json(msg=...)`` naming the field; only a bug produces a traceback.
    """
    spec = dict(COMMON_ARGUMENT_SPEC)
    spec.update(argument_spec)
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True, **module_kwargs)
    engine = engine_class(state_dir=module.params["state_dir"],
                          run_dir=module.params["run_dir"],
                          netns_dir=module.params["netns_dir"],
                          firewall_backend=module.params["firewall_backend"],
                          check_mode=module.check_mode,
                          cluster={k: module.params.get(k) for k in CLUSTER_OPTIONS})
    # the controller learns that this host holds the compiled engine (slim payloads next)
    cached = {bytecode_cache.USED_RESULT_KEY: bytecode_cache.ACTIVE_KEY} \
        if bytecode_cache.ACTIVE_KEY else {}
    try:
        result = getattr(engine, verb)(module.params)
    except CnmError as exc:
        module.fail_json(msg=str(exc), field=exc.field, **cached)
    for warning in result.warnings:
        module.warn(warning)
    out = dict(changed=result.changed, actions=result.actions)
    out.update(result.data)
    if module._diff:  # pylint: disable=protected-access
        out["diff"] = result.diff
    out.update(cached)
    module.exit_json(**out)
