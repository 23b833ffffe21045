"""Turn requested ports into concrete PortMappings: ranges expanded, host ports chosen.

Ephemeral host ports come from the host's ``net.ipv4.ip_local_port_range`` (read in the
calling thread's network namespace: /proc/sys/net and /proc/thread-self/net belong to
the reading thread's namespace), skipping ``ip_local_reserved_ports``, ports published
already and ports bound by sockets of the host. Re-running with the previous result
keeps the same ports. Conflicts with other sandboxes' published ports are errors.
"""
import ipaddress
import socket
import struct

from ..constants import (DEFAULT_EPHEMERAL_RANGE, SYSCTL_PORT_RANGE,
                         SYSCTL_RESERVED_PORTS)
from ..errors import ConflictError, PoolExhaustedError, ValidationError
from ..firewall.model import PortMapping
from ..netns.sysctl import read_path as _read

_ALL = {4: "0.0.0.0", 6: "::"}
_TCP_LISTEN = "0A"


def allocate_ports(requested, container_ip4, container_ip6, default_host_ip, published,
                   previous, field="ports", internal=False, host_state=None):
    """Expand ``requested`` (RequestedPort list from ``parse_ports``) into mappings.

    Called by the controller when an endpoint's ports are set, after ``parse_ports``
    and before any kernel change. ``container_ip4``/``container_ip6``: the endpoint's
    addresses ("" or None when it has none of a family). ``default_host_ip``: the
    network's ``host_binding_ipv4`` option (None/""/"0.0.0.0" = every address).
    ``published``: (PortMapping, owner sandbox name) of every *other* endpoint on the
    host. ``previous``: this endpoint's current mappings (ephemeral ports stay stable).
    ``internal``: the network is internal (no ports may be published).
    ``host_state``: a HostPorts (tests); default reads the calling thread's namespace.

    Guarantees: every returned mapping's host port/protocol/address is free of other
    sandboxes' mappings and distinct within the request; ephemeral ports are not bound
    by host sockets. Returns a sorted list of PortMapping. Raises ValidationError (bad
    combination, internal network), ConflictError (port published by another sandbox,
    duplicated in the request, or an explicit port a host socket listens on) and
    PoolExhaustedError (no ephemeral port left), each naming ``ports[i].<key>``.
    """
    requested = list(requested or [])
    if not requested:
        return []
    if internal:
        raise ValidationError("the network is internal: it cannot publish ports",
                              field=field)
    default = _default_host_ip(default_host_ip, field)
    host = host_state if host_state is not None else HostPorts()
    previous = list(previous or [])
    ours = set(previous)
    taken = [(m, "sandbox %s" % owner) for m, owner in published or []]
    result = []
    for req in requested:
        where = "%s[%d]" % (field, req.index)
        targets = _targets(req, container_ip4, container_ip6, default, where)
        for k in range(req.count):
            cport = req.container_start + k
            if req.ephemeral:
                hport = _ephemeral(req, cport, targets, previous, taken, host, where)
            else:
                hport = req.host_start + k
            for family, host_ip, cip in targets:
                mapping = PortMapping(protocol=req.protocol, host_ip=host_ip,
                                      host_port=hport, container_ip=cip,
                                      container_port=cport, family=family)
                _check_free(mapping, taken, where)
                if not req.ephemeral and mapping not in ours:
                    _check_not_listening(mapping, host, where)
                taken.append((mapping, where))
                result.append(mapping)
    return sorted(result)


def _default_host_ip(value, field):
    if value in (None, ""):
        return None
    try:
        address = ipaddress.ip_address(str(value).strip())
    except ValueError:
        raise ValidationError("host binding address %r is not an IP address" % value,
                              field=field) from None
    if address.is_unspecified and address.version == 4:
        return None  # Docker: 0.0.0.0 as the default also binds ::
    return str(address)


