"""The firewall's input: one network's whole desired rule set as plain, frozen data.

The controller builds a ``NetworkRules`` per bridge network (its bridge, subnets, the
ICC/masquerade/internal options and every published port of its endpoints), stores the
last applied one (``to_dict``) and hands old and new to ``FirewallBackend.apply``.
Nothing here touches the kernel; ``validate_rules`` is the single gate that makes the
values safe to paste into nft and iptables-restore scripts.
"""
import ipaddress
import re
from dataclasses import dataclass

from ..constants import PORT_PROTOCOLS
from ..errors import ValidationError
# one published port as data lives with the ports (the info path reads it without the
# firewall); it stays importable from here
from ..ports.mapping import PortMapping  # noqa: F401  (re-exported)

# Interface names end up quoted in nft scripts and unquoted in iptables-restore lines:
# no quotes, spaces or shell/glob characters ('+' is iptables' wildcard).
_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
_NETWORK_ID = re.compile(r"^[0-9a-f]{12,64}$")


@dataclass(frozen=True)
class NetworkRules:
    """Everything the firewall needs to know about one bridge network."""
    network_id: str
    bridge: str
    subnets: tuple
    icc: bool = True
    masquerade: bool = True
    internal: bool = False
    ports: tuple = ()

    @property
    def short_id(self):
        """The 12-character id used in chain names."""
        return self.network_id[:12]

    def subnets_of(self, family):
        """Normalised subnets (``ipaddress`` networks) of ``family`` (4 or 6), in order."""
        return [n for n in (ipaddress.ip_network(s, strict=False) for s in self.subnets)
                if n.version == family]

    def ports_of(self, family):
        """Published mappings of ``family``; none on an internal network."""
        if self.internal:
            return []
        return [p for p in self.ports if p.family == family]

    def without_ports(self):
        """The same network with no published ports (compares structure only)."""
        return NetworkRules(self.network_id, self.bridge, tuple(self.subnets), self.icc,
                            self.masquerade, self.internal, ())

    def to_dict(self):
        """JSON-ready dict; ``from_dict(to_dict(r)) == r``."""
        return {"network_id": self.network_id, "bridge": self.bridge,
                "subnets": list(self.subnets), "icc": self.icc,
                "masquerade": self.masquerade, "internal": self.internal,
                "ports": [p.to_dict() for p in self.ports]}

    @classmethod
    def from_dict(cls, doc):
        """Rebuild from ``to_dict`` output (ports sorted). Raises ValidationError."""
        try:
            return cls(network_id=str(doc["network_id"]), bridge=str(doc["bridge"]),
                       subnets=tuple(doc.get("subnets") or ()),
                       icc=bool(doc.get("icc", True)),
                       masquerade=bool(doc.get("masquerade", True)),
                       internal=bool(doc.get("internal", False)),
                       ports=tuple(sorted(PortMapping.from_dict(p)
                                          for p in doc.get("ports") or ())))
        except (KeyError, TypeError) as exc:
            raise ValidationError("malformed firewall rules %r: %s" % (doc, exc),
                                  field="firewall") from None


def validate_rules(rules):
    """Check that ``rules`` is safe and coherent before anything is rendered.

    Called by every renderer (and so by every backend) on each ``NetworkRules`` it gets.
    Guarantees on return: the id is hex, the bridge name is a plain interface name,
    subnets parse, every port has a known protocol, valid ports, addresses of its family
    and a container address inside one of the network's subnets of that family; an
    internal network publishes nothing. Raises ValidationError naming the bad value.
    """
    validate_structure(rules)
    validate_ports(rules, rules.ports)


def validate_structure(rules):
    """``validate_rules`` without the per-port checks (id, bridge, subnets, internal)."""
    if not isinstance(rules, NetworkRules):
        raise ValidationError("expected NetworkRules, got %r" % (rules,), field="firewall")
    if not _NETWORK_ID.match(rules.network_id or ""):
        raise ValidationError("network id %r is not 12-64 lower-case hex characters"
                              % rules.network_id, field="network_id")
    if not _IFNAME.match(rules.bridge or ""):
        raise ValidationError("bridge name %r is not a plain interface name (1-15 of "
                              "A-Z a-z 0-9 _ . -)" % rules.bridge, field="bridge")
    for subnet in rules.subnets:
        try:
            ipaddress.ip_network(subnet, strict=False)
        except (TypeError, ValueError):
            raise ValidationError("%r is not a subnet" % (subnet,), field="subnets") from None
    if rules.internal and rules.ports:
        raise ValidationError("an internal network cannot publish ports", field="ports")


def validate_ports(rules, ports):
    """The per-port checks of ``validate_rules`` for ``ports`` (mappings of ``rules``):
    a ports-only change validates only the mappings it adds."""
    nets = [ipaddress.ip_network(s, strict=False) for s in rules.subnets]
    for i, port in enumerate(ports):
        field = "ports[%d]" % i
        if not isinstance(port, PortMapping):
            raise ValidationError("expected PortMapping, got %r" % (port,), field=field)
        if port.protocol not in PORT_PROTOCOLS:
            raise ValidationError("protocol %r is not one of %s"
                                  % (port.protocol, ", ".join(PORT_PROTOCOLS)), field=field)
        if port.family not in (4, 6):
            raise ValidationError("family %r is not 4 or 6" % (port.family,), field=field)
        for name in ("host_port", "container_port"):
            value = getattr(port, name)
            if isinstance(value, bool) or not isinstance(value, int) \
                    or not 1 <= value <= 65535:
                raise ValidationError("%s %r is not a port (1-65535)" % (name, value),
                                      field=field)
        try:
            cip = ipaddress.ip_address(port.container_ip)
            hip = ipaddress.ip_address(port.host_ip) if port.host_ip else None
        except ValueError as exc:
            raise ValidationError(str(exc), field=field) from None
        if cip.version != port.family or (hip is not None and hip.version != port.family):
            raise ValidationError("%s mixes address families" % port.describe(), field=field)
        if str(cip) != port.container_ip or (hip is not None and str(hip) != port.host_ip):
            raise ValidationError("addresses of %s are not normalised" % port.describe(),
                                  field=field)
        if hip is not None and hip.is_unspecified:
            raise ValidationError("host_ip %s must be given as \"\" (all addresses)" % hip,
                                  field=field)
        if hip is not None and hip.version == 6 and hip.is_loopback:
            raise ValidationError("host_ip ::1 cannot be forwarded by the kernel (IPv6 has "
                                  "no route_localnet); use 127.0.0.1", field=field)
        if not any(cip in n for n in nets if n.version == port.family):
            raise ValidationError("container address %s of %s is in no subnet of network "
                                  "%s" % (cip, port.describe(), rules.short_id), field=field)


def port_delta(old, new):
    """What a ports-only change does: (removed mappings, added mappings, removed
    targets, added targets), each sorted. A target is (family, container address,
    protocol, container port): several host ports may forward to one target, which
    stays published until the last of them goes. Set arithmetic only, no parsing."""
    old_set, new_set = set(old.ports), set(new.ports)
    added = sorted(new_set - old_set)
    removed = sorted(old_set - new_set)
    if not added and not removed:
        return [], [], [], []
    old_t = {_target(p) for p in old.ports}
    new_t = {_target(p) for p in new.ports}
    return removed, added, sorted(old_t - new_t), sorted(new_t - old_t)


def _target(p):
    return (p.family, p.container_ip, p.protocol, p.container_port)
