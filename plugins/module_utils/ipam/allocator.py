"""Address allocation inside one pool (one subnet of a network).

Docker semantics: a new address is searched walking forward from the last one handed out,
wrapping around once, so an address just released is not reused at once (a stale ARP or
DNS entry would otherwise point at the wrong workload). Allocations are a set of
integers: memory grows with the number of endpoints, never with the subnet, so a /8 or an
IPv6 /64 costs the same as a /24. A free-address counter makes a full pool fail at once
instead of after walking every address.
"""
import socket

from ..errors import ConflictError, PoolExhaustedError, ValidationError
from .config import normalise_address

PROBE_LIMIT = 64  # addresses asked one by one before reading every allocation


class AllocationLookup:
    """Allocations kept elsewhere (the store), asked for one address at a time.

    ``contains(text)`` tells whether one address (its normal string form) is allocated;
    ``load()`` returns every allocated address. Passed as ``allocated`` to
    AddressAllocator, it lets an attach look at a few addresses ahead of the last one
    instead of reading every allocation of the network, so its cost does not grow
    with the number of endpoints; everything is read only when those few are taken.
    """

    def __init__(self, contains, load):
        self.contains = contains
        self.load = load


class AddressAllocator:
    """Hands out and reserves endpoint addresses of one PoolConfig.

    The caller (the controller) builds one from the store (``allocated`` = addresses of
    the network's endpoints, ``last`` = the last address handed out), asks for addresses,
    and writes ``allocated_addresses()`` and ``last`` back. Not thread-safe: the store's
    lock serialises runs.
    """

    def __init__(self, pool, allocated=(), last=None):
        """Build the allocator of ``pool`` with the given allocations.

        ``allocated`` holds addresses (objects or strings); ones outside the subnet or of
        the other family are ignored, as they cannot collide. ``last`` (address, string
        or None) is where the next forward walk starts. Raises ValidationError if an
        address string does not parse (a corrupt store).
        """
        self._pool = pool
        self._subnet = pool.subnet
        self._version = pool.subnet.version
        walk = pool.ip_range if pool.ip_range is not None else pool.subnet
        self._lo = int(walk.network_address)
        self._hi = int(walk.broadcast_address)

        reserved = {int(pool.gateway)}
        reserved.update(int(ip) for dummy, ip in pool.aux_addresses)
        # The network address is the IPv4 network / IPv6 subnet-router anycast address.
        reserved.add(int(self._subnet.network_address))
        if self._has_broadcast():
            reserved.add(int(self._subnet.broadcast_address))
        self._reserved = reserved

        self._allocated = set()
        self._used_in_range = 0  # allocated addresses in [lo, hi] that are not reserved
        self._lookup = None      # AllocationLookup not read whole yet
        if isinstance(allocated, AllocationLookup):
            self._lookup = allocated
        else:
            for address in allocated:
                self._add(self._to_int(address, "allocated"))
        self._capacity = (self._hi - self._lo + 1) - sum(
            1 for r in reserved if self._lo <= r <= self._hi)

        self._last = None
        if last is not None:
            value = normalise_address(last, "last")
            if value.version == self._version:
                self._last = int(value)

    # --- helpers --------------------------------------------------------------------------
    def _has_broadcast(self):
        return self._version == 4 and self._subnet.prefixlen < 31

    def _to_int(self, address, field):
        """Return the integer of ``address``, or None if it cannot be in this subnet."""
        if isinstance(address, str):
            # fast path for the store's plain strings (every allocation of a network is
            # read on each attach): inet_pton instead of ipaddress's parser
            try:
                raw = socket.inet_pton(socket.AF_INET if self._version == 4
                                       else socket.AF_INET6, address)
            except OSError:
                raw = None
            if raw is not None:
                n = int.from_bytes(raw, "big")
                net = self._subnet
                first = int(net.network_address)
                return n if first <= n < first + net.num_addresses else None
        value = normalise_address(address, field)
        if value.version != self._version or value not in self._subnet:
            return None
        return int(value)

    def _add(self, n):
        if n is None or n in self._allocated:
            return
        self._allocated.add(n)
        if self._lo <= n <= self._hi and n not in self._reserved:
            self._used_in_range += 1

    def _make(self, n):
        return self._subnet.network_address.__class__(n)

    def _text(self, n):
        return str(self._make(n))  # the form the store keeps (ipaddress's str)

    def _taken(self, n):
        if n in self._allocated:
            return True
        return self._lookup is not None and self._lookup.contains(self._text(n))

    def _read_all(self):
        """Turn a lazy allocator into a complete one (every allocation read)."""
        lookup, self._lookup = self._lookup, None
        if lookup is not None:
            for address in lookup.load():
                self._add(self._to_int(address, "allocated"))

    def _probe(self, start):
        """The first free address among PROBE_LIMIT from ``start`` (lazy mode), or None."""
        lo, hi = self._lo, self._hi
        n = start
        for dummy in range(min(PROBE_LIMIT, hi - lo + 1)):
            if n not in self._reserved and not self._taken(n):
                return n
            n = n + 1 if n < hi else lo
        return None

    def _where(self):
        if self._pool.ip_range is not None:
            return "ip_range %s of %s" % (self._pool.ip_range, self._subnet)
        return str(self._subnet)

    # --- public API ---------------------------------------------------------------------------
    @property
    def pool(self):
        """The PoolConfig this allocator serves."""
        return self._pool

    @property
    def last(self):
        """The last address handed out by ``allocate()`` (an ipaddress object) or None."""
        return None if self._last is None else self._make(self._last)

    def free_count(self):
        """Number of addresses ``allocate()`` could still hand out. Raises nothing
        (reads every allocation of a lazy allocator first)."""
        self._read_all()
        return self._capacity - self._used_in_range

    def allocate(self):
        """Hand out the next free address for an endpoint without a static address.

        Called by the controller when an endpoint joins a network without
        ``ipv4_address``/``ipv6_address``. Walks forward from ``last`` (wrapping around
        once) through ``ip_range`` if set, else the subnet, skipping the network address
        (IPv6: subnet-router anycast), the IPv4 broadcast, the gateway, aux addresses and
        allocated addresses. Guarantees the result is marked allocated and becomes
        ``last``; O(1) amortised while the addresses ahead are free.

        Raises PoolExhaustedError when no address is free.
        """
        lo, hi = self._lo, self._hi
        start = self._last + 1 if self._last is not None and lo <= self._last < hi else lo
        if self._lookup is not None:
            n = self._probe(start)
            if n is not None:
                self._add(n)
                self._last = n
                return self._make(n)
        if self.free_count() <= 0:
            raise PoolExhaustedError("no free address left in %s" % self._where())
        taken, reserved = self._allocated, self._reserved
        n = start
        while n in taken or n in reserved:
            n = n + 1 if n < hi else lo
            if n == start:  # cannot happen while the counter is right; never loop forever
                raise PoolExhaustedError("no free address left in %s" % self._where())
        self._add(n)
        self._last = n
        return self._make(n)

    def reserve(self, address, field=None):
        """Mark a static address asked by the user (``ipv4_address``) as allocated.

        Called by the controller for an endpoint with a static address, and when
        re-attaching endpoints after a network rebuild. Does not move ``last``.
        ``field`` names the option in errors (default ``ipv4_address``/``ipv6_address``).

        Returns the normalised address. Raises ValidationError naming ``field`` when the
        address does not parse, is outside the subnet, outside ``ip_range`` (Docker
        requires static addresses inside it when set), or is the network, broadcast,
        gateway or an aux address; ConflictError when it is allocated already.
        """
        if field is None:
            field = "ipv%d_address" % self._version
        value = normalise_address(address, field)
        subnet = self._subnet
        if value.version != self._version or value not in subnet:
            raise ValidationError("%s is outside subnet %s" % (value, subnet), field=field)
        ip_range = self._pool.ip_range
        if ip_range is not None and value not in ip_range:
            raise ValidationError("%s is outside ip_range %s" % (value, ip_range), field=field)
        if value == subnet.network_address:
            raise ValidationError("%s is the network address of %s" % (value, subnet),
                                  field=field)
        if self._has_broadcast() and value == subnet.broadcast_address:
            raise ValidationError("%s is the broadcast address of %s" % (value, subnet),
                                  field=field)
        if value == self._pool.gateway:
            raise ValidationError("%s is the gateway of %s" % (value, subnet), field=field)
        for name, aux in self._pool.aux_addresses:
            if value == aux:
                raise ValidationError("%s is reserved as auxiliary address %r of %s"
                                      % (value, name, subnet), field=field)
        n = int(value)
        if self._taken(n):
            raise ConflictError("%s is already in use" % value, field=field)
        self._add(n)
        return value

    def release(self, address):
        """Give an address back when its endpoint leaves the network.

        Idempotent: releasing an address that is not allocated (or not in this subnet)
        does nothing, so teardown can run twice. Does not move ``last`` (so the address is
        not reused at once). Raises ValidationError only if ``address`` does not parse.
        """
        self._read_all()
        n = self._to_int(address, "address")
        if n is None or n not in self._allocated:
            return
        self._allocated.discard(n)
        if self._lo <= n <= self._hi and n not in self._reserved:
            self._used_in_range -= 1

    def is_allocated(self, address):
        """True if ``address`` is allocated to an endpoint (reserved addresses are not).

        Raises ValidationError only if ``address`` does not parse.
        """
        n = self._to_int(address, "address")
        return n is not None and self._taken(n)

    def contains(self, address):
        """True if ``address`` lies inside this pool's subnet (ip_range not considered).

        Used to find which pool of a network a static address belongs to. Raises
        ValidationError only if ``address`` does not parse.
        """
        return self._to_int(address, "address") is not None

    def allocated_addresses(self):
        """All allocated addresses of this subnet, sorted, as ipaddress objects (for the store)."""
        self._read_all()
        return [self._make(n) for n in sorted(self._allocated)]


def allocator_for(pools, family, allocated=(), last=None):
    """Return an AddressAllocator for the first pool of ``family`` (4 or 6), or None.

    Called by the controller when an endpoint needs an address of that family; Docker
    also allocates dynamic addresses from a network's first pool of each family.
    ``allocated`` may hold every address of the network: the ones outside that pool are
    ignored. Returns None when the network has no pool of that family. Raises
    ValidationError only for unparsable ``allocated``/``last`` values.
    """
    for pool in pools:
        if pool.subnet.version == family:
            return AddressAllocator(pool, allocated, last)
    return None


def pool_containing(pools, address):
    """Return the first pool whose subnet contains ``address``, or None.

    Called for a static ``ipv4_address``/``ipv6_address`` on a network with several pools
    of one family, to reserve it in the right one. Raises ValidationError naming
    ``address`` if it does not parse.
    """
    value = normalise_address(address, "address")
    for pool in pools:
        if value.version == pool.subnet.version and value in pool.subnet:
            return pool
    return None
