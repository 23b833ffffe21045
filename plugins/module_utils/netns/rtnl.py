"""A minimal rtnetlink client for the hot path: the dozen requests an attach needs.

Why not pyroute2 here: pyroute2 0.9 runs every request through an asyncio event loop
(~0.7 ms each on these machines) and its import costs 150-250 ms per module run
(NOTES.md). These requests are fixed, small and well specified (rtnetlink(7)), so they
are encoded with ``struct`` and sent on a plain NETLINK_ROUTE socket (~50 us each).
The socket belongs to the network namespace of the thread that creates it.
"""
import errno
import os
import socket
import struct

# netlink
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_APPEND = 0x800
NLA_F_NESTED = 0x8000
# rtnetlink message types
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
# link attributes
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER = 1, 3, 4, 10
IFLA_PROTINFO, IFLA_LINKINFO, IFLA_AF_SPEC, IFLA_NET_NS_FD = 12, 18, 26, 28
IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE = 8, 1
IFLA_LINK = 5
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_VLAN_ID, IFLA_VLAN_PROTOCOL = 1, 5
ETH_P_8021Q, ETH_P_8021AD = 0x8100, 0x88A8
VETH_INFO_PEER = 1
IFLA_BRPORT_MODE, IFLA_BRPORT_LEARNING, IFLA_BRPORT_NEIGH_SUPPRESS = 4, 8, 32
# vxlan link data
IFLA_VXLAN_ID, IFLA_VXLAN_LINK, IFLA_VXLAN_LOCAL = 1, 3, 4
IFLA_VXLAN_LEARNING, IFLA_VXLAN_PORT = 7, 15
# neighbour (and bridge FDB) entries
NDA_DST, NDA_LLADDR = 1, 2
NUD_NOARP, NUD_PERMANENT = 0x40, 0x80
NTF_SELF, NTF_MASTER = 0x02, 0x04
IFF_UP = 0x1
AF_BRIDGE = 7
AF_INET6 = 10
# address attributes
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST = 1, 2, 4
IFA_F_NODAD = 0x02
# route attributes
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
RT_TABLE_MAIN = 254
RTPROT_STATIC = 4
RTN_UNICAST = 1

_HDR = struct.Struct("=IHHII")       # nlmsghdr: len, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")   # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")    # ifaddrmsg: family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg
_NDMSG = struct.Struct("=BxxxiHBB")   # ndmsg: family, ifindex, state, flags, type


class NetlinkError(OSError):
    """A request the kernel refused; ``code`` is the errno (like pyroute2's)."""

    def __init__(self, code, message=None):
        super().__init__(code, message or os.strerror(code))
        self.code = code


def _attr(kind, data):
    length = 4 + len(data)
    return struct.pack("=HH", length, kind) + data + b"\0" * ((4 - length % 4) % 4)


def _nested(kind, *attrs):
    return _attr(kind | NLA_F_NESTED, b"".join(attrs))


def _str(kind, text):
    return _attr(kind, text.encode() + b"\0")


def _u32(kind, value):
    return _attr(kind, struct.pack("=I", value))


def _mac(text):
    return bytes(int(b, 16) for b in text.split(":"))


def parse_attrs(data, offset=0):
    """{type: bytes} of the attributes in ``data[offset:]`` (nested flag stripped)."""
    out = {}
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        out[kind & 0x7FFF] = data[offset + 4:offset + length]
        offset += (length + 3) & ~3
    return out


