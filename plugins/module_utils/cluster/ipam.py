"""Cluster-wide IPAM: VNIs, subnets and endpoint addresses of global networks.

Choices that many hosts make at once are settled by etcd compare-and-swap: a key per
taken VNI, subnet and address, created only if absent (``CREATE == 0``), so two hosts can
never both get one. Addresses walk forward from a per-subnet "last" key, as the local
allocator does (``ipam/allocator.py`` does the walking), so a released address is not
handed out again at once.

A transaction whose answer is lost (a member died, a timeout) may still have committed.
Each allocation therefore carries an attempt token, written into the address's value;
after a lost answer the allocator reads the network's addresses again and looks for its
token before it tries anything else, and once it holds an address it deletes any other
address a lost attempt of its own may have taken (compare on the exact value). So an
allocation never returns two addresses, and never an address another owner holds.
"""
import ipaddress
import json
import random
import secrets
import time

from ..errors import ConflictError, PoolExhaustedError, ValidationError
from ..ipam.allocator import AddressAllocator
from ..ipam.config import PoolConfig, normalise_address
from ..ipam.pools import choose_subnet, find_overlap
from .client import (ClusterUnavailableError, CommitUnknownError, compare, encode_json,
                     op_delete, op_get, op_put, range_kvs)
from .keys import KeyLayout

VNI_MIN, VNI_MAX = 1, (1 << 24) - 2      # 16777215 is reserved (Docker refuses it too)
VNI_AUTO_START = 4096                    # automatic VNIs start here, as Docker's do
GLOBAL_POOLS = [{"base": "10.0.0.0/8", "size": 24}]
GLOBAL_POOLS_V6 = [{"base": "fd63:6e6f::/48", "size": 64}]
VXLANID_FIELD = "driver_options.com.docker.network.driver.overlay.vxlanid_list"
DEFAULT_DEADLINE = 30.0                  # seconds one allocation may take, retries included
BACKOFF = 0.002                          # seconds of random wait per race lost (at most 8)


# --- VNIs -----------------------------------------------------------------------------
def parse_vxlanid_list(raw, field=VXLANID_FIELD):
    """Parse Docker's ``vxlanid_list`` option (``"4097,4098"``, a list, or an int).

    Called before anything is written. Returns the VNIs as a list of ints in the given
    order. Raises ValidationError naming ``field`` for a non-number, a VNI outside
    1-16777214, or a VNI given twice.
    """
    if raw is None or raw == "":
        return []
    items = raw.split(",") if isinstance(raw, str) else (raw if isinstance(raw, (list, tuple))
                                                         else [raw])
    vnis = []
    for item in items:
        text = str(item).strip()
        if isinstance(item, bool) or not text.isdigit():
            raise ValidationError("%r is not a VNI (a number %d-%d)" % (item, VNI_MIN, VNI_MAX),
                                  field=field)
        vni = int(text)
        if not VNI_MIN <= vni <= VNI_MAX:
            raise ValidationError("VNI %d is outside %d-%d" % (vni, VNI_MIN, VNI_MAX),
                                  field=field)
        if vni in vnis:
            raise ValidationError("VNI %d is given twice" % vni, field=field)
        vnis.append(vni)
    return vnis


def choose_vnis(taken, count, requested=(), field=VXLANID_FIELD):
    """The VNIs of a new global network.

    Called while planning a network creation, with ``taken`` = {vni: network name} read
    from the store in the same snapshot the creating transaction then guards. With
    ``requested`` (from ``parse_vxlanid_list``) those are used, and there must be at
    least ``count``; otherwise ``count`` free VNIs are chosen from 4096 upwards (then
    from 1), the lowest first.

    Raises ValidationError naming ``field`` when fewer VNIs than ``count`` are
    requested, ConflictError naming ``field`` when a requested VNI is taken (and by
    which network), PoolExhaustedError when no VNI is free.
    """
    if requested:
        if len(requested) < count:
            raise ValidationError("%d VNI(s) given for %d subnet(s)" % (len(requested), count),
                                  field=field)
        for vni in requested:
            if vni in taken:
                raise ConflictError("VNI %d is taken by network %s" % (vni, taken[vni]),
                                    field=field)
        return list(requested)
    chosen = []
    for vni in _vni_walk():
        if vni not in taken:
            chosen.append(vni)
            if len(chosen) == count:
                return chosen
    raise PoolExhaustedError("no free VNI left")


