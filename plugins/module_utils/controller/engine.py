"""The engine: every CNM operation of one host, as one object per module run.

``Engine`` is assembled from one class per CNM object, stacked as a ladder (each file
imports only the layers below it; nothing calls upward):

    recovery      crash recovery, intents rolled forward, resolver revival (open hook)
    prune         cnm_prune (over networks: unused networks, implicit sandboxes left empty)
    networks      cnm_network, cnm_network_info
    network_rebuild  a rebuild with force: planned whole, applied with undo
    endpoints     cnm_endpoint                sandboxes    cnm_sandbox, cnm_sandbox_info
    detach        leaving networks, removing sandboxes
    namespaces    routes    addresses    firewall_sync    dns_sync
    port_mappings (over firewall_sync)    dns_settings (over dns_sync)    restore
    session       store, netlink, firewall backend, lookups, saves (+ result, undo)

Every public method is one operation under the host-wide lock: it first finishes or
undoes what a dead run left (rows in ``creating``), then compares store and kernel
(drift), then plans the change as a list of differences. Check mode returns the plan;
a real run applies it, pushing an undo step for each kernel change so a failure
half-way leaves nothing behind (LIFO undo). Only this package writes the store.
"""
from .dns_settings import DnsSettings
from .doctor import Doctor
from .endpoints import Endpoints
from .port_mappings import PortMappings
from .prune import Prune
from .recovery import Recovery
from .restore import Restore
from .sandboxes import Sandboxes
from .topology import Topology


class Engine(Doctor, Topology, Recovery, Endpoints, Sandboxes, PortMappings, DnsSettings, Restore,
             Prune):
    """One engine instance per module run (or per test call).

    Public verbs (one per module): ``network``, ``network_info``, ``endpoint``,
    ``sandbox``, ``sandbox_info``, ``port_mapping``, ``dns``, ``restore_firewall``,
    ``prune``, ``topology``.
    """
