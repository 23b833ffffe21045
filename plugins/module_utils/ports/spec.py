"""Port mapping requests: parsing the user's ``ports`` list, and Docker's output shape.

``parse_ports`` validates every entry before anything is allocated; each error names
its option path (``ports[1].host_port``), the bad value and the reason.
``to_docker_ports`` renders applied mappings as ``NetworkSettings.Ports`` does:
``{"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}``.
"""
import ipaddress
import re
from dataclasses import dataclass

from ..constants import PORT_PROTOCOLS
from ..errors import ValidationError

ENTRY_KEYS = ("container_port", "host_port", "host_ip", "protocol")
# The most container ports one task may publish (ranges count every port): each is one
# rule or set element and one conntrack filter, and a 30,000-port range took 50 s.
MAX_PORTS_PER_TASK = 1024
_ASCII_PORT = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class RequestedPort:
    """One validated entry of the user's ``ports`` list.

    ``host_start``/``host_end`` are 0 for ephemeral ports (chosen by the allocator).
    ``host_ip`` is None when not given (the network's default binding applies), else
    the normalised address; ``0.0.0.0``/``::`` mean every address of that family only.
    ``index`` is the entry's position, for error messages.
    """
    index: int
    protocol: str
    container_start: int
    container_end: int
    host_start: int = 0
    host_end: int = 0
    host_ip: object = None

    @property
    def count(self):
        """How many container ports the entry covers."""
        return self.container_end - self.container_start + 1

    @property
    def ephemeral(self):
        """True when the host ports are to be chosen by the allocator."""
        return self.host_start == 0


def _port_range(value, field, allow_zero):
    """(start, end) of an int, a numeric string or an ``a-b`` string."""
    if isinstance(value, bool):
        raise ValidationError("%r is not a port or a port range" % (value,), field=field)
    if isinstance(value, int):
        start = end = value
    elif isinstance(value, str):
        text = value.strip()
        parts = text.split("-")
        if len(parts) > 2 or not all(_ASCII_PORT.fullmatch(p.strip()) for p in parts):
            raise ValidationError("%r is not a port or a range like 8080-8081" % value,
                                  field=field)
        start, end = int(parts[0]), int(parts[-1])
    else:
        raise ValidationError("%r is not a port or a port range" % (value,), field=field)
    if allow_zero and start == 0 and end == 0:
        return 0, 0
    for port in (start, end):
        if not 1 <= port <= 65535:
            where = "" if start == end else "%s: " % value
            raise ValidationError("%sport %d is out of range 1-65535" % (where, port),
                                  field=field)
    if end < start:
        raise ValidationError("range %s ends before it starts" % value, field=field)
    return start, end


def _host_ip(value, field):
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise ValidationError("%r is not an IP address" % (value,), field=field)
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if "/" in text or "%" in text:
        raise ValidationError("%r is not a plain IP address" % value, field=field)
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ValidationError("%r is not a valid IP address" % value, field=field) from None
    if address.version == 6 and address.ipv4_mapped:
        raise ValidationError("%s: give the IPv4 address %s instead"
                              % (address, address.ipv4_mapped), field=field)
    if address.version == 6 and address.is_loopback:
        raise ValidationError("::1 cannot be forwarded by the kernel (IPv6 has no "
                              "route_localnet); use 127.0.0.1", field=field)
    if address.is_multicast:
        raise ValidationError("%s is a multicast address" % address, field=field)
    return str(address)


def parse_ports(raw_list, field="ports"):
    """Validate the user's ``ports`` list; return a list of RequestedPort, in order.

    Called before any allocation or kernel change. Each entry is a dict with
    ``container_port`` (int or "a-b"), ``host_port`` (int, "a-b", or 0/None/omitted =
    ephemeral), ``host_ip`` (optional) and ``protocol`` (tcp|udp|sctp, default tcp).
    Raises ValidationError naming e.g. ``ports[1].host_port`` for a bad value, an
    unknown key, or a host range whose length differs from the container range's.
    """
    if raw_list is None:
        return []
    if not isinstance(raw_list, (list, tuple)):
        raise ValidationError("must be a list of port mappings", field=field)
    out = []
    total = 0
    for i, entry in enumerate(raw_list):
        where = "%s[%d]" % (field, i)
        if not isinstance(entry, dict):
            raise ValidationError("must be a dict with container_port, host_port, "
                                  "host_ip, protocol", field=where)
        unknown = sorted(set(entry) - set(ENTRY_KEYS))
        if unknown:
            raise ValidationError("unknown key(s) %s (allowed: %s)"
                                  % (", ".join(unknown), ", ".join(ENTRY_KEYS)), field=where)
        if entry.get("container_port") in (None, ""):
            raise ValidationError("is required", field=where + ".container_port")
        c0, c1 = _port_range(entry["container_port"], where + ".container_port", False)
        host = entry.get("host_port")
        if host is None or (isinstance(host, str) and not host.strip()):
            h0 = h1 = 0
        else:
            h0, h1 = _port_range(host, where + ".host_port", True)
        if h0 and h1 - h0 != c1 - c0:
            raise ValidationError(
                "host range %s has %d port(s) but container range %s has %d"
                % (host, h1 - h0 + 1, entry["container_port"], c1 - c0 + 1),
                field=where + ".host_port")
        protocol = entry.get("protocol")
        protocol = "tcp" if protocol in (None, "") else protocol
        if not isinstance(protocol, str) or protocol.strip().lower() not in PORT_PROTOCOLS:
            raise ValidationError("%r is not one of %s" % (protocol, ", ".join(PORT_PROTOCOLS)),
                                  field=where + ".protocol")
        total += c1 - c0 + 1
        if total > MAX_PORTS_PER_TASK:
            raise ValidationError(
                "%d ports in one task; at most %d (publish larger ranges in several "
                "tasks)" % (total, MAX_PORTS_PER_TASK), field=where + ".container_port")
        out.append(RequestedPort(index=i, protocol=protocol.strip().lower(),
                                 container_start=c0, container_end=c1, host_start=h0,
                                 host_end=h1,
                                 host_ip=_host_ip(entry.get("host_ip"), where + ".host_ip")))
    return out


def to_docker_ports(mappings):
    """``NetworkSettings.Ports`` of ``mappings`` (PortMapping list).

    Keys ``"<container port>/<protocol>"`` sorted as Go sorts map keys (as strings);
    each value lists ``{"HostIp", "HostPort"}`` with IPv4 before IPv6, HostIp
    ``0.0.0.0``/``::`` for every address of the family, HostPort a string.
    """
    ports = {}
    for m in sorted(mappings, key=lambda m: (m.family, m.host_ip, m.host_port)):
        host_ip = m.host_ip or ("0.0.0.0" if m.family == 4 else "::")
        entry = {"HostIp": host_ip, "HostPort": str(m.host_port)}
        bucket = ports.setdefault("%d/%s" % (m.container_port, m.protocol), [])
        if entry not in bucket:
            bucket.append(entry)
    return {key: ports[key] for key in sorted(ports)}
