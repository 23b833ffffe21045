"""Flush conntrack entries of removed port mappings (ctnetlink, stdlib only).

Without this, a UDP flow (or a TCP connection) keeps being forwarded to the old
container after its mapping is gone, because NAT is decided once per connection.

Two ways over a netlink socket opened in the calling thread's network namespace:

* kernel-side filtered flush (Linux >= 6.12, IPv4 TCP/UDP mappings): one
  IPCTNL_MSG_CT_DELETE without a tuple to delete but with CTA_FILTER, so the kernel
  deletes the matching entries itself (~0.3 ms). It walks the shared hash table too,
  but skips empty buckets without taking their lock;
* dump and delete (everything else): one dump per address family, matched here, then
  one delete per matching entry. The dump locks every bucket of the kernel's shared
  hash table (~10 ms with 262144 buckets), whatever the namespace holds.

pyroute2's conntrack module would cost ~200 ms of import per run, hence this small
client. When ctnetlink is unavailable the ``conntrack`` tool is used instead.
"""
import errno
import ipaddress
import os
import socket
import struct

from ..errors import KernelError
from .base import find_tool, run_tool

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_GET = 1
IPCTNL_MSG_CT_DELETE = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLA_F_NESTED = 0x8000
CTA_TUPLE_ORIG, CTA_TUPLE_REPLY = 1, 2
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
CTA_FILTER = 25
CTA_FILTER_ORIG_FLAGS, CTA_FILTER_REPLY_FLAGS = 1, 2
CTA_FILTER_F_CTA_IP_SRC, CTA_FILTER_F_CTA_IP_DST = 1 << 0, 1 << 1
CTA_FILTER_F_CTA_PROTO_NUM = 1 << 3
CTA_FILTER_F_CTA_PROTO_SRC_PORT, CTA_FILTER_F_CTA_PROTO_DST_PORT = 1 << 4, 1 << 5
PROTO_NUMBERS = {"tcp": 6, "udp": 17, "sctp": 132}
# What a kernel-side filter matches exactly (nf_conntrack_netlink.c,
# ctnetlink_filter_match_tuple): ports of TCP and UDP only (SCTP ports are ignored), and
# IPv4 addresses only (IPv6 ones are compared inverted up to at least 6.18: a filter on
# one address deletes the entries of every other address).
_KERNEL_FILTER_FAMILIES = (4,)
_KERNEL_FILTER_PROTOCOLS = ("tcp", "udp")
# A filtered flush costs ~0.2 ms, a dump ~10 ms (both scale with the hash table's size):
# beyond this many mappings one dump is about as cheap.
_KERNEL_FILTER_MAX = 32
_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}
_HDR = struct.Struct("=LHHLL")
_TIMEOUT = 5.0


def flush_mappings(mappings):
    """Delete the conntrack entries created through ``mappings`` (PortMapping list).

    Called by the backends after the mappings' rules are gone. An entry matches when
    its original direction went to the mapping's host port (and host address, if one)
    with its protocol, and its reply comes from the container address and port; every
    matching entry of the namespace is gone on return, whichever way is used.
    Returns the number of entries known to be deleted: exact for the mappings handled
    by dump and delete, nothing for those flushed kernel-side (the kernel acknowledges
    a filtered flush without saying how many entries it removed), ``len(mappings)``
    through the ``conntrack`` tool. Raises KernelError when conntrack can be neither
    read through netlink nor through the ``conntrack`` tool.
    """
    if not mappings or _count() == 0:
        return 0
    try:
        return _flush_netlink(mappings)
    except OSError as exc:
        if exc.errno not in (errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT, errno.EPERM,
                             errno.EACCES, errno.ENOENT):
            raise KernelError("conntrack: %s" % os.strerror(exc.errno or 0)) from None
    return _flush_tool(mappings)


def _count():
    """Entries in this namespace's conntrack table (None when unknown). A dump walks the
    kernel's whole shared hash table (~10 ms), so an empty table is worth knowing."""
    try:
        with open("/proc/sys/net/netfilter/nf_conntrack_count") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return None


# -- netlink ---------------------------------------------------------------------------
def _attrs(data):
    """Yield (type without flags, payload, raw bytes) of the netlink attributes."""
    pos = 0
    while pos + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, pos)
        if length < 4:
            break
        yield kind & 0x3FFF, data[pos + 4:pos + length], data[pos:pos + length]
        pos += (length + 3) & ~3


