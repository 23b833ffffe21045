"""Address pools: choosing a free subnet for a network, and refusing overlapping ones.

A pool is ``{"base": "172.17.0.0/16", "size": 16}``: ``base`` is split into subnets of
prefix length ``size`` (constants.DEFAULT_ADDRESS_POOLS). Candidates are never listed in
memory: a 10.0.0.0/8 pool of /24s or an IPv6 /48 of /64s holds 65536 of them. Instead the
networks in use are merged into sorted integer intervals and the search jumps over each
one arithmetically, so the cost grows with the number of networks in use, not with the
pool size.
"""
import bisect
import ipaddress
import socket

from ..errors import PoolExhaustedError, ValidationError
from .config import normalise_network

# Largest subnet size a pool may hand out: same limit as an explicit subnet
# (config.MAX_SUBNET_PREFIX): room for the network address, a gateway and endpoints.
MAX_POOL_SIZE = {4: 30, 6: 126}

# Routes shorter than this are not treated as "in use". 0.0.0.0/0 and ::/0 are default
# routes; VPN clients replace the default route by halves (OpenVPN's ``def1``: 0.0.0.0/1
# + 128.0.0.0/1, and ::/3, 2000::/4, 3000::/4, fc00::/7 for IPv6). Counting those would
# leave no pool free at all, which is Docker's long-standing "could not find an available,
# non-overlapping IPv4 address pool" complaint behind a VPN. A /8 (10.0.0.0/8 via a
# corporate VPN) is a real route and is avoided.
MIN_IN_USE_PREFIX = {4: 8, 6: 8}


def parse_pools(raw, field):
    """Validate a user-supplied list of address pools (e.g. a ``default_address_pools`` option).

    Called before any side effect. ``raw`` is a list of dicts ``{"base": CIDR, "size": int}``.

    Returns a new list of ``{"base": <canonical CIDR string>, "size": int}`` in input
    order, usable by ``choose_subnet`` and JSON-serialisable for the store.

    Raises ValidationError naming ``<field>[i].base`` or ``<field>[i].size`` when the base
    is not a network (or has host bits set), the size is not an integer, is shorter than
    the base prefix, or longer than /30 (IPv4) or /126 (IPv6); or when an entry has
    unknown keys.
    """
    if not isinstance(raw, (list, tuple)):
        raise ValidationError("%r is not a list of {base, size} pools" % (raw,), field=field)
    pools = []
    for index, entry in enumerate(raw):
        where = "%s[%d]" % (field, index)
        if not isinstance(entry, dict):
            raise ValidationError("%r is not a dict with keys base, size" % (entry,), field=where)
        unknown = sorted(set(entry) - {"base", "size"})
        if unknown:
            raise ValidationError("unknown key(s) %s (allowed: base, size)"
                                  % ", ".join(map(str, unknown)), field=where)
        if entry.get("base") is None:
            raise ValidationError("base is required", field=where + ".base")
        base = normalise_network(entry["base"], where + ".base")
        size = entry.get("size")
        if isinstance(size, str) and size.strip().isdigit():
            size = int(size.strip())
        if isinstance(size, bool) or not isinstance(size, int):
            raise ValidationError("%r is not a prefix length" % (size,), field=where + ".size")
        if size < base.prefixlen:
            raise ValidationError(
                "/%d is shorter than the prefix of base %s: subnets cannot be larger than "
                "their pool" % (size, base), field=where + ".size")
        limit = MAX_POOL_SIZE[base.version]
        if size > limit:
            raise ValidationError(
                "/%d is too small for a network (IPv%d subnets must be /%d or shorter)"
                % (size, base.version, limit), field=where + ".size")
        pools.append({"base": str(base), "size": size})
    return pools


def _as_network(value):
    """Coerce an in-use entry (network, interface, address or string) to a network."""
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return value
    if isinstance(value, (ipaddress.IPv4Interface, ipaddress.IPv6Interface)):
        return value.network
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return ipaddress.ip_network(value)
    # Host addresses come as "192.168.1.5/24": the network they sit in is what is used.
    return ipaddress.ip_network(str(value).strip(), strict=False)