def _vni_walk():
    yield from range(VNI_AUTO_START, VNI_MAX + 1)
    yield from range(VNI_MIN, VNI_AUTO_START)


# --- subnets --------------------------------------------------------------------------
def choose_global_pools(requested, existing, enable_ipv4=True, enable_ipv6=False):
    """The address pools of a new global network.

    Called while planning a network creation. ``requested``: the PoolConfigs parsed from
    ``ipam.config`` (``ipam/config.py``); ``existing``: ``(network name, subnet)`` pairs
    of every global network, read in the snapshot the creating transaction guards.
    A requested subnet must overlap no existing one; a family without a requested
    subnet gets the first free /24 of 10.0.0.0/8 (IPv6: a /64 of fd63:6e6f::/48).

    Returns the PoolConfigs, requested ones first. Raises ConflictError naming
    ``ipam.config[i].subnet`` and the network it overlaps, PoolExhaustedError when no
    subnet is free.
    """
    pools = []
    for index, pool in enumerate(requested):
        clash = find_overlap(pool.subnet, existing)
        if clash is not None:
            raise ConflictError("%s overlaps %s of global network %s"
                                % (pool.subnet, clash[1], clash[0]),
                                field="ipam.config[%d].subnet" % index)
        pools.append(pool)
    in_use = [subnet for dummy, subnet in existing]
    families = [(4, GLOBAL_POOLS, enable_ipv4), (6, GLOBAL_POOLS_V6, enable_ipv6)]
    for family, defaults, wanted in families:
        if wanted and not any(p.subnet.version == family for p in requested):
            pools.append(PoolConfig.for_subnet(choose_subnet(defaults, in_use, family)))
    return pools


# --- addresses ------------------------------------------------------------------------
class AllocationStats:
    """Counters of one ClusterIpam: what the allocations cost (for tests and logs)."""

    def __init__(self):
        self.allocations = 0   # addresses handed out
        self.attempts = 0      # transactions tried
        self.conflicts = 0     # transactions that lost a race and were retried
        self.unknown = 0       # transactions whose answer was lost
        self.recovered = 0     # lost answers that had committed (found by token)
        self.swept = 0         # extra addresses of lost attempts given back

    def as_dict(self):
        """The counters as a dict."""
        return dict(vars(self))