def _tuple(payload):
    """(src ip, dst ip, proto number, src port, dst port) of a CTA_TUPLE_* payload."""
    src = dst = None
    proto = sport = dport = None
    for kind, value, dummy in _attrs(payload):
        if kind == CTA_TUPLE_IP:
            for k, v, dummy in _attrs(value):
                if k in (CTA_IP_V4_SRC, CTA_IP_V6_SRC):
                    src = ipaddress.ip_address(v)
                elif k in (CTA_IP_V4_DST, CTA_IP_V6_DST):
                    dst = ipaddress.ip_address(v)
        elif kind == CTA_TUPLE_PROTO:
            for k, v, dummy in _attrs(value):
                if k == CTA_PROTO_NUM:
                    proto = v[0]
                elif k == CTA_PROTO_SRC_PORT:
                    sport = struct.unpack("!H", v[:2])[0]
                elif k == CTA_PROTO_DST_PORT:
                    dport = struct.unpack("!H", v[:2])[0]
    return src, dst, proto, sport, dport


def _nla(kind, payload, nested=False):
    """One netlink attribute, padded to 4 bytes."""
    raw = struct.pack("=HH", 4 + len(payload), kind | (NLA_F_NESTED if nested else 0))
    return raw + payload + b"\0" * (-len(payload) % 4)


def _filter_attrs(mapping):
    """CTA_TUPLE_ORIG + CTA_TUPLE_REPLY + CTA_FILTER selecting what ``_matches`` accepts.

    For IPv4 TCP/UDP mappings only (see _KERNEL_FILTER_PROTOCOLS). The original tuple
    never carries a source address, so a kernel without filtered flushes (< 6.12) that
    reads it as the exact tuple of one entry to delete rejects it with EINVAL instead.
    """
    proto = _nla(CTA_PROTO_NUM, bytes([PROTO_NUMBERS[mapping.protocol]]))
    orig = _nla(CTA_TUPLE_PROTO, proto + _nla(CTA_PROTO_DST_PORT,
                                              struct.pack("!H", mapping.host_port)), True)
    orig_flags = CTA_FILTER_F_CTA_PROTO_NUM | CTA_FILTER_F_CTA_PROTO_DST_PORT
    if mapping.host_ip:
        orig = _nla(CTA_TUPLE_IP, _nla(CTA_IP_V4_DST, socket.inet_aton(mapping.host_ip)),
                    True) + orig
        orig_flags |= CTA_FILTER_F_CTA_IP_DST
    reply_ip = _nla(CTA_TUPLE_IP, _nla(CTA_IP_V4_SRC, socket.inet_aton(mapping.container_ip)),
                    True)
    reply_port = _nla(CTA_PROTO_SRC_PORT, struct.pack("!H", mapping.container_port))
    reply = reply_ip + _nla(CTA_TUPLE_PROTO, proto + reply_port, True)
    reply_flags = CTA_FILTER_F_CTA_IP_SRC | CTA_FILTER_F_CTA_PROTO_NUM | \
        CTA_FILTER_F_CTA_PROTO_SRC_PORT
    flags = _nla(CTA_FILTER_ORIG_FLAGS, struct.pack("=I", orig_flags)) + \
        _nla(CTA_FILTER_REPLY_FLAGS, struct.pack("=I", reply_flags))
    tuples = _nla(CTA_TUPLE_ORIG, orig, True) + _nla(CTA_TUPLE_REPLY, reply, True)
    return tuples + _nla(CTA_FILTER, flags, True)


class _Ctnetlink:
    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.settimeout(_TIMEOUT)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self):
        self.sock.close()

    def _send(self, msg_type, flags, family, payload=b""):
        self.seq += 1
        body = struct.pack("=BBH", family, 0, 0) + payload
        self.sock.send(_HDR.pack(_HDR.size + len(body),
                                 (NFNL_SUBSYS_CTNETLINK << 8) | msg_type,
                                 NLM_F_REQUEST | flags, self.seq, 0) + body)
        return self.seq

    def _messages(self, seq):
        """Yield (type, payload after nfgenmsg) until DONE/ACK; raise OSError on error."""
        while True:
            data = self.sock.recv(1 << 20)
            pos = 0
            while pos + _HDR.size <= len(data):
                length, kind, dummy, mseq, dummy2 = _HDR.unpack_from(data, pos)
                if length < _HDR.size:
                    return
                body = data[pos + _HDR.size:pos + length]
                pos += (length + 3) & ~3
                if mseq != seq:
                    continue
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", body)[0]
                    if code:
                        raise OSError(code, os.strerror(code))
                    return
                yield kind, body[4:]

    def dump(self, family):
        """Yield (raw CTA_TUPLE_ORIG attribute, orig tuple, reply tuple)."""
        seq = self._send(IPCTNL_MSG_CT_GET, NLM_F_DUMP, family)
        for dummy, payload in self._messages(seq):
            orig_raw = orig = reply = None
            for kind, value, raw in _attrs(payload):
                if kind == CTA_TUPLE_ORIG:
                    orig_raw, orig = raw, _tuple(value)
                elif kind == CTA_TUPLE_REPLY:
                    reply = _tuple(value)
            if orig and reply:
                yield orig_raw, orig, reply

    def flush_filtered(self, family, attrs):
        """Delete, in the kernel, every entry of ``family`` the CTA_FILTER in ``attrs``
        selects. Raises OSError(EINVAL/EOPNOTSUPP) when the kernel has no filtered flush."""
        seq = self._send(IPCTNL_MSG_CT_DELETE, NLM_F_ACK, family, attrs)
        for dummy in self._messages(seq):
            pass

    def delete(self, family, orig_raw):
        seq = self._send(IPCTNL_MSG_CT_DELETE, NLM_F_ACK, family, orig_raw)
        try:
            for dummy in self._messages(seq):
                pass
        except OSError as exc:
            if exc.errno != errno.ENOENT:  # already gone (timed out meanwhile)
                raise


