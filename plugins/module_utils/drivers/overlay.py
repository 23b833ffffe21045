"""The ``overlay`` driver: this host's instance of a global network, VXLAN between hosts.

Per host and network (Docker's classic overlay, without its extra namespace): a bridge
``ov-<id12>`` holding the gateway address, and a VXLAN device ``vx-<id12>`` (the
network's VNI, UDP 4789, local VTEP = this host's advertise address, learning off) as
one of its ports, with MAC learning off and ARP/ND suppression on. Sandboxes join by
veth exactly as on a bridge network (``bridged.py``). Remote endpoints are static
entries programmed from the cluster store (``netns/fdb.py``, by the controller and the
host agent), so the VXLAN port never learns and never floods ARP for known peers; the
gateway address is the same on every host (same address, same MAC) and is answered
locally, so its ARP never crosses hosts and each host routes its own sandboxes out.

MTU: the underlay link's MTU minus the VXLAN overhead (50), and minus ESP's (40 more)
when ``encrypted``, on the VXLAN device, the bridge and every sandbox interface, unless
the network sets ``com.docker.network.driver.mtu``.

``encrypted`` is only checked here: the IPsec side (SAs, policies, marks) is not a device
of this driver but state programmed with the peers (``cluster/peers.py``), by the
controller and the host agent.
"""
from .. import constants as C
from .. import validation as V
from ..errors import ValidationError
from .bridged import BridgedDriver

_BOOL_STRINGS = ("true", "false")


def overlay_names(network_id):
    """``(bridge, vxlan)`` device names of a network's instance on a host."""
    return (C.OVERLAY_BRIDGE_PREFIX + network_id[:12],
            C.OVERLAY_VXLAN_PREFIX + network_id[:12])


class OverlayDriver(BridgedDriver):
    """Docker's ``overlay`` driver (scope global), with a cluster store on etcd."""

    name = C.OVERLAY_DRIVER
    supports_bandwidth = True
    options = frozenset((C.OPT_MTU, C.OPT_VXLANID_LIST, C.OPT_ENCRYPTED))

    def validate(self, network, netlink):
        """Check the options; with a host (``netlink``), check the VTEP's link exists.
        Raises ValidationError naming the field."""
        value = network.options.get(C.OPT_ENCRYPTED)
        if value is not None and value not in _BOOL_STRINGS + ("",):
            raise ValidationError("%r is not a boolean (true/false)" % value,
                                  field="driver_options.%s" % C.OPT_ENCRYPTED)
        if network.vni:
            V.integer(network.vni, "driver_options.%s" % C.OPT_VXLANID_LIST, 1, 16777214)

    # -- network ---------------------------------------------------------------------
    def setup_network(self, network, netlink):
        """Bridge (gateway, MTU, fixed MAC) and VXLAN port made or repaired. Idempotent.
        Raises KernelError."""
        super().setup_network(network, netlink)
        host = netlink.host
        bridge = host.index(network.bridge)
        parent = host.index(network.underlay)
        if parent is None:
            raise ValidationError("the underlay link %s (which holds advertise_address %s) "
                                  "is missing" % (network.underlay, network.vtep),
                                  field="advertise_address")
        info = host.vxlan(network.vxlan)
        wanted = (network.vni, network.vtep, parent, False)
        if info is not None and (info["vni"], info["local"], info["link"],
                                 info["learning"]) != wanted:
            host.delete_link(network.vxlan)   # VNI and VTEP cannot change in place
            info = None
        if info is None:
            index = host.add_vxlan(network.vxlan, network.vni, network.vtep, parent,
                                   network.mtu, master=bridge)
        else:
            link = host.link(network.vxlan)
            index = link["index"]
            if link["master"] != bridge:
                host.set_master(index, bridge)
            if link["mtu"] != network.mtu:
                host.set_mtu(index, network.mtu)
        flags = host.port_flags(index) or {}
        if flags.get("learning", True) or not flags.get("neigh_suppress"):
            host.set_port_flags(index, learning=False, neigh_suppress=True)
        link = host.link(network.vxlan)
        if not link["up"]:
            host.set_up(index)

    def teardown_network(self, network, netlink):
        """Remove the VXLAN device and the bridge (their FDB and neighbour entries go
        with them). Best effort: returns the errors."""
        errors = []
        for ifname in (network.vxlan, network.bridge):
            try:
                netlink.host.delete_link(ifname)
            except Exception as exc:  # best effort: report, go on
                errors.append(str(exc))
        return errors

    def network_drift(self, network, netlink):
        """What differs from ``setup_network``'s result ([] = in sync)."""
        drift = super().network_drift(network, netlink)
        host = netlink.host
        info = host.vxlan(network.vxlan)
        if info is None:
            return drift + ["vxlan %s is missing" % network.vxlan]
        if info["vni"] != network.vni:
            drift.append("vxlan %s has VNI %s, not %s" % (network.vxlan, info["vni"],
                                                          network.vni))
        if info["local"] != network.vtep:
            drift.append("vxlan %s has local %s, not %s" % (network.vxlan, info["local"],
                                                            network.vtep))
        link = host.link(network.vxlan)
        if link["master"] != host.index(network.bridge):
            drift.append("vxlan %s is not a port of %s" % (network.vxlan, network.bridge))
        if not link["up"]:
            drift.append("vxlan %s is down" % network.vxlan)
        if link["mtu"] != network.mtu:
            drift.append("vxlan %s mtu is %s, not %s" % (network.vxlan, link["mtu"],
                                                         network.mtu))
        flags = host.port_flags(link["index"]) or {}
        if flags.get("learning", True) or not flags.get("neigh_suppress"):
            drift.append("vxlan port %s learns MACs or floods ARP" % network.vxlan)
        return drift
