"""The overlay's peer table in the kernel: FDB and neighbour entries of one network.

A remote endpoint of an overlay network (a sandbox on another host) is three entries on
this host, all static (learning is off on the VXLAN device and its bridge port):

- on the VXLAN device's own table (``bridge fdb ... self``): its MAC -> its host's VTEP,
  so a frame for it is sent to that host only;
- on the bridge (``bridge fdb ... master static``): its MAC -> the VXLAN port, so the
  bridge does not flood frames for it to the local sandboxes;
- on the bridge's neighbour table (``ip neigh ... nud permanent``): its IP -> its MAC,
  from which the bridge answers ARP/ND for it locally (``neigh_suppress`` on the VXLAN
  port): ARP requests cross hosts only for addresses not known yet.

Besides, one all-zero FDB entry per peer VTEP (the flood list) carries broadcasts and
unknown unicast to every other host of the network, so ARP works even before the control
plane caught up. ``sync`` makes the kernel hold exactly the desired set ("make it so"),
leaving the entries the kernel owns (the devices' own MACs, learned local sandboxes).
Called by the controller when a host joins a network and by the host agent on every
change in the cluster store; the same function, so both agree on what "in sync" means.
"""
import socket

from .rtnl import AF_BRIDGE, NTF_MASTER, NTF_SELF, NUD_NOARP, NUD_PERMANENT

ZERO_MAC = "00:00:00:00:00:00"


def desired(peers, vteps, local_vtep):
    """The entries this host should hold, as three sets: ``(fdb_self, fdb_master,
    neighbours)``; ``fdb_self`` holds ``(mac, vtep)`` (the flood list as ZERO_MAC),
    ``fdb_master`` MACs, ``neighbours`` ``(ip, mac)``.

    ``peers``: records of the network's endpoints (``mac``, ``ipv4``, ``ipv6`` as
    ``ip/prefix`` or ``ip``, ``vtep``); those whose ``vtep`` is ``local_vtep`` are local
    and skipped. ``vteps``: every member host's VTEP (flood list, this host's skipped).
    Pure; raises nothing.
    """
    fdb_self, fdb_master, neighbours = set(), set(), set()
    for vtep in vteps:
        if vtep and vtep != local_vtep:
            fdb_self.add((ZERO_MAC, vtep))
    for peer in peers:
        vtep, mac = peer.get("vtep"), (peer.get("mac") or "").lower()
        if not vtep or vtep == local_vtep or not mac:
            continue
        fdb_self.add((mac, vtep))
        fdb_master.add(mac)
        for key in ("ipv4", "ipv6"):
            if peer.get(key):
                neighbours.add((peer[key].split("/", 1)[0], mac))
    return fdb_self, fdb_master, neighbours


def current(rtnl, bridge_index, vxlan_index):
    """The managed entries the kernel holds now, in the shape of ``desired``."""
    fdb_self, fdb_master, neighbours = set(), set(), set()
    for entry in rtnl.neighbours(AF_BRIDGE, vxlan_index):
        if entry["flags"] & NTF_SELF and entry["dst"]:
            fdb_self.add((entry["mac"], entry["dst"]))
        elif not entry["flags"] & NTF_SELF and entry["state"] & NUD_NOARP \
                and not entry["state"] & NUD_PERMANENT:   # the bridge's static entries
            fdb_master.add(entry["mac"])
    for family in (socket.AF_INET, socket.AF_INET6):
        for entry in rtnl.neighbours(family, bridge_index):
            if entry["state"] & NUD_PERMANENT and entry["mac"]:
                neighbours.add((entry["dst"], entry["mac"]))
    return fdb_self, fdb_master, neighbours


def sync(rtnl, bridge_index, vxlan_index, peers, vteps, local_vtep, check=False):
    """Make the kernel's peer entries of one overlay network exactly ``desired(...)``.

    ``rtnl``: an ``rtnl.Rtnl`` in the host's namespace. Removes stale entries first,
    then adds the missing ones. With ``check`` nothing changes. Returns the changes as
    text (``["add fdb 02:42:.. -> 10.0.0.2", ...]``, [] when in sync). Raises
    NetlinkError when the kernel refuses a change.
    """
    want = desired(peers, vteps, local_vtep)
    have = current(rtnl, bridge_index, vxlan_index)
    changes = []
    for mac, vtep in sorted(have[0] - want[0]):
        changes.append("remove fdb %s -> %s" % (mac, vtep))
        if not check:
            _quietly(rtnl.neighbour, False, AF_BRIDGE, vxlan_index, mac, vtep,
                     NUD_PERMANENT, NTF_SELF)
    for mac in sorted(have[1] - want[1]):
        changes.append("remove bridge fdb %s" % mac)
        if not check:
            _quietly(rtnl.neighbour, False, AF_BRIDGE, vxlan_index, mac, None, NUD_NOARP,
                     NTF_MASTER)
    for ip, mac in sorted(have[2] - want[2]):
        changes.append("remove neighbour %s %s" % (ip, mac))
        if not check:
            family = socket.AF_INET6 if ":" in ip else socket.AF_INET
            _quietly(rtnl.neighbour, False, family, bridge_index, mac, ip)
    for mac, vtep in sorted(want[0] - have[0]):
        changes.append("add fdb %s -> %s" % (mac, vtep))
        if not check:
            if mac == ZERO_MAC:  # several remotes for one MAC: append, never replace
                rtnl.neighbour_append(AF_BRIDGE, vxlan_index, mac, vtep, NUD_PERMANENT,
                                      NTF_SELF)
            else:
                rtnl.neighbour(True, AF_BRIDGE, vxlan_index, mac, vtep, NUD_PERMANENT,
                               NTF_SELF)
    for mac in sorted(want[1] - have[1]):
        changes.append("add bridge fdb %s" % mac)
        if not check:
            rtnl.neighbour(True, AF_BRIDGE, vxlan_index, mac, None, NUD_NOARP, NTF_MASTER)
    for ip, mac in sorted(want[2] - have[2]):
        changes.append("add neighbour %s %s" % (ip, mac))
        if not check:
            family = socket.AF_INET6 if ":" in ip else socket.AF_INET
            rtnl.neighbour(True, family, bridge_index, mac, ip)
    return changes


def _quietly(func, *args):
    """A removal of an entry that went away meanwhile is no error."""
    try:
        func(*args)
    except OSError as exc:
        if getattr(exc, "code", exc.errno) not in (2, 19):  # ENOENT, ENODEV
            raise