def _targets(req, ip4, ip6, default, where):
    """[(family, host_ip or "", container address)] the entry maps, per family."""
    cips = {4: _plain(ip4), 6: _plain(ip6)}
    host_ip = req.host_ip if req.host_ip is not None else default
    if host_ip is None:
        out = [(f, "", cips[f]) for f in (4, 6) if cips[f]]
        if not out:
            raise ValidationError("the endpoint has no address to forward to",
                                  field=where)
        return out
    address = ipaddress.ip_address(host_ip)
    family = address.version
    if not cips[family]:
        raise ValidationError("host_ip %s is IPv%d but the endpoint has no IPv%d address"
                              % (host_ip, family, family), field=where + ".host_ip")
    if family == 6 and address.is_loopback:
        raise ValidationError("::1 cannot be forwarded by the kernel; use 127.0.0.1",
                              field=where + ".host_ip")
    return [(family, "" if address.is_unspecified else str(address), cips[family])]


def _plain(cidr):
    if not cidr:
        return ""
    return str(ipaddress.ip_interface(str(cidr).strip()).ip)


def _overlap(a_ip, b_ip):
    return not a_ip or not b_ip or a_ip == b_ip


def _clash(m, other):
    same_port = (m.protocol, m.family, m.host_port) == (other.protocol, other.family,
                                                        other.host_port)
    return same_port and _overlap(m.host_ip, other.host_ip)


def _check_free(mapping, taken, where):
    for other, owner in taken:
        if _clash(mapping, other):
            shown = mapping.host_ip or _ALL[mapping.family]
            if owner.startswith("sandbox "):
                raise ConflictError("%s.host_port %d/%s on %s is already published by %s"
                                    % (where, mapping.host_port, mapping.protocol, shown,
                                       owner), field=where + ".host_port")
            raise ConflictError("%s.host_port %d/%s on %s is also requested by %s"
                                % (where, mapping.host_port, mapping.protocol, shown, owner),
                                field=where + ".host_port")


def _check_not_listening(mapping, host, where):
    for ip in host.listening(mapping.protocol, mapping.host_port):
        if ip is not None and ip != "::":  # "::" may be dual-stack: clashes with both
            address = ipaddress.ip_address(ip)
            if address.version != mapping.family:
                continue
            if not address.is_unspecified and not _overlap(mapping.host_ip, ip):
                continue
        raise ConflictError(
            "%s.host_port %d/%s on %s is in use on the host (a socket listens on %s)"
            % (where, mapping.host_port, mapping.protocol,
               mapping.host_ip or _ALL[mapping.family], ip or "every address"),
            field=where + ".host_port")


def _ephemeral(req, cport, targets, previous, taken, host, where):
    """One host port for every family of the entry: the previous one if still free,
    else the lowest free port of the ephemeral range."""
    def free(port):
        for family, host_ip, cip in targets:
            m = PortMapping(req.protocol, host_ip, port, cip, cport, family)
            if any(_clash(m, other) for other, dummy in taken):
                return False
        return True

    for old in previous:
        bound = {(f, h) for f, h, dummy in targets}
        if all(((old.protocol, old.container_port) == (req.protocol, cport),
                (old.family, old.host_ip) in bound)) and free(old.host_port):
            return old.host_port
    low, high = host.port_range()
    reserved = host.reserved()
    bound = host.bound(req.protocol)
    used = {m.host_port for m, dummy in taken if m.protocol == req.protocol}
    for port in range(low, high + 1):
        if port in reserved or port in bound or port in used:
            continue
        if free(port):
            return port
    raise PoolExhaustedError("no free %s host port left in the ephemeral range %d-%d"
                             % (req.protocol, low, high), field=where + ".host_port")


class HostPorts:
    """The host's port facts, read from /proc in the calling thread's namespace.

    Tests substitute an object with the same four methods. Socket tables are read once
    per protocol and instance: /proc/net/tcp walks the kernel's whole socket hash
    (~1 ms a read here), and one request may check many ports.
    """

    def __init__(self):
        self._sockets = {}

    def _table(self, protocol):
        if protocol not in self._sockets:
            self._sockets[protocol] = list(_sockets(protocol))
        return self._sockets[protocol]

    def port_range(self):
        """(low, high) of ``net.ipv4.ip_local_port_range``."""
        text = _read("/proc/sys/" + SYSCTL_PORT_RANGE)
        try:
            low, high = (int(x) for x in text.split())
            if 1 <= low <= high <= 65535:
                return low, high
        except (AttributeError, ValueError):
            pass
        return DEFAULT_EPHEMERAL_RANGE

    def reserved(self):
        """Ports listed in ``net.ipv4.ip_local_reserved_ports``."""
        return parse_port_list(_read("/proc/sys/" + SYSCTL_RESERVED_PORTS) or "")

    def bound(self, protocol):
        """Every local port of ``protocol`` used by a host socket (any state)."""
        return {port for port, dummy, dummy2 in self._table(protocol)}

    def listening(self, protocol, port):
        """Addresses (str; None = unknown, i.e. all) on which a host socket listens
        on ``port`` (TCP: LISTEN state; UDP and SCTP: any bound socket)."""
        return [ip for p, ip, listening in self._table(protocol) if p == port and listening]


