"""Small named netlink operations per namespace (the neutron ``ip_lib`` idea).

``Netlink`` holds one pyroute2 handle for the host namespace (the namespace the engine
runs in) and opens handles for sandboxes on demand: a thread ``setns`` into the sandbox,
creates the socket there and comes back (~1 ms, NOTES.md), instead of
``IPRoute(netns=...)`` which forks a helper (~8 ms) and creates missing files.
pyroute2 is imported lazily: it costs ~200 ms and info-only runs do not need it.
"""
import errno
import ipaddress
import socket

from ..errors import KernelError
from . import namespace

AF_INET = socket.AF_INET
AF_INET6 = socket.AF_INET6
IFA_F_NODAD = 0x02
BRIDGE_MODE_HAIRPIN = 1


def _iproute():
    from pyroute2 import IPRoute  # lazy: see module docstring
    return IPRoute()


def netlink_errno(exc):
    """The errno of a pyroute2 NetlinkError (or None)."""
    return getattr(exc, "code", None)


class Handle:
    """One netlink socket bound to one namespace, with the verbs the drivers use."""

    def __init__(self, ipr, path):
        self.ipr = ipr
        self.path = path

    def close(self):
        try:
            self.ipr.close()
        except Exception:  # closing a broken socket must not hide the real error
            pass

    # -- links -----------------------------------------------------------------------
    def _get(self, ifname):
        """RTM_GETLINK by name: one message, O(1) (``link_lookup`` dumps every link)."""
        try:
            return self.ipr.link("get", ifname=ifname)[0]
        except Exception as exc:
            if netlink_errno(exc) in (errno.ENODEV, errno.ENOENT):
                return None
            raise KernelError("look up %s in %s: %s" % (ifname, self.path, exc))

    def index(self, ifname):
        """Interface index of ``ifname`` or None."""
        msg = self._get(ifname)
        return msg["index"] if msg is not None else None

    def link(self, ifname):
        """A dict describing ``ifname`` (kind, master, state, mtu, mac) or None."""
        msg = self._get(ifname)
        if msg is None:
            return None
        idx = msg["index"]
        info = msg.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info else None
        return {"index": idx, "ifname": ifname, "kind": kind,
                "master": msg.get_attr("IFLA_MASTER"),
                "up": bool(msg["flags"] & 1),
                "mtu": msg.get_attr("IFLA_MTU"),
                "mac": (msg.get_attr("IFLA_ADDRESS") or "").lower()}

    def link_names(self):
        """Names of every interface in this namespace."""
        return [m.get_attr("IFLA_IFNAME") for m in self.ipr.get_links()]

    def add_bridge(self, ifname, mtu):
        self._call("add bridge %s" % ifname, self.ipr.link, "add", ifname=ifname,
                   kind="bridge", mtu=mtu)
        return self.index(ifname)

    def add_veth(self, host_ifname, peer_ifname, peer_netns, mac, mtu, master):
        """Create a veth pair whose peer is made directly inside ``peer_netns`` (~2 ms)."""
        peer = {"ifname": peer_ifname, "net_ns_fd": peer_netns, "mtu": mtu}
        if mac:
            peer["address"] = mac
        # enslaved and up in the same RTM_NEWLINK: one round trip instead of three
        self._call("add veth %s" % host_ifname, self.ipr.link, "add", ifname=host_ifname,
                   kind="veth", mtu=mtu, peer=peer, master=master, state="up")
        idx = self.index(host_ifname)
        self.set_hairpin(idx)
        return idx

    def set_master(self, index, master_index):
        self._call("set master", self.ipr.link, "set", index=index, master=master_index)

    def set_hairpin(self, index):
        self._call("set hairpin", self.ipr.brport, "set", index=index,
                   mode=BRIDGE_MODE_HAIRPIN)

    def hairpin(self, index):
        for msg in self.ipr.brport("show", index=index):
            pinfo = msg.get_attr("IFLA_PROTINFO")
            if pinfo is not None:
                return bool(pinfo.get_attr("IFLA_BRPORT_MODE"))
        return False

    def set_up(self, index):
        self._call("set up", self.ipr.link, "set", index=index, state="up")

    def set_down(self, index):
        self._call("set down", self.ipr.link, "set", index=index, state="down")

    def set_mtu(self, index, mtu):
        self._call("set mtu", self.ipr.link, "set", index=index, mtu=mtu)

    def set_mac(self, index, mac):
        self._call("set mac", self.ipr.link, "set", index=index, address=mac)

    def rename(self, index, ifname):
        self._call("rename to %s" % ifname, self.ipr.link, "set", index=index, ifname=ifname)

    def delete_link(self, ifname):
        """Delete ``ifname``; True if it existed. Already gone is not an error."""
        try:
            self.ipr.link("del", ifname=ifname)
        except Exception as exc:
            if netlink_errno(exc) in (errno.ENODEV, errno.ENOENT):
                return False
            raise KernelError("delete link %s in %s: %s" % (ifname, self.path, exc))
        return True

    # -- addresses -------------------------------------------------------------------
    def addresses(self, index):
        """Set of ``ip/prefix`` strings (global scope) on interface ``index``."""
        out = set()
        for msg in self.ipr.get_addr(index=index):
            if msg["scope"] != 0:
                continue
            out.add("%s/%d" % (msg.get_attr("IFA_ADDRESS"), msg["prefixlen"]))
        return out

    def add_address(self, index, cidr):
        iface = ipaddress.ip_interface(cidr)
        kw = {"index": index, "address": str(iface.ip), "prefixlen": iface.network.prefixlen}
        if iface.version == 6:
            kw["flags"] = IFA_F_NODAD  # a gateway must not sit in "tentative" for 1-2 s
        try:
            self.ipr.addr("add", **kw)
        except Exception as exc:
            if netlink_errno(exc) != errno.EEXIST:
                raise KernelError("add address %s in %s: %s" % (cidr, self.path, exc))

    def delete_address(self, index, cidr):
        iface = ipaddress.ip_interface(cidr)
        try:
            self.ipr.addr("del", index=index, address=str(iface.ip),
                          prefixlen=iface.network.prefixlen)
        except Exception as exc:
            if netlink_errno(exc) not in (errno.EADDRNOTAVAIL, errno.ENODEV):
                raise KernelError("delete address %s: %s" % (cidr, exc))

    # -- routes ----------------------------------------------------------------------
    def default_gateway(self, family):
        """(gateway, ifindex) of the default route of ``family`` or (None, None)."""
        for msg in self.ipr.get_routes(family=family, table=254):
            if msg["dst_len"] == 0 and msg.get_attr("RTA_GATEWAY"):
                return msg.get_attr("RTA_GATEWAY"), msg.get_attr("RTA_OIF")
        return None, None

    def replace_default_route(self, family, gateway, index):
        fam = AF_INET if family == 4 else AF_INET6
        dst = "0.0.0.0/0" if family == 4 else "::/0"
        self._call("set default route via %s" % gateway, self.ipr.route, "replace",
                   dst=dst, gateway=gateway, oif=index, family=fam)

    def delete_default_route(self, family):
        fam = AF_INET if family == 4 else AF_INET6
        dst = "0.0.0.0/0" if family == 4 else "::/0"
        try:
            self.ipr.route("del", dst=dst, family=fam)
        except Exception as exc:
            if netlink_errno(exc) not in (errno.ESRCH, errno.ENOENT):
                raise KernelError("delete default route: %s" % exc)

    def _call(self, what, func, *args, **kwargs):
        try:
            return func(*args, **kwargs)
        except KernelError:
            raise
        except Exception as exc:
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
            self._host = Handle(_iproute(), "host")
        return self._host

    def sandbox(self, path):
        """Handle inside the sandbox namespace at ``path``. Raises KernelError if absent."""
        handle = self._sandboxes.get(path)
        if handle is None:
            if not namespace.is_netns(path):
                raise KernelError("namespace %s does not exist" % path)
            with namespace.entered(path):
                handle = Handle(_iproute(), path)
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
