"""The CNM objects as the store keeps them: Network, Sandbox, Endpoint.

Plain dataclasses that round-trip through JSON documents (``to_doc``/``from_doc``).
Unknown keys in a stored document are ignored so older engines can read newer rows.
"""
import dataclasses
import datetime
import hashlib
import os
from dataclasses import dataclass, field

from . import constants as C

# Object lifecycle states: a row is written with CREATING *before* the kernel is
# touched (intent), and becomes READY when the kernel work is done. A row found in
# CREATING by a later run belongs to a run that died: it is rolled back.
CREATING = "creating"
READY = "ready"


def new_id():
    """A random 64-hex identifier, like Docker's network and endpoint ids."""
    return hashlib.sha256(os.urandom(32)).hexdigest()


def fixed_id(name):
    """Stable id for predefined objects (networks ``host`` and ``none``)."""
    return hashlib.sha256(("cnm-predefined-" + name).encode()).hexdigest()


def now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds") \
        .replace("+00:00", "Z")


class _Doc:
    @classmethod
    def from_doc(cls, doc):
        if doc is None:
            return None
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in names})

    def to_doc(self):
        return dataclasses.asdict(self)


@dataclass
class Network(_Doc):
    id: str
    name: str
    driver: str
    created: str = ""
    scope: str = "local"
    enable_ipv6: bool = False
    enable_ipv4: bool = True                         # False: IPv6-only (Docker 28)
    internal: bool = False
    attachable: bool = False                        # Docker: false unless asked
    labels: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)      # driver options, Docker's strings
    ipam_driver: str = "default"
    ipam_options: dict = field(default_factory=dict)
    pools: list = field(default_factory=list)        # PoolConfig.to_dict() entries
    auto_subnets: list = field(default_factory=list)  # subnets the allocator chose
    bridge: str = ""                                 # interface name (bridge/macvlan parent)
    mtu: int = 0
    ipam_last: dict = field(default_factory=dict)    # subnet -> last allocated address
    firewall: dict = field(default_factory=dict)     # last applied NetworkRules.to_dict()
    predefined: bool = False
    created_parent: bool = False  # macvlan/ipvlan: this network made its <link>.<vid> parent
    # overlay (scope global): this host's instance of a network defined in the cluster
    vni: int = 0                  # VXLAN network identifier (from the cluster definition)
    vxlan: str = ""               # the VXLAN device, a port of ``bridge``
    vtep: str = ""                # this host's VTEP address (advertise_address)
    underlay: str = ""            # the link that holds ``vtep``
    state: str = READY

    @property
    def short_id(self):
        return self.id[:12]


@dataclass
class Sandbox(_Doc):
    id: str
    name: str
    netns_path: str
    hostname: str = ""
    created: str = ""
    mode: str = "own"          # "own": private namespace; "host": bound to the host's;
    #                            "container": bound to sandbox ``shares``'s namespace
    shares: str = ""           # mode "container": id of the sandbox whose namespace it is
    sysctls: dict = field(default_factory=dict)  # namespaced net.* sysctls, as strings
    implicit: bool = False     # made by cnm_endpoint: removed with its last endpoint
    dns: dict = field(default_factory=dict)   # cnm_dns per-sandbox settings
    state: str = READY


@dataclass
class Endpoint(_Doc):
    id: str
    network_id: str
    sandbox_id: str
    network_name: str = ""
    sandbox_name: str = ""
    ifname: str = ""           # inside the sandbox ("" for host/null)
    host_ifname: str = ""      # host side of the veth
    ipv4: str = ""             # "172.18.0.2/16"
    ipv6: str = ""
    mac: str = ""
    aliases: list = field(default_factory=list)
    gw_priority: int = 0
    static: dict = field(default_factory=dict)   # which of ipv4/ipv6/mac the user fixed
    ports: list = field(default_factory=list)    # PortMapping dicts (firewall/model.py)
    bandwidth: dict = field(default_factory=dict)  # validation.bandwidth: bit/s, bytes
    created: str = ""
    state: str = READY


def is_bridged(network):
    """True for a network whose sandboxes hang off a Linux bridge by veth (bridge,
    overlay): it gets firewall rules, NAT and published ports."""
    return network.driver in C.BRIDGED_DRIVERS


def gateway_cidrs(network):
    """``gateway/prefix`` of every pool of ``network`` (what the bridge carries)."""
    out = []
    for pool in network.pools:
        if pool.get("gateway"):
            out.append("%s/%s" % (pool["gateway"], pool["subnet"].split("/")[1]))
    return out


def gateway_for(network, family):
    """The gateway address of ``network`` for IP ``family`` (4 or 6), or None."""
    for pool in network.pools:
        if pool.get("gateway") and (":" in pool["subnet"]) == (family == 6):
            return pool["gateway"]
    return None
