"""A network's IPAM configuration: parsing, validation and normalisation.

``parse_ipam_config`` turns the user's ``ipam.config`` list into ``PoolConfig`` objects
whose addresses are ``ipaddress`` objects, so two spellings of one subnet compare equal
(``2001:DB8:0::/64`` == ``2001:db8::/64``) and a difference is never reported for
formatting alone. Everything is checked before anything is created; each error names the
option path (``ipam.config[0].gateway``), the bad value and the reason.
"""
import ipaddress
from dataclasses import dataclass

from ..errors import ValidationError

# The longest prefix a network may have: room for a network address, a gateway, at least
# one endpoint and (IPv4) a broadcast address.
MAX_SUBNET_PREFIX = {4: 30, 6: 126}

CONFIG_KEYS = ("subnet", "ip_range", "gateway", "aux_addresses")

# Ranges a container network must not overlap: the kernel treats their addresses
# specially (loopback, "this network", multicast, link-local, reserved), so a bridge
# gateway or a sandbox route there breaks the host (127.0.0.0/8 on a bridge makes the
# sandbox route to its own loopback).
FORBIDDEN_SUBNETS = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
    "::/127", "::ffff:0:0/96", "fe80::/10", "ff00::/8"))


def _text(value, field, what):
    """Return ``value`` as a stripped string, or raise ValidationError for a non-string."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        raise ValidationError("%r is not %s" % (value, what), field=field)
    return value.strip()


def normalise_address(value, field):
    """Parse one IP address given by a user (or read back from the store).

    Called for gateways, aux addresses, static endpoint addresses (``ipv4_address``,
    ``ipv6_address``) and port ``host_ip``. Accepts a string (surrounding spaces are
    ignored) or an ``ipaddress`` address object.

    Returns an ``IPv4Address``/``IPv6Address``; ``str()`` of it is the canonical form
    (IPv6 compressed, lower case), so equal addresses always print the same.

    Raises ValidationError naming ``field`` when the value is not an address, carries a
    prefix length (``10.1.0.5/24``) or an IPv6 zone (``fe80::1%eth0``).
    """
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        address = value
    else:
        text = _text(value, field, "an IP address")
        if "/" in text:
            raise ValidationError(
                "%s is not an IP address (no prefix length allowed here)" % text, field=field)
        if "%" in text:
            raise ValidationError(
                "%s is not allowed: an IPv6 zone index has no meaning here" % text, field=field)
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            raise ValidationError("%r is not a valid IP address" % text, field=field) from None
    if getattr(address, "scope_id", None):
        raise ValidationError(
            "%s is not allowed: an IPv6 zone index has no meaning here" % address, field=field)
    return address


def normalise_network(value, field):
    """Parse one network in CIDR notation given by a user (or read back from the store).

    Called for ``subnet``, ``ip_range`` and address pool bases. Accepts a string
    (surrounding spaces are ignored) or an ``ipaddress`` network object.

    Returns an ``IPv4Network``/``IPv6Network`` in canonical form.

    Raises ValidationError naming ``field`` when the value is not a network, has no
    prefix length (``10.1.0.0``: Docker calls that an invalid CIDR address too) or has
    host bits set (``10.1.0.5/24``: which network was meant is a guess we do not make).
    """
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return value
    text = _text(value, field, "a network in CIDR notation")
    if "/" not in text:
        raise ValidationError(
            "%r is not a network in CIDR notation (prefix length missing, e.g. %s/24)"
            % (text, text), field=field)
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            loose = ipaddress.ip_network(text, strict=False)
            raise ValidationError(
                "%s has host bits set (did you mean %s?)" % (text, loose), field=field) from None
        raise ValidationError(
            "%r is not a valid network in CIDR notation" % text, field=field) from None


def check_usable_subnet(subnet, field):
    """Refuse a subnet that overlaps loopback, unspecified, multicast, link-local or
    reserved addresses (``FORBIDDEN_SUBNETS``). Called for every explicit subnet before
    anything is created; raises ValidationError naming ``field``."""
    for bad in FORBIDDEN_SUBNETS:
        if bad.version == subnet.version and subnet.overlaps(bad):
            raise ValidationError("%s overlaps %s (%s addresses cannot be a container "
                                  "network)" % (subnet, bad, _kind(bad)), field=field)


def _kind(network):
    address = network.network_address
    for kind in ("loopback", "multicast", "link_local", "unspecified", "reserved"):
        last = network.broadcast_address
        if getattr(address, "is_" + kind) or getattr(last, "is_" + kind):
            return kind.replace("_", "-")
    return "special"


def default_gateway(subnet):
    """Return the gateway Docker picks when none is given: the subnet's first host address.

    Called while parsing a config without ``gateway`` and when the controller builds a
    pool for a subnet it chose itself. Guarantees an address inside ``subnet`` that is
    not the network address. Raises nothing for subnets accepted by ``parse_ipam_config``.
    """
    return subnet.network_address + 1


def _is_ipv4_broadcast(subnet, address):
    return subnet.version == 4 and subnet.prefixlen < 31 and address == subnet.broadcast_address


@dataclass(frozen=True)
class PoolConfig:
    """One validated entry of a network's ``ipam.config`` (immutable, hashable).

    ``gateway`` is always set: the user's, or the subnet's first host address
    (``gateway_given`` tells which). ``aux_addresses`` is a tuple of ``(name, address)``
    pairs sorted by name, so equal configs compare equal whatever the input order.
    """

    subnet: object
    ip_range: object = None
    gateway: object = None
    aux_addresses: tuple = ()
    gateway_given: bool = False

    @property
    def version(self):
        """4 or 6: the address family of this pool."""
        return self.subnet.version

    @classmethod
    def for_subnet(cls, subnet):
        """Build the pool of a subnet chosen automatically (``pools.choose_subnet``).

        Called by the controller when the user gave no subnet. Guarantees Docker's
        default gateway and no ip_range or aux addresses. Raises nothing.
        """
        subnet = normalise_network(subnet, "subnet")
        return cls(subnet=subnet, gateway=default_gateway(subnet))

    def to_docker(self):
        """Return this pool as ``docker network inspect`` prints an IPAM.Config entry.

        Called when building the ``network`` return value. Keys Docker omits when empty
        (``IPRange``, ``AuxiliaryAddresses``) are omitted here too. Raises nothing.
        """
        out = {"Subnet": str(self.subnet)}
        if self.ip_range is not None:
            out["IPRange"] = str(self.ip_range)
        out["Gateway"] = str(self.gateway)
        if self.aux_addresses:
            out["AuxiliaryAddresses"] = {name: str(ip) for name, ip in self.aux_addresses}
        return out

    def to_dict(self):
        """Return a JSON-serialisable dict (strings only) for the store.

        ``PoolConfig.from_dict(p.to_dict()) == p`` always holds. Raises nothing.
        """
        return {
            "subnet": str(self.subnet),
            "ip_range": None if self.ip_range is None else str(self.ip_range),
            "gateway": str(self.gateway),
            "aux_addresses": {name: str(ip) for name, ip in self.aux_addresses},
            "gateway_given": bool(self.gateway_given),
        }

    @classmethod
    def from_dict(cls, data):
        """Rebuild a pool from ``to_dict()`` output read back from the store.

        A missing gateway gets Docker's default. Raises ValidationError if the stored
        text no longer parses (a corrupt store, reported rather than guessed around).
        """
        subnet = normalise_network(data["subnet"], "subnet")
        ip_range = data.get("ip_range")
        gateway = data.get("gateway")
        aux = data.get("aux_addresses") or {}
        return cls(
            subnet=subnet,
            ip_range=None if ip_range is None else normalise_network(ip_range, "ip_range"),
            gateway=(default_gateway(subnet) if gateway is None
                     else normalise_address(gateway, "gateway")),
            aux_addresses=tuple(sorted(
                (name, normalise_address(ip, "aux_addresses." + name))
                for name, ip in aux.items())),
            gateway_given=bool(data.get("gateway_given", False)),
        )


def _parse_entry(index, entry, enable_ipv6, field):
    """Validate one ``ipam.config`` entry; return a PoolConfig, or None for an empty one."""
    where = "%s[%d]" % (field, index)
    if entry is None:
        return None
    if not isinstance(entry, dict):
        raise ValidationError("%r is not a dict with keys %s" % (entry, ", ".join(CONFIG_KEYS)),
                              field=where)
    unknown = sorted(set(entry) - set(CONFIG_KEYS))
    if unknown:
        raise ValidationError("unknown key(s) %s (allowed: %s)"
                              % (", ".join(map(str, unknown)), ", ".join(CONFIG_KEYS)),
                              field=where)

    raw_subnet = entry.get("subnet")
    raw_range = entry.get("ip_range")
    raw_gateway = entry.get("gateway")
    raw_aux = entry.get("aux_addresses")
    if isinstance(raw_subnet, str) and not raw_subnet.strip():
        raw_subnet = None

    if raw_subnet is None:
        # Like Docker: ip_range, gateway and aux addresses only make sense inside a subnet.
        for key, value in (("ip_range", raw_range), ("gateway", raw_gateway),
                           ("aux_addresses", raw_aux)):
            if value not in (None, "", {}):
                raise ValidationError("%s needs a subnet in the same entry" % key,
                                      field="%s.%s" % (where, key))
        return None

    subnet = normalise_network(raw_subnet, where + ".subnet")
    check_usable_subnet(subnet, where + ".subnet")
    if subnet.version == 6 and not enable_ipv6:
        raise ValidationError(
            "%s is an IPv6 subnet but enable_ipv6 is false (set enable_ipv6: true)" % subnet,
            field=where + ".subnet")
    max_prefix = MAX_SUBNET_PREFIX[subnet.version]
    if subnet.prefixlen > max_prefix:
        raise ValidationError(
            "%s is too small: a network needs room for a gateway and endpoints "
            "(prefix /%d or shorter)" % (subnet, max_prefix), field=where + ".subnet")

    ip_range = None
    if raw_range is not None and raw_range != "":
        ip_range = normalise_network(raw_range, where + ".ip_range")
        if ip_range.version != subnet.version or not ip_range.subnet_of(subnet):
            raise ValidationError("%s is outside subnet %s" % (ip_range, subnet),
                                  field=where + ".ip_range")

    gateway_given = raw_gateway is not None and raw_gateway != ""
    if gateway_given:
        gateway = normalise_address(raw_gateway, where + ".gateway")
        _check_host_address(gateway, subnet, where + ".gateway")
    else:
        gateway = default_gateway(subnet)

    aux = []
    if raw_aux is not None:
        if not isinstance(raw_aux, dict):
            raise ValidationError("%r is not a dict of name: address" % (raw_aux,),
                                  field=where + ".aux_addresses")
        for name in sorted(raw_aux, key=str):
            key = "%s.aux_addresses.%s" % (where, name)
            if not isinstance(name, str) or not name.strip():
                raise ValidationError("%r is not a valid name for an auxiliary address"
                                      % (name,), field=where + ".aux_addresses")
            address = normalise_address(raw_aux[name], key)
            if address not in subnet:
                raise ValidationError("%s is outside subnet %s" % (address, subnet), field=key)
            if address == gateway:
                raise ValidationError("%s is the gateway of %s" % (address, subnet), field=key)
            aux.append((name, address))
    return PoolConfig(subnet=subnet, ip_range=ip_range, gateway=gateway,
                      aux_addresses=tuple(sorted(aux)), gateway_given=gateway_given)


def _check_host_address(address, subnet, field):
    """Raise ValidationError unless ``address`` may be used by a host inside ``subnet``."""
    if address not in subnet:
        raise ValidationError("%s is outside subnet %s" % (address, subnet), field=field)
    if address == subnet.network_address:
        raise ValidationError("%s is the network address of %s" % (address, subnet),
                              field=field)
    if _is_ipv4_broadcast(subnet, address):
        raise ValidationError("%s is the broadcast address of %s" % (address, subnet),
                              field=field)


def parse_ipam_config(raw, enable_ipv6, field="ipam.config"):
    """Validate and normalise a network's ``ipam.config`` list.

    Called by the controller before any side effect, for every ``cnm_network`` run that
    gives ``ipam.config`` (and by ``PoolConfig`` users that need Docker's defaults).
    ``raw`` is a list of dicts with optional keys ``subnet``, ``ip_range``, ``gateway``,
    ``aux_addresses`` (dict name -> address); ``None`` means an empty list.

    Guarantees: the result holds one PoolConfig per entry that has a subnet, in input
    order; an entry with nothing in it is dropped (the controller then chooses a subnet
    from the default pools); every address is inside its subnet; the gateway is set and
    is neither the network nor the IPv4 broadcast address; no two subnets overlap.
    Several IPv4 and several IPv6 subnets are allowed, as in Docker.

    Raises ValidationError with ``field`` set to the option path
    (``ipam.config[1].gateway``) for: unparsable values, host bits in a subnet, an
    ip_range/gateway/aux address outside its subnet or without a subnet, a gateway on
    the network or broadcast address, an aux address equal to the gateway, overlapping
    subnets, an IPv6 subnet while ``enable_ipv6`` is false, unknown keys.
    """
    if raw is None:
        return []
    if not isinstance(raw, (list, tuple)):
        raise ValidationError("%r is not a list of pool configurations" % (raw,), field=field)
    pools = []
    seen = []  # (index, subnet) of accepted entries
    for index, entry in enumerate(raw):
        pool = _parse_entry(index, entry, enable_ipv6, field)
        if pool is None:
            continue
        for other_index, other in seen:
            if other.version == pool.subnet.version and other.overlaps(pool.subnet):
                raise ValidationError(
                    "%s overlaps %s of %s[%d]" % (pool.subnet, other, field, other_index),
                    field="%s[%d].subnet" % (field, index))
        seen.append((index, pool.subnet))
        pools.append(pool)
    return pools
