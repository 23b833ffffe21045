# Copyright (c) 2025 cnm.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment(object):
    """Documentation shared by every cnm.core module.

    Use ``cnm.core.common`` for the common options, plus ``cnm.core.common.attributes``
    (modules that change state) or ``cnm.core.common.info_module`` (read-only modules).
    """

    # The options every module takes. Each falls back to an environment variable, then
    # to the default shown (argument_spec: default=... plus fallback=(env_fallback, [...])).
    DOCUMENTATION = r"""
options:
  state_dir:
    description:
      - Directory of the persistent state (the SQLite store and its lock file).
      - If not set, the E(CNM_STATE_DIR) environment variable is used, and if that is
        not set either, V(/var/lib/cnm).
      - Every module working on the same host must use the same O(state_dir).
        Several independent sets of networks can live on one host with different values.
    type: path
    default: /var/lib/cnm
  run_dir:
    description:
      - Directory of runtime files that do not survive a reboot (the DNS resolver's pid
        file and configuration, per-sandbox C(resolv.conf) and C(hosts) files).
      - If not set, the E(CNM_RUN_DIR) environment variable is used, and if that is
        not set either, V(/run/cnm).
    type: path
    default: /run/cnm
  netns_dir:
    description:
      - Directory holding one network namespace file per sandbox, named after the sandbox.
      - With the default V(/run/netns), C(ip netns exec <sandbox> ...) works for sandboxes.
      - If not set, the E(CNM_NETNS_DIR) environment variable is used, and if that is
        not set either, V(/run/netns).
    type: path
    default: /run/netns
  firewall_backend:
    description:
      - How firewall rules (isolation, masquerade, published ports) are applied.
      - V(nftables) writes one C(inet cnm) table in a single C(nft) JSON batch.
      - V(iptables) writes C(CNM-*) chains with C(iptables-restore --noflush).
      - V(none) writes no rules. Isolation, masquerade and published ports then do not work.
      - V(auto) chooses V(nftables) when it is usable, else V(iptables).
      - If not set, the E(CNM_FIREWALL_BACKEND) environment variable is used, and if that is
        not set either, V(auto).
    type: str
    choices: [auto, nftables, iptables, none]
    default: auto
  cluster_store:
    description:
      - The etcd v3 endpoints of the cluster store, as URLs like V(http://10.0.0.5:2379).
      - Needed by overlay networks (O(cnm.core.cnm_network#module:driver=overlay)), which
        keep their definition, addresses and endpoints there. Local networks never use it.
      - If not set, the E(CNM_CLUSTER_STORE) environment variable is used (comma-separated).
    type: list
    elements: str
  cluster_store_tls:
    description:
      - TLS files for https endpoints of the cluster store.
    type: dict
    suboptions:
      ca:
        description: CA certificate that signed the etcd servers' certificates.
        type: path
      cert:
        description: Client certificate (with O(cluster_store_tls.key)).
        type: path
      key:
        description: Key of the client certificate.
        type: path
  cluster_store_auth:
    description:
      - User name and password of the cluster store, when etcd has authentication on.
    type: dict
    suboptions:
      username:
        description: The etcd user.
        type: str
      password:
        description: Its password (never logged).
        type: str
  advertise_address:
    description:
      - This host's underlay IPv4 address, used as its VXLAN endpoint (VTEP) and as its
        name in the cluster store.
      - If not set, the E(CNM_ADVERTISE_ADDRESS) environment variable is used, and if that
        is not set either, the source address of the route to the first cluster store
        endpoint.
    type: str
notes:
  - The common options O(state_dir), O(run_dir), O(netns_dir) and O(firewall_backend) can be
    set once for all modules of this collection with C(module_defaults) and the action group
    C(group/cnm.core.cnm).
requirements:
  - Linux with network namespaces, veth and bridge support.
  - Root privileges on the target (C(CAP_NET_ADMIN) and C(CAP_SYS_ADMIN)).
  - The Python library C(dnspython) on the target, for the embedded DNS resolver.
  - The C(nft) binary and its Python binding, or C(iptables-restore), for the firewall.
"""

    # Modules that change state.
    ATTRIBUTES = r"""
options: {}
attributes:
  check_mode:
    description: Can run in C(check_mode) and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in C(check_mode)), when in diff mode.
    support: full
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
      - This assumes that the system controlled/queried by the module has not changed in a relevant way.
    support: full
  action_group:
    description: Use C(group/cnm.core.cnm) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - cnm.core.cnm
"""

    # Read-only modules (*_info).
    INFO_MODULE = r"""
options: {}
attributes:
  check_mode:
    description: Can run in C(check_mode) and return changed status prediction without modifying target.
    support: full
    details:
      - This action does not modify state.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in C(check_mode)), when in diff mode.
    support: N/A
    details:
      - This action does not modify state.
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
      - This assumes that the system controlled/queried by the module has not changed in a relevant way.
    support: full
    details:
      - This action does not modify state.
  action_group:
    description: Use C(group/cnm.core.cnm) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - cnm.core.cnm
"""
