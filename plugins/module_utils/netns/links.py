"""Small named netlink operations per namespace (the neutron ``ip_lib`` idea).

``Netlink`` holds one rtnetlink socket for the host namespace (the namespace the engine
runs in) and opens handles for sandboxes on demand: a thread ``setns`` into the sandbox,
creates the socket there and comes back (~1 ms, NOTES.md), instead of
``IPRoute(netns=...)`` which forks a helper (~8 ms) and creates missing files.
Requests go through ``rtnl.py`` (plain rtnetlink, ~50 us each) rather than pyroute2,
whose asyncio round trip costs ~0.7 ms per request and whose import ~200 ms per run.
"""
import errno
import ipaddress
import os
import socket

from ..errors import KernelError
from . import namespace

AF_INET = socket.AF_INET
AF_INET6 = socket.AF_INET6


def _rtnl():
    from .rtnl import Rtnl
    return Rtnl()


BRIDGE_MAX_PORTS = 1023  # the kernel: BR_MAX_PORTS (1024) numbers, port 0 never used


def netlink_errno(exc):
    """The errno of a NetlinkError (or None)."""
    return getattr(exc, "code", None)


class Handle:
    """One netlink socket bound to one namespace, with the verbs the drivers use."""

    def __init__(self, rtnl, path):
        self.rtnl = rtnl
        self.path = path

    def close(self):
        try:
            self.rtnl.close()
        except OSError:  # closing a broken socket must not hide the real error
            pass

    # -- links -----------------------------------------------------------------------
    def index(self, ifname):
        """Interface index of ``ifname`` or None."""
        link = self.link(ifname)
        return link["index"] if link else None

    def link(self, ifname):
        """A dict describing ``ifname`` (index, kind, master, up, mtu, mac) or None."""
        return self._call("look up %s" % ifname, self.rtnl.get_link, ifname)

    def link_names(self):
        """Names of every interface in this namespace."""
        return [link["ifname"] for link in self._call("list links", self.rtnl.links)]

    def add_bridge(self, ifname, mtu, mac=None):
        """Create bridge ``ifname`` (with MAC ``mac``: then it never follows its ports');
        returns its index."""
        self._call("add bridge %s" % ifname, self.rtnl.add_link, ifname, "bridge", mtu=mtu,
                   mac=mac)
        return self.index(ifname)

    def add_veth(self, host_ifname, peer_ifname, peer_netns, mac, mtu, master):
        """Create a veth pair whose peer is made directly inside ``peer_netns`` (~2 ms),
        enslaved to ``master``; its host end, without IPv6 addresses, then goes up with
        hairpin on.

        The host end is a bridge port: what it receives goes to the bridge, never to
        its own IPv6. A link-local address there only cost DAD and two routes per port
        in the host's table, which the kernel walks at every link event of the host:
        attach #1000 on one bridge spent milliseconds in it (bench_scale.py). So the
        host end makes no address (``addrgenmode none``, set before it is up; a kernel
        without IPv6 refuses it, which changes nothing)."""
        fd = os.open(peer_netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = self.rtnl.veth_peer(peer_ifname, netns_fd=fd, mac=mac, mtu=mtu)
            self.rtnl.add_link(host_ifname, "veth", mtu=mtu, master=master, data=data)
        except OSError as exc:
            if master and (netlink_errno(exc) or exc.errno) == errno.EXFULL:
                raise KernelError(
                    "add veth %s in %s: its bridge has %d ports already, the kernel's "
                    "limit (BR_MAX_PORTS): one bridge network takes at most %d endpoints "
                    "on a host" % (host_ifname, self.path, BRIDGE_MAX_PORTS,
                                   BRIDGE_MAX_PORTS))
            raise KernelError("add veth %s in %s: %s" % (host_ifname, self.path, exc))
        finally:
            os.close(fd)
        idx = self.index(host_ifname)
        try:
            self.rtnl.set_no_ipv6_addresses(idx)
        except OSError as exc:
            if netlink_errno(exc) != errno.EAFNOSUPPORT:
                raise KernelError("set addrgenmode none on %s: %s" % (host_ifname, exc))
        self.set_up(idx)
        self.set_hairpin(idx)
        return idx

    def add_sublink(self, ifname, kind, parent, netns, mode_data, mtu=None, mac=None):
        """Create a macvlan/ipvlan of host link ``parent`` directly inside ``netns``."""
        fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._call("add %s %s" % (kind, ifname), self.rtnl.add_link, ifname, kind,
                       mtu=mtu, mac=mac, link=parent, netns_fd=fd, data=mode_data)
        finally:
            os.close(fd)

    def add_vlan(self, ifname, parent, vid):
        """Create 802.1q sub-interface ``ifname`` (VLAN ``vid``) of host link index
        ``parent``, up (needs the kernel's 8021q)."""
        self._call("add vlan %s" % ifname, self.rtnl.add_link, ifname, "vlan", link=parent,
                   up=True, data=self.rtnl.vlan_data(vid))
        return self.index(ifname)

    def add_ifb(self, ifname):
        """Create intermediate functional block ``ifname``, up (an egress limit's tbf
        hangs on it)."""
        self._call("add ifb %s" % ifname, self.rtnl.add_link, ifname, "ifb", up=True)
        return self.index(ifname)

    def set_master(self, index, master_index):
        self._call("set master", self.rtnl.set_link, index, master=master_index)

    def set_hairpin(self, index):
        self._call("set hairpin", self.rtnl.set_hairpin, index)

    def hairpin(self, index):
        return self._call("read hairpin", self.rtnl.hairpin, index)

    def set_up(self, index):
        self._call("set up", self.rtnl.set_link, index, up=True)

    def set_down(self, index):
        self._call("set down", self.rtnl.set_link, index, up=False)

    def set_mtu(self, index, mtu):
        self._call("set mtu", self.rtnl.set_link, index, mtu=mtu)

    def set_mac(self, index, mac):
        self._call("set mac", self.rtnl.set_link, index, mac=mac)

    def rename(self, index, ifname):
        self._call("rename to %s" % ifname, self.rtnl.set_link, index, ifname=ifname)

    def delete_link(self, ifname):
        """Delete ``ifname``; True if it existed. Already gone is not an error."""
        try:
            self.rtnl.delete_link(ifname)
        except OSError as exc:
            if netlink_errno(exc) in (errno.ENODEV, errno.ENOENT):
                return False
            raise KernelError("delete link %s in %s: %s" % (ifname, self.path, exc))
        return True

    # -- addresses -------------------------------------------------------------------
    def addresses(self, index):
        """Set of ``ip/prefix`` strings (global scope) on interface ``index``."""
        return self._call("list addresses", self.rtnl.addresses, index)

    def add_address(self, index, cidr):
        """Add ``cidr`` to interface ``index`` (an IPv4 one with its broadcast, as Docker
        and ``ip addr add ... brd +`` do); already there is not an error."""
        iface = ipaddress.ip_interface(cidr)
        net = iface.network
        broadcast = None
        if iface.version == 4 and net.prefixlen < 31:
            broadcast = str(net.broadcast_address)
        try:
            self.rtnl.address(True, index, str(iface.ip), net.prefixlen, iface.version,
                              broadcast)
        except OSError as exc:
            if netlink_errno(exc) != errno.EEXIST:
                raise KernelError("add address %s in %s: %s" % (cidr, self.path, exc))

    def delete_address(self, index, cidr):
        iface = ipaddress.ip_interface(cidr)
        try:
            self.rtnl.address(False, index, str(iface.ip), iface.network.prefixlen,
                              iface.version)
        except OSError as exc:
            if netlink_errno(exc) not in (errno.EADDRNOTAVAIL, errno.ENODEV):
                raise KernelError("delete address %s: %s" % (cidr, exc))

    # -- routes ----------------------------------------------------------------------
    def default_gateway(self, family):
        """(gateway, ifindex) of the default route of socket ``family`` or (None, None)."""
        return self._call("read routes", self.rtnl.default_route,
                          4 if family == AF_INET else 6)

    def replace_default_route(self, family, gateway, index):
        self._call("set default route via %s" % gateway, self.rtnl.replace_default_route,
                   family, gateway, index)

    def delete_default_route(self, family):
        try:
            self.rtnl.delete_default_route(family)
        except OSError as exc:
            if netlink_errno(exc) not in (errno.ESRCH, errno.ENOENT):
                raise KernelError("delete default route: %s" % exc)

    # -- VXLAN and bridge ports (the overlay driver) ------------------------------------
    def add_vxlan(self, ifname, vni, local, parent_index, mtu, master=None):
        """Create VXLAN link ``ifname`` (VNI ``vni``, local VTEP ``local`` on underlay
        link ``parent_index``, UDP 4789, learning off), enslaved to ``master``; returns
        its index. Raises KernelError."""
        from .rtnl import Rtnl
        self._call("create vxlan %s" % ifname, self.rtnl.add_link, ifname, "vxlan", mtu=mtu,
                   master=master, data=Rtnl.vxlan_data(vni, local, parent_index))
        return self.index(ifname)

    def vxlan(self, ifname):
        """``{"vni", "local", "port", "learning", "link"}`` of VXLAN link ``ifname`` or
        None."""
        return self._call("look up vxlan %s" % ifname, self.rtnl.vxlan_info, ifname)

    def set_port_flags(self, index, learning=None, neigh_suppress=None):
        """Bridge port flags: MAC learning, ARP/ND suppression."""
        self._call("set bridge port flags", self.rtnl.set_brport, index, learning,
                   neigh_suppress)

    def port_flags(self, index):
        """``{"learning", "neigh_suppress"}`` of bridge port ``index`` or None."""
        return self._call("read bridge port flags", self.rtnl.brport, index)

    def _call(self, what, func, *args, **kwargs):
        try:
            return func(*args, **kwargs)
        except KernelError:
            raise
        except OSError as exc:
            raise KernelError("%s in %s: %s" % (what, self.path, exc))


def host_networks():
    """Every route destination of the calling thread's namespace (main table, IPv4 and
    IPv6; connected subnets of addresses included), for IPAM's subnet choice.

    Read from /proc/thread-self/net/{route,ipv6_route}: a netlink dump decoded by
    pyroute2 costs ~1 ms per route, this costs microseconds.
    """
    nets = []
    try:
        with open("/proc/thread-self/net/route") as fh:
            next(fh)
            for line in fh:
                f = line.split()
                dst = socket.inet_ntoa(int(f[1], 16).to_bytes(4, "little"))
                mask = bin(int(f[7], 16)).count("1")
                if mask:
                    nets.append(ipaddress.ip_network("%s/%d" % (dst, mask), False))
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    try:
        with open("/proc/thread-self/net/ipv6_route") as fh:
            for line in fh:
                f = line.split()
                plen = int(f[1], 16)
                if plen and not f[0].startswith("ff"):
                    addr = ipaddress.IPv6Address(bytes.fromhex(f[0]))
                    nets.append(ipaddress.ip_network("%s/%d" % (addr, plen), False))
    except (OSError, ValueError, IndexError):
        pass
    return nets


class Netlink:
    """Netlink handles for one engine operation: the host plus sandboxes on demand."""

    def __init__(self):
        self._host = None
        self._sandboxes = {}

    @property
    def host(self):
        """Handle for the namespace the engine runs in (the host)."""
        if self._host is None:
            self._host = Handle(_rtnl(), "host")
        return self._host

    def sandbox(self, path):
        """Handle inside the sandbox namespace at ``path``. Raises KernelError if absent."""
        handle = self._sandboxes.get(path)
        if handle is None:
            if not namespace.is_netns(path):
                raise KernelError("namespace %s does not exist" % path)
            with namespace.entered(path):
                handle = Handle(_rtnl(), path)
            self._sandboxes[path] = handle
        return handle

    def forget(self, path):
        """Close the handle of a sandbox namespace that is going away."""
        handle = self._sandboxes.pop(path, None)
        if handle:
            handle.close()

    def close(self):
        for handle in self._sandboxes.values():
            handle.close()
        self._sandboxes.clear()
        if self._host:
            self._host.close()
            self._host = None