class Rtnl:
    """One NETLINK_ROUTE socket. Not thread-safe; one per namespace per operation."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self):
        self.sock.close()

    def request(self, msg_type, flags, payload, dump=False):
        """Send one request; return the payloads of the replies (raises NetlinkError)."""
        self.seq += 1
        flags |= NLM_F_REQUEST | (NLM_F_DUMP if dump else NLM_F_ACK)
        header = _HDR.pack(_HDR.size + len(payload), msg_type, flags, self.seq, 0)
        self.sock.send(header + payload)
        replies = []
        while True:
            data = self.sock.recv(1 << 16)
            offset = 0
            while offset + _HDR.size <= len(data):
                length, kind, _flags, seq, _pid = _HDR.unpack_from(data, offset)
                body = data[offset + _HDR.size:offset + length]
                offset += (length + 3) & ~3
                if seq != self.seq:
                    continue
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", body)[0]
                    if code:
                        raise NetlinkError(code)
                    return replies
                if kind == NLMSG_DONE:
                    return replies
                replies.append((kind, body))

    # -- links -----------------------------------------------------------------------
    def get_link(self, ifname):
        """dict(index, ifname, kind, master, up, mtu, mac) of ``ifname`` or None."""
        try:
            query = _IFINFO.pack(0, 0, 0, 0, 0) + _str(IFLA_IFNAME, ifname)
            replies = self.request(RTM_GETLINK, 0, query)
        except NetlinkError as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT):
                return None
            raise
        # a GET with ACK answers the link first, then the ACK
        for kind, body in replies:
            if kind == RTM_NEWLINK:
                return self._link(body)
        return None

    @staticmethod
    def _link(body):
        _family, _type, index, flags, _change = _IFINFO.unpack_from(body)
        attrs = parse_attrs(body, _IFINFO.size)
        kind = None
        if IFLA_LINKINFO in attrs:
            info = parse_attrs(attrs[IFLA_LINKINFO])
            if IFLA_INFO_KIND in info:
                kind = info[IFLA_INFO_KIND].rstrip(b"\0").decode()
        mac = attrs.get(IFLA_ADDRESS, b"")
        return {"index": index,
                "ifname": attrs.get(IFLA_IFNAME, b"").rstrip(b"\0").decode(),
                "kind": kind,
                "master": struct.unpack("=I", attrs[IFLA_MASTER])[0]
                if IFLA_MASTER in attrs else None,
                "up": bool(flags & IFF_UP),
                "mtu": struct.unpack("=I", attrs[IFLA_MTU])[0] if IFLA_MTU in attrs else None,
                "mac": ":".join("%02x" % b for b in mac)}

    def links(self):
        """Every link of the namespace (dicts as ``get_link``)."""
        return [self._link(body) for kind, body in
                self.request(RTM_GETLINK, 0, _IFINFO.pack(0, 0, 0, 0, 0), dump=True)
                if kind == RTM_NEWLINK]

    def add_link(self, ifname, kind, mtu=None, master=None, up=False, data=b"",
                 mac=None, link=None, netns_fd=None):
        """RTM_NEWLINK (create, exclusive). ``data`` is the kind's IFLA_INFO_DATA."""
        attrs = _str(IFLA_IFNAME, ifname)
        if mtu:
            attrs += _u32(IFLA_MTU, mtu)
        if master:
            attrs += _u32(IFLA_MASTER, master)
        if mac:
            attrs += _attr(IFLA_ADDRESS, _mac(mac))
        if link:
            attrs += _u32(IFLA_LINK, link)  # the lower link of a macvlan/ipvlan/vlan
        if netns_fd is not None:
            attrs += _u32(IFLA_NET_NS_FD, netns_fd)
        info = _str(IFLA_INFO_KIND, kind)
        if data:
            info += _attr(IFLA_INFO_DATA | NLA_F_NESTED, data)
        attrs += _attr(IFLA_LINKINFO | NLA_F_NESTED, info)
        flags = IFF_UP if up else 0
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
                     _IFINFO.pack(0, 0, 0, flags, flags) + attrs)

    @staticmethod
    def veth_peer(ifname, netns_fd=None, mac=None, mtu=None):
        """IFLA_INFO_DATA of a veth whose peer is ``ifname`` (in ``netns_fd``)."""
        peer = _str(IFLA_IFNAME, ifname)
        if mtu:
            peer += _u32(IFLA_MTU, mtu)
        if mac:
            peer += _attr(IFLA_ADDRESS, _mac(mac))
        if netns_fd is not None:
            peer += _u32(IFLA_NET_NS_FD, netns_fd)
        return _attr(VETH_INFO_PEER, _IFINFO.pack(0, 0, 0, 0, 0) + peer)

    @staticmethod
    def vlan_data(vid, protocol=None):
        """IFLA_INFO_DATA of an 802.1q (or, with ``protocol`` 0x88a8, 802.1ad) link:
        IFLA_VLAN_ID (u16, 1-4094) and the optional IFLA_VLAN_PROTOCOL (be16); the
        kernel's default protocol is 802.1q, so ``ip link`` sends none either."""
        if not 1 <= vid <= 4094:
            raise ValueError("VLAN id %r is outside 1..4094" % (vid,))
        data = _attr(IFLA_VLAN_ID, struct.pack("=H", vid))
        if protocol is not None:
            data += _attr(IFLA_VLAN_PROTOCOL, struct.pack(">H", protocol))
        return data

    @staticmethod
    def vxlan_data(vni, local, parent_index, port=4789):
        """IFLA_INFO_DATA of a VXLAN link: VNI, local VTEP address (IPv4), the underlay
        link, destination UDP port, and learning off (peers come from the cluster
        store as static FDB entries, never from flooding)."""
        import ipaddress
        return b"".join((_u32(IFLA_VXLAN_ID, vni), _u32(IFLA_VXLAN_LINK, parent_index),
                         _attr(IFLA_VXLAN_LOCAL, ipaddress.IPv4Address(local).packed),
                         _attr(IFLA_VXLAN_LEARNING, b"\0"),
                         _attr(IFLA_VXLAN_PORT, struct.pack(">H", port))))

    def vxlan_info(self, ifname):
        """``{"vni", "local", "port", "learning", "link"}`` of VXLAN link ``ifname``, or
        None when it is missing or no VXLAN."""
        import ipaddress
        try:
            query = _IFINFO.pack(0, 0, 0, 0, 0) + _str(IFLA_IFNAME, ifname)
            replies = self.request(RTM_GETLINK, 0, query)
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return None
            raise
        for kind, body in replies:
            info = parse_attrs(parse_attrs(body, _IFINFO.size).get(IFLA_LINKINFO, b""))
            if info.get(IFLA_INFO_KIND, b"").rstrip(b"\0") != b"vxlan":
                return None
            data = parse_attrs(info.get(IFLA_INFO_DATA, b""))
            local = data.get(IFLA_VXLAN_LOCAL)
            return {"vni": struct.unpack("=I", data[IFLA_VXLAN_ID])[0]
                    if IFLA_VXLAN_ID in data else None,
                    "local": str(ipaddress.IPv4Address(local)) if local else None,
                    "port": struct.unpack(">H", data[IFLA_VXLAN_PORT])[0]
                    if IFLA_VXLAN_PORT in data else None,
                    "learning": bool(data.get(IFLA_VXLAN_LEARNING, b"\1")[0]),
                    "link": struct.unpack("=I", data[IFLA_VXLAN_LINK])[0]
                    if IFLA_VXLAN_LINK in data else None}
        return None

    def set_link(self, index, up=None, master=None, mtu=None, mac=None, ifname=None):
        """RTM_NEWLINK on an existing link: state, master, MTU, MAC, name."""
        flags = change = 0
        if up is not None:
            change = IFF_UP
            flags = IFF_UP if up else 0
        attrs = b""
        if master is not None:
            attrs += _u32(IFLA_MASTER, master)
        if mtu is not None:
            attrs += _u32(IFLA_MTU, mtu)
        if mac is not None:
            attrs += _attr(IFLA_ADDRESS, _mac(mac))
        if ifname is not None:
            attrs += _str(IFLA_IFNAME, ifname)
        self.request(RTM_NEWLINK, 0, _IFINFO.pack(0, 0, index, flags, change) + attrs)

    def set_no_ipv6_addresses(self, index):
        """IPv6 address generation ``none`` on link ``index`` (IFLA_AF_SPEC/AF_INET6/
        IFLA_INET6_ADDR_GEN_MODE, as ``ip link set addrgenmode none``): once up it makes
        no link-local address, so no DAD and no routes of its own but the multicast one.
        Refused (EAFNOSUPPORT) where the link has no IPv6 at all."""
        spec = _nested(IFLA_AF_SPEC, _nested(AF_INET6, _attr(IFLA_INET6_ADDR_GEN_MODE, bytes(
            [IN6_ADDR_GEN_MODE_NONE]))))
        self.request(RTM_NEWLINK, 0, _IFINFO.pack(0, 0, index, 0, 0) + spec)

    def set_hairpin(self, index, on=True):
        """Bridge port hairpin mode (IFLA_PROTINFO/IFLA_BRPORT_MODE, family AF_BRIDGE)."""
        protinfo = _nested(IFLA_PROTINFO, _attr(IFLA_BRPORT_MODE, bytes([1 if on else 0])))
        self.request(RTM_SETLINK, 0, _IFINFO.pack(AF_BRIDGE, 0, index, 0, 0) + protinfo)

    def hairpin(self, index):
        """Whether bridge port ``index`` has hairpin mode on."""
        for kind, body in self.request(RTM_GETLINK, 0, _IFINFO.pack(AF_BRIDGE, 0, 0, 0, 0),
                                       dump=True):
            if kind != RTM_NEWLINK or _IFINFO.unpack_from(body)[2] != index:
                continue
            attrs = parse_attrs(body, _IFINFO.size)
            if IFLA_PROTINFO in attrs:
                mode = parse_attrs(attrs[IFLA_PROTINFO]).get(IFLA_BRPORT_MODE)
                return bool(mode and mode[0])
        return False

    def set_brport(self, index, learning=None, neigh_suppress=None):
        """Bridge port flags of ``index``: MAC learning, ARP/ND suppression."""
        flags = b""
        if learning is not None:
            flags += _attr(IFLA_BRPORT_LEARNING, bytes([1 if learning else 0]))
        if neigh_suppress is not None:
            flags += _attr(IFLA_BRPORT_NEIGH_SUPPRESS, bytes([1 if neigh_suppress else 0]))
        header = _IFINFO.pack(AF_BRIDGE, 0, index, 0, 0)
        self.request(RTM_SETLINK, 0, header + _nested(IFLA_PROTINFO, flags))

    def brport(self, index):
        """``{"learning", "neigh_suppress"}`` of bridge port ``index`` (None: no port)."""
        for kind, body in self.request(RTM_GETLINK, 0, _IFINFO.pack(AF_BRIDGE, 0, 0, 0, 0),
                                       dump=True):
            if kind != RTM_NEWLINK or _IFINFO.unpack_from(body)[2] != index:
                continue
            info = parse_attrs(parse_attrs(body, _IFINFO.size).get(IFLA_PROTINFO, b""))
            return {"learning": bool(info.get(IFLA_BRPORT_LEARNING, b"\1")[0]),
                    "neigh_suppress": bool(info.get(IFLA_BRPORT_NEIGH_SUPPRESS, b"\0")[0])}
        return None

    # -- neighbours and bridge FDB entries -------------------------------------------------
    def neighbours(self, family, index):
        """Entries of interface ``index``: ``[{"dst", "mac", "state", "flags"}]``;
        ``family`` AF_BRIDGE lists FDB entries (``dst``: the VTEP of a VXLAN entry),
        AF_INET/AF_INET6 the neighbour table."""
        import ipaddress
        out = []
        for kind, body in self.request(RTM_GETNEIGH, 0,
                                       _NDMSG.pack(family, index, 0, 0, 0), dump=True):
            if kind != RTM_NEWNEIGH:
                continue
            fam, ifindex, state, flags, dummy = _NDMSG.unpack_from(body)
            if ifindex != index:
                continue
            attrs = parse_attrs(body, _NDMSG.size)
            dst = attrs.get(NDA_DST)
            lladdr = attrs.get(NDA_LLADDR)
            out.append({"dst": str(ipaddress.ip_address(dst)) if dst else None,
                        "mac": ":".join("%02x" % b for b in lladdr) if lladdr else None,
                        "state": state, "flags": flags})
        return out

    def neighbour(self, add, family, index, mac=None, dst=None, state=NUD_PERMANENT,
                  flags=0):
        """Add (replace) or delete one entry: a neighbour (``family`` AF_INET/AF_INET6:
        ``dst`` IP -> ``mac``) or an FDB entry (AF_BRIDGE: ``mac`` [-> VTEP ``dst``],
        ``flags`` NTF_SELF for the VXLAN device's table, NTF_MASTER for the bridge's)."""
        import ipaddress
        attrs = b""
        if dst is not None:
            attrs += _attr(NDA_DST, ipaddress.ip_address(dst).packed)
        if mac is not None:
            attrs += _attr(NDA_LLADDR, _mac(mac))
        body = _NDMSG.pack(family, index, state, flags, 0) + attrs
        if add:
            self.request(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, body)
        else:
            self.request(RTM_DELNEIGH, 0, body)

    def neighbour_append(self, family, index, mac, dst, state=NUD_PERMANENT, flags=0):
        """Add one more destination for ``mac`` (``bridge fdb append``: the VXLAN flood
        list holds one all-zero entry per peer VTEP)."""
        import ipaddress
        attrs = _attr(NDA_DST, ipaddress.ip_address(dst).packed) + _attr(NDA_LLADDR, _mac(mac))
        self.request(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_APPEND,
                     _NDMSG.pack(family, index, state, flags, 0) + attrs)

    def delete_link(self, ifname):
        self.request(RTM_DELLINK, 0, _IFINFO.pack(0, 0, 0, 0, 0) + _str(IFLA_IFNAME, ifname))

    # -- addresses -------------------------------------------------------------------
    def addresses(self, index):
        """Set of ``ip/prefix`` (scope global) on interface ``index``."""
        out = set()
        for kind, body in self.request(RTM_GETADDR, 0, _IFADDR.pack(0, 0, 0, 0, 0),
                                       dump=True):
            if kind != RTM_NEWADDR:
                continue
            family, prefixlen, _flags, scope, ifindex = _IFADDR.unpack_from(body)
            if ifindex != index or scope != 0:
                continue
            attrs = parse_attrs(body, _IFADDR.size)
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if raw:
                out.add("%s/%d" % (socket.inet_ntop(family, raw), prefixlen))
        return out

    def address(self, add, index, ip, prefixlen, family, broadcast=None):
        """RTM_NEWADDR (``add``) or RTM_DELADDR of ``ip/prefixlen`` on ``index``; an IPv4
        address carries its ``broadcast`` when given (as ``ip addr add ... brd +``)."""
        fam = socket.AF_INET if family == 4 else socket.AF_INET6
        raw = socket.inet_pton(fam, ip)
        flags = IFA_F_NODAD if family == 6 else 0
        attrs = _attr(IFA_ADDRESS, raw) + (_attr(IFA_LOCAL, raw) if family == 4 else b"")
        if broadcast and add:
            attrs += _attr(IFA_BROADCAST, socket.inet_pton(fam, broadcast))
        msg = _IFADDR.pack(fam, prefixlen, flags, 0, index) + attrs
        if add:
            self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, msg)
        else:
            self.request(RTM_DELADDR, 0, msg)

    # -- routes ----------------------------------------------------------------------
    def default_route(self, family):
        """(gateway, oif) of the main table's default route of ``family`` or (None, None)."""
        fam = socket.AF_INET if family == 4 else socket.AF_INET6
        for kind, body in self.request(RTM_GETROUTE, 0,
                                       _RTMSG.pack(fam, 0, 0, 0, 0, 0, 0, 0, 0), dump=True):
            if kind != RTM_NEWROUTE:
                continue
            rfam, dst_len, _src, _tos, table = _RTMSG.unpack_from(body)[:5]
            attrs = parse_attrs(body, _RTMSG.size)
            if RTA_TABLE in attrs:
                table = struct.unpack("=I", attrs[RTA_TABLE])[0]
            if rfam != fam or dst_len != 0 or table != RT_TABLE_MAIN:
                continue
            if RTA_GATEWAY in attrs:
                oif = struct.unpack("=I", attrs[RTA_OIF])[0] if RTA_OIF in attrs else None
                return socket.inet_ntop(fam, attrs[RTA_GATEWAY]), oif
        return None, None

    def replace_default_route(self, family, gateway, oif):
        fam = socket.AF_INET if family == 4 else socket.AF_INET6
        msg = _RTMSG.pack(fam, 0, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, 0, RTN_UNICAST, 0)
        msg += _attr(RTA_GATEWAY, socket.inet_pton(fam, gateway)) + _u32(RTA_OIF, oif)
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, msg)

    def delete_default_route(self, family):
        fam = socket.AF_INET if family == 4 else socket.AF_INET6
        self.request(RTM_DELROUTE, 0,
                     _RTMSG.pack(fam, 0, 0, 0, RT_TABLE_MAIN, 0, 0, RTN_UNICAST, 0))