class ClusterIpam:
    """Endpoint addresses of global networks, allocated and released in etcd."""

    def __init__(self, client, layout=None, deadline=DEFAULT_DEADLINE):
        """``client``: an EtcdClient; ``layout``: a KeyLayout (default root);
        ``deadline``: seconds one allocation may take, retries included."""
        self.client = client
        self.keys = layout or KeyLayout()
        self.deadline = deadline
        self.stats = AllocationStats()

    # reading
    def addresses(self, network):
        """Every taken address of ``network`` (a definition from ``networks.py``) as
        ``{address string: {"owner", "host", "token"}}``. Raises
        ClusterUnavailableError."""
        kvs, dummy = self.client.range(self.keys.addresses(network["id"]), prefix=True)
        return self._decode(network, kvs)

    def _decode(self, network, kvs):
        prefix = self.keys.addresses(network["id"])
        return {KeyLayout.last_part(kv.key, prefix): json.loads(kv.value.decode())
                for kv in kvs}

    def _read(self, network, pool):
        """Taken addresses and the pool's cursor, at one revision."""
        (kvs, cursor), dummy = self.client.snapshot(
            op_get(self.keys.addresses(network["id"]), prefix=True),
            op_get(self.keys.cursor(network["id"], pool.subnet)))
        return self._decode(network, kvs), (cursor[0] if cursor else None)

    @staticmethod
    def _pool(network, family=4, address=None):
        pools = [PoolConfig.from_dict(p) for p in network["pools"]]
        for pool in pools:
            if address is not None and address.version == pool.version \
                    and address in pool.subnet:
                return pool
            if address is None and pool.version == family:
                return pool
        if address is not None:
            raise ValidationError("%s is in no subnet of network %s (%s)" % (
                address, network["name"], ", ".join(str(p.subnet) for p in pools)),
                field="ipv%d_address" % address.version)
        raise ValidationError("network %s has no IPv%d subnet" % (network["name"], family),
                              field="ipv%d_address" % family)

    # allocating
    def allocate(self, network, owner, host, family=4, address=None):
        """Take an address of ``network`` for endpoint ``owner`` on ``host``.

        Called when an endpoint joins a global network. Without ``address`` the next
        free address of the network's first pool of ``family`` is taken, walking forward
        from the last one handed out; with ``address`` exactly that one. Idempotent per
        owner: when ``owner`` already holds an address of that pool (a re-run after a
        failure), that address is returned.

        Guarantees: the address is held in the store by ``owner``, no other owner holds
        it, and an address a lost attempt of this call took besides it is given back
        (unless the store fails again while doing so: then it stays held by ``owner``).
        Returns an ``ipaddress`` address.

        Raises ValidationError naming ``ipv4_address``/``ipv6_address`` for an address
        outside the pools or reserved; ConflictError when it is taken;
        PoolExhaustedError when nothing is free; ClusterUnavailableError when the store
        does not settle it within ``deadline`` seconds (then nothing is held, or the
        address is held by ``owner`` and the next call returns it).
        """
        if address is not None:
            address = normalise_address(address, "ipv%d_address" % family)
        pool = self._pool(network, family, address)
        token = secrets.token_hex(12)
        record = {"owner": owner, "host": host, "token": token}
        suspects = []   # addresses an attempt with a lost answer tried
        lost_races = 0
        give_up = time.monotonic() + self.deadline
        taken, cursor = self._retrying(give_up, self._read, network, pool)
        while True:
            held = self._held(taken, pool, token, owner, address)
            if held is not None:
                if suspects:
                    self.stats.recovered += taken[held].get("token") == token
                return self._done(network, held, record, suspects)
            if time.monotonic() > give_up:
                maybe = (": a lost attempt may hold %s for %s, the next allocation for it "
                         "returns that" % (", ".join(map(str, suspects)), owner)
                         if suspects else "")
                raise ClusterUnavailableError(
                    "no address of %s settled within %.0f s%s" % (
                        pool.subnet, self.deadline, maybe), field="cluster_store")
            candidate = self._candidate(pool, taken, cursor, address)
            self.stats.attempts += 1
            try:
                result = self._claim(network, pool, candidate, record, cursor, address)
            except CommitUnknownError:
                self.stats.unknown += 1
                suspects.append(candidate)
                taken, cursor = self._retrying(give_up, self._read, network, pool)
                continue
            if result.succeeded:
                return self._done(network, candidate, record, suspects)
            self.stats.conflicts += 1
            lost_races += 1
            # every loser of a round targets the same next address: spread them out
            time.sleep(random.uniform(0, BACKOFF * min(lost_races, 8)))
            kvs, cursor_kvs = (range_kvs(r) for r in result.responses)
            taken, cursor = self._decode(network, kvs), (cursor_kvs[0] if cursor_kvs else None)
            if address is not None and str(candidate) in taken \
                    and taken[str(candidate)].get("owner") != owner:
                other = taken[str(candidate)]
                raise ConflictError("%s is already in use by endpoint %s on host %s" % (
                    candidate, other.get("owner"), other.get("host")),
                    field="ipv%d_address" % candidate.version)

    def _retrying(self, give_up, read, *args):
        """``read(*args)`` until it answers or ``give_up`` passes."""
        while True:
            try:
                return read(*args)
            except ClusterUnavailableError:
                if time.monotonic() > give_up:
                    raise
                time.sleep(0.1)

    @staticmethod
    def _held(taken, pool, token, owner, address):
        """The address of ``pool`` this call (token) or ``owner`` already holds (with a
        static ``address``: only that one)."""
        mine = [a for a, rec in taken.items() if rec.get("token") == token]
        if not mine:
            mine = [a for a, rec in taken.items() if rec.get("owner") == owner]
        mine = [a for a in mine if ipaddress.ip_address(a) in pool.subnet and (
            address is None or a == str(address))]
        return mine[0] if mine else None

    @staticmethod
    def _candidate(pool, taken, cursor, address):
        if address is not None:
            other = taken.get(str(address))
            if other is not None:
                raise ConflictError("%s is already in use by endpoint %s on host %s" % (
                    address, other.get("owner"), other.get("host")),
                    field="ipv%d_address" % address.version)
            AddressAllocator(pool).reserve(address)  # validates: in range, not reserved
            return address
        last = cursor.value.decode() if cursor is not None else None
        return AddressAllocator(pool, list(taken), last).allocate()

    def _claim(self, network, pool, candidate, record, cursor, address):
        """One CAS: create the address key if absent (and move the cursor if it has not
        moved since the read); on failure read the addresses and cursor back."""
        net = network["id"]
        cursor_key = self.keys.cursor(net, pool.subnet)
        compares = [compare(self.keys.address(net, candidate), "CREATE", "==", 0)]
        success = [op_put(self.keys.address(net, candidate), record)]
        if address is None:
            compares.append(compare(cursor_key, "MOD", "==",
                                    cursor.mod_revision if cursor is not None else 0))
            success.append(op_put(cursor_key, str(candidate)))
        failure = [op_get(self.keys.addresses(net), prefix=True), op_get(cursor_key)]
        return self.client.txn(compares, success, failure)

    def _done(self, network, held, record, suspects):
        """Give back what lost attempts of this call took besides ``held``."""
        for address in suspects:
            if str(address) == str(held):
                continue
            key = self.keys.address(network["id"], address)
            try:
                result = self.client.txn(
                    [compare(key, "VALUE", "==", encode_json(record))], [op_delete(key)])
                self.stats.swept += result.succeeded
            except (CommitUnknownError, ClusterUnavailableError):
                pass  # best effort: the address stays marked with this owner
        self.stats.allocations += 1
        return ipaddress.ip_address(held)

    def release(self, network, address, owner=None):
        """Give back ``address`` of ``network`` when its endpoint leaves.

        Idempotent: an address that is not taken is not an error (returns False).
        With ``owner``, only that owner's address is released. Does not move the
        cursor, so the address is not handed out again at once. Returns True when this
        call deleted it.

        Raises ConflictError when ``owner`` is given and another owner holds it;
        ClusterUnavailableError when the store does not answer within ``deadline``.
        """
        address = normalise_address(address, "address")
        key = self.keys.address(network["id"], address)
        give_up = time.monotonic() + self.deadline
        while True:
            current = self._retrying(give_up, self.client.get, key)
            if current is None:
                return False
            holder = json.loads(current.value.decode()).get("owner")
            if owner is not None and holder != owner:
                raise ConflictError("%s is held by endpoint %s, not %s" % (
                    address, holder, owner), field="address")
            try:
                result = self.client.txn(
                    [compare(key, "MOD", "==", current.mod_revision)], [op_delete(key)])
            except CommitUnknownError:
                continue   # read again: gone means released
            if result.succeeded:
                return True