def cidr_interval(text):
    """``(version, prefix length, first, last)`` integers of the CIDR (or address) text
    ``text``, host bits cleared, or None when it is not one. Read without ``ipaddress``
    (a tenth of its cost): network create compares its subnet with every network's, and
    the store indexes every network's subnets by these integers."""
    if not isinstance(text, str):
        return None
    address, slash, prefix = text.strip().partition("/")
    try:
        raw = socket.inet_pton(socket.AF_INET6 if ":" in address else socket.AF_INET,
                               address)
    except (OSError, ValueError):
        return None
    bits = len(raw) * 8
    if slash and not (prefix.isdigit() and int(prefix) <= bits):
        return None
    length = int(prefix) if slash else bits
    host = (1 << (bits - length)) - 1
    first = int.from_bytes(raw, "big") & ~host
    return (4 if bits == 32 else 6), length, first, first | host


def _interval(value):
    """``(version, prefix length, first, last)`` integers of an in-use entry, as
    ``_as_network`` reads it (a CIDR text through ``cidr_interval``)."""
    found = cidr_interval(value)
    if found is not None:
        return found
    net = _as_network(value)
    return net.version, net.prefixlen, int(net.network_address), int(net.broadcast_address)


def _merged_intervals(in_use, family):
    """Return sorted, merged ``(starts, ends)`` integer intervals of networks in use."""
    min_prefix = MIN_IN_USE_PREFIX[family]
    spans = []
    for value in in_use:
        version, length, first, last = _interval(value)
        if version != family or length < min_prefix:
            continue
        spans.append((first, last))
    spans.sort()
    starts, ends = [], []
    for lo, hi in spans:
        if ends and lo <= ends[-1] + 1:
            if hi > ends[-1]:
                ends[-1] = hi
        else:
            starts.append(lo)
            ends.append(hi)
    return starts, ends


def choose_subnet(pools, in_use, family=4):
    """Pick the first free subnet of ``family`` from ``pools`` for a network without one.

    Called by the controller when a network (or its IPv6 side) has no explicit subnet.
    ``pools`` is a list like constants.DEFAULT_ADDRESS_POOLS (``base`` as a string or a
    network; entries of the other family are skipped). ``in_use`` is every network that
    must not be overlapped: subnets of existing networks and the routes and addresses of
    the host namespace (networks, interfaces, addresses or strings are accepted). Default
    routes and routes shorter than /8 (VPN default-route halves, see
    MIN_IN_USE_PREFIX) are ignored; every other entry counts.

    Guarantees: the result is the first candidate in pool order, then address order, that
    overlaps nothing in ``in_use``; the work done grows with ``len(in_use)``, never with
    the number of candidates in a pool.

    Raises PoolExhaustedError when every candidate overlaps something, and ValueError if
    ``family`` is not 4 or 6.
    """
    if family not in (4, 6):
        raise ValueError("family must be 4 or 6, not %r" % (family,))
    starts, ends = _merged_intervals(in_use, family)
    tried = []
    for pool in pools:
        base = normalise_network(pool["base"], "pool base")
        if base.version != family:
            continue
        size = int(pool["size"])
        tried.append("%s in /%ds" % (base, size))
        block = 1 << (base.max_prefixlen - size)
        candidate = int(base.network_address)
        last = int(base.broadcast_address)
        while candidate + block - 1 <= last:
            # The first in-use interval that ends at or after the candidate's start.
            i = bisect.bisect_left(ends, candidate)
            if i == len(ends) or starts[i] > candidate + block - 1:
                return ipaddress.ip_network((candidate, size))
            # Overlap: jump to the first block boundary past that interval.
            past = ends[i] + 1
            candidate = ((past + block - 1) // block) * block
    if not tried:
        raise PoolExhaustedError(
            "no IPv%d address pool is configured: give a subnet explicitly" % family)
    shown = ", ".join(tried[:4])
    if len(tried) > 4:
        shown += " and %d more" % (len(tried) - 4)
    raise PoolExhaustedError(
        "no free IPv%d subnet left in the address pools (%s): every candidate overlaps an "
        "existing network or a host route/address; give a subnet explicitly or free one"
        % (family, shown))


def find_overlap(subnet, existing):
    """Return the first existing network that ``subnet`` overlaps, or None.

    Called by the controller before creating a network with an explicit subnet, to refuse
    it (Docker refuses overlapping subnets too). ``existing`` is an iterable of
    ``(network_name, network)`` pairs (networks or CIDR strings); entries of the other
    address family never overlap.

    Returns ``(network_name, network)`` with ``network`` an ``ipaddress`` network. Raises
    nothing for well-formed input.
    """
    version, dummy, first, last = _interval(subnet)
    for name, other in existing:
        other_version, dummy, other_first, other_last = _interval(other)
        if other_version == version and other_first <= last and first <= other_last:
            return name, _as_network(other)
    return None