def _matches(mapping, orig, reply):
    dummy, odst, oproto, dummy2, odport = orig
    rsrc, dummy, dummy2, rsport, dummy3 = reply
    if oproto != PROTO_NUMBERS[mapping.protocol] or odport != mapping.host_port:
        return False
    if mapping.host_ip and str(odst) != mapping.host_ip:
        return False
    return str(rsrc) == mapping.container_ip and rsport == mapping.container_port


_SOCKET = {}  # {"netns": (dev, inode), "ct": _Ctnetlink}: the most recent one only


def _ctnetlink():
    """The ctnetlink socket of the calling thread's namespace, reused across calls.

    Closing a netfilter netlink socket waits for an RCU grace period in the kernel
    (~9 ms measured here), so one process keeps the socket of the namespace it last
    worked in instead of paying that on every port withdrawal.
    """
    st = os.stat("/proc/thread-self/ns/net")
    key = (st.st_dev, st.st_ino)
    if _SOCKET.get("netns") != key:
        old = _SOCKET.pop("ct", None)
        if old is not None:
            old.close()
        _SOCKET.update(netns=key, ct=_Ctnetlink())
    return _SOCKET["ct"]


_KERNEL_FILTER = {"supported": True}  # False once the kernel refused a filtered flush


def _flush_in_kernel(ct, mappings):
    """Flush kernel-side the mappings a filter matches exactly; return the others.

    Called by _flush_netlink with the namespace's socket. Does nothing (returns all of
    ``mappings``) when there are too many for it to pay, or once the kernel has refused
    a filtered flush (< 6.12: EINVAL, nothing deleted) in this process.
    """
    eligible = [m for m in mappings if m.family in _KERNEL_FILTER_FAMILIES and (
        m.protocol in _KERNEL_FILTER_PROTOCOLS)]
    if not eligible or len(eligible) > _KERNEL_FILTER_MAX or not _KERNEL_FILTER["supported"]:
        return list(mappings)
    for m in eligible:
        try:
            ct.flush_filtered(_FAMILY[m.family], _filter_attrs(m))
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
            _KERNEL_FILTER["supported"] = False
            return list(mappings)
    return [m for m in mappings if m not in eligible]


def _flush_netlink(mappings):
    """Delete the entries of ``mappings`` through ctnetlink (see flush_mappings).

    Returns the number of entries deleted by dump and delete; entries flushed
    kernel-side are not counted. Raises OSError/socket.timeout on netlink failure.
    """
    ct = _ctnetlink()
    deleted = 0
    try:
        rest = _flush_in_kernel(ct, mappings)
        for family in sorted({m.family for m in rest}):
            mine = [m for m in rest if m.family == family]
            victims = [raw for raw, orig, reply in ct.dump(_FAMILY[family])
                       if any(_matches(m, orig, reply) for m in mine)]
            for raw in victims:
                ct.delete(_FAMILY[family], raw)
                deleted += 1
    except (OSError, socket.timeout):
        _SOCKET.clear()  # a broken socket is not reused
        ct.close()
        raise
    return deleted


# -- the conntrack tool (fallback) ------------------------------------------------------
def _flush_tool(mappings):
    exe = find_tool("conntrack")
    if exe is None:
        return 0  # no ctnetlink and no tool: there is no conntrack table to clean
    for m in mappings:
        argv = [exe, "-D", "-f", "ipv4" if m.family == 4 else "ipv6", "-p", m.protocol,
                "--orig-port-dst", str(m.host_port), "--reply-src", m.container_ip,
                "--reply-port-src", str(m.container_port)]
        if m.host_ip:
            argv += ["--orig-dst", m.host_ip]
        run_tool(argv, ok_codes=(0, 1))  # 1: nothing matched
    return len(mappings)