def parse_port_list(text):
    """Ports of a sysctl list like ``8080,9000-9002`` as a set of ints."""
    ports = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            if "-" in part:
                a, b = part.split("-", 1)
                ports.update(range(int(a), int(b) + 1))
            else:
                ports.add(int(part))
        except ValueError:
            continue
    return ports


def _hex_ip(text):
    raw = bytes.fromhex(text)
    # /proc/net/tcp{,6} print each 32-bit word in host (little-endian) order
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
_DIAG_REQ = struct.Struct("=BBBxI48x")   # inet_diag_req_v2 with an empty socket id
_TCP_LISTEN_STATE = 10
_ALL_STATES = 0xFFFFFFFF


def diag_sockets(protocol):
    """(port, address, listening) from NETLINK_SOCK_DIAG (the calling thread's netns).

    TCP asks for listening sockets only: the kernel then walks just its listening hash,
    where /proc/net/tcp walks every socket of the machine (several ms under load).
    A port that only an established connection uses cannot take a new DNAT flow
    anyway (conntrack keeps existing flows), so listeners are what matter.
    """
    proto = socket.IPPROTO_TCP if protocol == "tcp" else socket.IPPROTO_UDP
    states = (1 << _TCP_LISTEN_STATE) if protocol == "tcp" else _ALL_STATES
    out = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                       NETLINK_SOCK_DIAG) as sock:
        for family in (socket.AF_INET, socket.AF_INET6):
            body = _DIAG_REQ.pack(family, proto, 0, states)
            sock.send(struct.pack("=IHHII", 16 + len(body), SOCK_DIAG_BY_FAMILY,
                                  0x301, family, 0) + body)  # REQUEST | DUMP
            done = False
            while not done:
                data = sock.recv(1 << 16)
                offset = 0
                while offset + 16 <= len(data):
                    length, kind = struct.unpack_from("=IH", data, offset)
                    if kind in (2, 3) or length < 16:  # NLMSG_ERROR / NLMSG_DONE
                        done = True
                        break
                    msg = data[offset + 16:offset + length]
                    offset += (length + 3) & ~3
                    port = struct.unpack_from("!H", msg, 4)[0]
                    raw = msg[8:12] if family == socket.AF_INET else msg[8:24]
                    out.append((port, socket.inet_ntop(family, raw),
                                protocol != "tcp" or msg[1] == _TCP_LISTEN_STATE))
    return out


def _sockets(protocol):
    """(port, address or None, listening) of the namespace's sockets of ``protocol``."""
    out = []
    if protocol in ("tcp", "udp"):
        try:
            return diag_sockets(protocol)
        except OSError:
            pass  # no sock_diag: fall back to /proc
        for name in (protocol, protocol + "6"):
            text = _read("/proc/thread-self/net/" + name)
            for line in (text or "").splitlines()[1:]:
                cols = line.split()
                if len(cols) < 4 or ":" not in cols[1]:
                    continue
                addr, port = cols[1].rsplit(":", 1)
                try:
                    ip = _hex_ip(addr)
                    port = int(port, 16)
                except ValueError:
                    continue
                listening = cols[3] == _TCP_LISTEN if protocol == "tcp" else True
                out.append((port, ip, listening))
    else:
        text = _read("/proc/thread-self/net/sctp/eps")
        for line in (text or "").splitlines()[1:]:
            cols = line.split()
            if len(cols) > 5 and cols[5].isdigit():
                out.append((int(cols[5]), None, True))
    return out
