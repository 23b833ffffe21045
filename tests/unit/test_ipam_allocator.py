"""Handing out endpoint addresses: Docker's walk-forward order, static addresses, limits."""
import ipaddress
import tracemalloc

import pytest

from ansible_collections.cnm.core.plugins.module_utils.errors import (
    ConflictError,
    PoolExhaustedError,
    ValidationError,
)
from ansible_collections.cnm.core.plugins.module_utils.ipam.allocator import (
    AddressAllocator,
    AllocationLookup,
    allocator_for,
    pool_containing,
)
from ansible_collections.cnm.core.plugins.module_utils.ipam.config import parse_ipam_config


def pool(enable_ipv6=False, **entry):
    return parse_ipam_config([entry], enable_ipv6)[0]


def ip(text):
    return ipaddress.ip_address(text)


# --- allocate ---------------------------------------------------------------------------------

def test_first_endpoint_gets_the_address_after_the_gateway():
    alloc = AddressAllocator(pool(subnet="172.18.0.0/16"))
    assert alloc.allocate() == ip("172.18.0.2")
    assert alloc.allocate() == ip("172.18.0.3")
    assert alloc.last == ip("172.18.0.3")


def test_allocations_walk_forward_from_last():
    alloc = AddressAllocator(pool(subnet="10.1.0.0/24"), ["10.1.0.2", "10.1.0.3"], "10.1.0.3")
    assert alloc.allocate() == ip("10.1.0.4")


def test_released_address_is_not_reused_immediately():
    alloc = AddressAllocator(pool(subnet="10.1.0.0/24"))
    first = alloc.allocate()
    alloc.release(first)
    assert alloc.allocate() == ip("10.1.0.3")
    assert not alloc.is_allocated(first)


def test_walk_wraps_around_to_released_addresses_at_the_end():
    alloc = AddressAllocator(pool(subnet="10.1.0.0/29"))  # .2-.6 usable
    got = [alloc.allocate() for dummy in range(5)]
    assert got == [ip("10.1.0.%d" % n) for n in range(2, 7)]
    alloc.release("10.1.0.3")
    assert alloc.allocate() == ip("10.1.0.3")
    assert alloc.last == ip("10.1.0.3")


def test_walk_starts_after_last_even_when_earlier_addresses_are_free():
    alloc = AddressAllocator(pool(subnet="10.1.0.0/24"), [], last="10.1.0.200")
    assert alloc.allocate() == ip("10.1.0.201")


def test_last_at_the_end_of_the_range_wraps_to_the_start():
    alloc = AddressAllocator(pool(subnet="10.1.0.0/24"), [], last="10.1.0.254")
    assert alloc.allocate() == ip("10.1.0.2")


def test_gateway_and_aux_addresses_are_skipped():
    p = pool(subnet="10.1.0.0/24", gateway="10.1.0.3", aux_addresses={"a": "10.1.0.1",
                                                                      "b": "10.1.0.4"})
    alloc = AddressAllocator(p)
    assert [alloc.allocate() for dummy in range(2)] == [ip("10.1.0.2"), ip("10.1.0.5")]


def test_ip_range_limits_dynamic_addresses():
    alloc = AddressAllocator(pool(subnet="10.1.0.0/24", ip_range="10.1.0.128/30"))
    assert [alloc.allocate() for dummy in range(4)] == [ip("10.1.0.%d" % n) for n in range(128, 132)]
    with pytest.raises(PoolExhaustedError) as info:
        alloc.allocate()
    assert "10.1.0.128/30" in str(info.value)


def test_ip_range_at_the_end_of_the_subnet_skips_the_broadcast():
    alloc = AddressAllocator(pool(subnet="10.1.0.0/24", ip_range="10.1.0.252/30"))
    got = [alloc.allocate() for dummy in range(3)]
    assert got == [ip("10.1.0.252"), ip("10.1.0.253"), ip("10.1.0.254")]
    with pytest.raises(PoolExhaustedError):
        alloc.allocate()


def test_last_outside_a_changed_ip_range_restarts_at_the_range_start():
    alloc = AddressAllocator(pool(subnet="10.1.0.0/24", ip_range="10.1.0.64/26"),
                             [], last="10.1.0.7")
    assert alloc.allocate() == ip("10.1.0.64")


def test_fill_a_24_completely_then_pool_exhausted():
    alloc = AddressAllocator(pool(subnet="10.1.0.0/24"))
    got = {alloc.allocate() for dummy in range(253)}  # 256 - network - broadcast - gateway
    assert len(got) == 253
    assert ip("10.1.0.0") not in got and ip("10.1.0.1") not in got
    assert ip("10.1.0.255") not in got
    assert alloc.free_count() == 0
    with pytest.raises(PoolExhaustedError) as info:
        alloc.allocate()
    assert str(info.value) == "no free address left in 10.1.0.0/24"


def test_full_pool_with_a_released_address_hands_out_only_that_one():
    alloc = AddressAllocator(pool(subnet="10.1.0.0/24"))
    for dummy in range(253):
        alloc.allocate()
    alloc.release("10.1.0.77")
    assert alloc.allocate() == ip("10.1.0.77")
    with pytest.raises(PoolExhaustedError):
        alloc.allocate()


def test_fill_a_16_sequentially():
    alloc = AddressAllocator(pool(subnet="10.7.0.0/16"))
    for dummy in range(65533):
        alloc.allocate()
    assert alloc.last == ip("10.7.255.254")
    with pytest.raises(PoolExhaustedError):
        alloc.allocate()


def peak_bytes(fn):
    """(result of ``fn()``, the peak of Python memory it allocated, in bytes)."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        out = fn()
        return out, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def thousand_addresses(subnet, last=None):
    """An allocator of ``subnet`` (starting after ``last``) and the 1000 addresses it
    handed out."""
    alloc = AddressAllocator(pool(enable_ipv6=":" in subnet, subnet=subnet), [], last=last)
    return alloc, [alloc.allocate() for dummy in range(1000)]


@pytest.mark.parametrize("subnet,last", [("10.0.0.0/8", "10.200.0.9"),
                                         ("2001:db8::/64", "2001:db8::9")])
def test_huge_subnet_allocation_needs_no_memory_per_address(subnet, last):
    """A /8 (16.7 million addresses) or a /64 costs what a /22 does for the same
    thousand endpoints: memory follows the endpoints, not the subnet (a bitmap of a
    /8 alone would take 2 MiB)."""
    (alloc, got), peak = peak_bytes(lambda: thousand_addresses(subnet, last))
    dummy, small = peak_bytes(lambda: thousand_addresses("10.1.0.0/22"))
    assert got[0] == ip(last) + 1 and len(set(got)) == 1000
    assert peak < 512 * 1024, "%d bytes for 1000 addresses" % peak
    assert peak < 2 * small, (peak, small)
    if alloc.pool.subnet.version == 4:
        assert alloc.free_count() == 2 ** 24 - 3 - 1000


def test_ipv6_64_allocation_skips_anycast_and_gateway():
    alloc = AddressAllocator(pool(True, subnet="2001:db8::/64"))
    assert alloc.allocate() == ip("2001:db8::2")
    assert alloc.free_count() == 2 ** 64 - 3


def test_ipv6_last_address_of_the_subnet_is_usable():
    alloc = AddressAllocator(pool(True, subnet="2001:db8::/64"), [],
                             last="2001:db8::ffff:ffff:ffff:fffe")
    assert alloc.allocate() == ip("2001:db8::ffff:ffff:ffff:ffff")
    assert alloc.allocate() == ip("2001:db8::2")


def test_allocated_addresses_from_the_store_are_skipped_and_reported_sorted():
    alloc = AddressAllocator(pool(subnet="10.1.0.0/24"), ["10.1.0.3", ip("10.1.0.2"),
                                                          "10.9.9.9", "2001:db8::1"])
    assert alloc.allocate() == ip("10.1.0.4")
    assert alloc.allocated_addresses() == [ip("10.1.0.2"), ip("10.1.0.3"), ip("10.1.0.4")]


# --- reserve ----------------------------------------------------------------------------------

def test_static_address_is_reserved_without_moving_last():
    alloc = AddressAllocator(pool(subnet="10.1.0.0/24"))
    assert alloc.reserve(" 10.1.0.2 ") == ip("10.1.0.2")
    assert alloc.is_allocated("10.1.0.2")
    assert alloc.last is None
    assert alloc.allocate() == ip("10.1.0.3")


def test_static_address_outside_subnet_names_the_field():
    alloc = AddressAllocator(pool(subnet="10.1.0.0/24"))
    with pytest.raises(ValidationError) as info:
        alloc.reserve("10.9.0.5", "ipv4_address")
    assert info.value.field == "ipv4_address"
    assert "10.9.0.5 is outside subnet 10.1.0.0/24" in str(info.value)


def test_static_address_outside_ip_range_is_refused_like_docker():
    alloc = AddressAllocator(pool(subnet="10.1.0.0/24", ip_range="10.1.0.128/25"))
    with pytest.raises(ValidationError) as info:
        alloc.reserve("10.1.0.5", "ipv4_address")
    assert "10.1.0.5 is outside ip_range 10.1.0.128/25" in str(info.value)


@pytest.mark.parametrize("address,reason", [
    ("10.1.0.0", "network address"),
    ("10.1.0.255", "broadcast"),
    ("10.1.0.1", "gateway"),
    ("10.1.0.9", "auxiliary"),
])
def test_static_address_on_a_reserved_address_is_refused(address, reason):
    alloc = AddressAllocator(pool(subnet="10.1.0.0/24", aux_addresses={"nas": "10.1.0.9"}))
    with pytest.raises(ValidationError) as info:
        alloc.reserve(address, "ipv4_address")
    assert reason in str(info.value)
    assert info.value.field == "ipv4_address"


def test_static_ipv6_address_on_the_subnet_router_anycast_is_refused():
    alloc = AddressAllocator(pool(True, subnet="2001:db8::/64"))
    with pytest.raises(ValidationError) as info:
        alloc.reserve("2001:db8::")
    assert info.value.field == "ipv6_address"


def test_static_address_already_in_use_is_a_conflict():
    alloc = AddressAllocator(pool(subnet="10.1.0.0/24"), ["10.1.0.5"])
    with pytest.raises(ConflictError) as info:
        alloc.reserve("10.1.0.5", "ipv4_address")
    assert str(info.value) == "ipv4_address: 10.1.0.5 is already in use"


def test_static_address_of_the_other_family_is_outside_the_subnet():
    alloc = AddressAllocator(pool(subnet="10.1.0.0/24"))
    with pytest.raises(ValidationError):
        alloc.reserve("2001:db8::5", "ipv4_address")


def test_static_address_that_does_not_parse_names_the_field():
    alloc = AddressAllocator(pool(subnet="10.1.0.0/24"))
    with pytest.raises(ValidationError) as info:
        alloc.reserve("10.1.0.x", "ipv4_address")
    assert info.value.field == "ipv4_address"


def test_dynamic_allocation_skips_a_reserved_static_address():
    alloc = AddressAllocator(pool(subnet="10.1.0.0/24"))
    alloc.reserve("10.1.0.2")
    alloc.reserve("10.1.0.3")
    assert alloc.allocate() == ip("10.1.0.4")


def test_reserved_addresses_count_towards_exhaustion():
    alloc = AddressAllocator(pool(subnet="10.1.0.0/29"))
    for n in range(2, 7):
        alloc.reserve("10.1.0.%d" % n)
    with pytest.raises(PoolExhaustedError):
        alloc.allocate()


# --- release, queries ---------------------------------------------------------------------------

def test_release_is_idempotent():
    alloc = AddressAllocator(pool(subnet="10.1.0.0/24"))
    a = alloc.allocate()
    alloc.release(a)
    alloc.release(a)
    alloc.release("10.9.9.9")
    assert alloc.free_count() == 253


def test_release_of_the_gateway_does_not_free_it():
    alloc = AddressAllocator(pool(subnet="10.1.0.0/30"))
    alloc.release("10.1.0.1")
    assert alloc.allocate() == ip("10.1.0.2")
    with pytest.raises(PoolExhaustedError):
        alloc.allocate()


def test_contains_checks_the_subnet_not_the_range():
    alloc = AddressAllocator(pool(subnet="10.1.0.0/24", ip_range="10.1.0.128/25"))
    assert alloc.contains("10.1.0.5")
    assert not alloc.contains("10.1.1.5")
    assert not alloc.contains("2001:db8::5")


# --- allocator_for / pool_containing -----------------------------------------------------------

def test_allocator_for_picks_the_first_pool_of_the_family():
    pools = parse_ipam_config([{"subnet": "2001:db8::/64"}, {"subnet": "10.1.0.0/24"},
                               {"subnet": "10.2.0.0/24"}], True)
    v4 = allocator_for(pools, 4, allocated=["10.1.0.2", "2001:db8::2"], last="10.1.0.2")
    assert v4.pool.subnet == ipaddress.ip_network("10.1.0.0/24")
    assert v4.allocate() == ip("10.1.0.3")
    v6 = allocator_for(pools, 6, allocated=["10.1.0.2", "2001:db8::2"])
    assert v6.allocate() == ip("2001:db8::3")


def test_allocator_for_returns_none_without_a_pool_of_the_family():
    assert allocator_for(parse_ipam_config([{"subnet": "10.1.0.0/24"}], False), 6) is None


def test_pool_containing_finds_the_pool_of_a_static_address():
    pools = parse_ipam_config([{"subnet": "10.1.0.0/24"}, {"subnet": "10.2.0.0/24"}], False)
    assert pool_containing(pools, "10.2.0.9") is pools[1]
    assert pool_containing(pools, "10.3.0.9") is None


# --- allocations asked one at a time (AllocationLookup) -------------------------------------

class CountingStore:
    """Stands in for the store's allocations table: counts what the allocator reads."""

    def __init__(self, addresses):
        self.addresses = set(addresses)
        self.asked = 0
        self.loads = 0

    def lookup(self):
        def contains(text):
            self.asked += 1
            return text in self.addresses

        def load():
            self.loads += 1
            return sorted(self.addresses)
        return AllocationLookup(contains, load)


def test_lazy_allocator_asks_a_few_addresses_not_every_allocation():
    taken = ["10.1.%d.%d" % (i // 250, i % 250 + 2) for i in range(1000)]
    store = CountingStore(taken)
    alloc = AddressAllocator(pool(subnet="10.1.0.0/16"), store.lookup(), last=taken[-1])
    got = alloc.allocate()
    assert got == ip(taken[-1]) + 1
    assert store.loads == 0 and store.asked == 1


def test_lazy_allocator_skips_taken_addresses_ahead_and_wraps_like_the_eager_one():
    taken = ["10.1.0.%d" % i for i in (2, 3, 5, 254)]
    for last in (None, "10.1.0.2", "10.1.0.253"):
        lazy = AddressAllocator(pool(subnet="10.1.0.0/24"), CountingStore(taken).lookup(),
                                last=last)
        eager = AddressAllocator(pool(subnet="10.1.0.0/24"), taken, last=last)
        assert [lazy.allocate() for i in range(3)] == [eager.allocate() for i in range(3)]


def test_lazy_allocator_reads_everything_when_the_addresses_ahead_are_taken():
    subnet = ipaddress.ip_network("10.1.0.0/24")
    taken = [str(a) for a in subnet.hosts()][1:]          # all but the gateway
    store = CountingStore(taken)
    alloc = AddressAllocator(pool(subnet="10.1.0.0/24"), store.lookup())
    with pytest.raises(PoolExhaustedError):
        alloc.allocate()
    assert store.loads == 1
    store = CountingStore(taken[:-1])                     # one left at the very end
    alloc = AddressAllocator(pool(subnet="10.1.0.0/24"), store.lookup())
    assert alloc.allocate() == ip(taken[-1]) and store.loads == 1


def test_lazy_allocator_refuses_a_static_address_the_store_holds():
    store = CountingStore(["fd00::5"])
    alloc = AddressAllocator(pool(subnet="fd00::/64", enable_ipv6=True), store.lookup())
    with pytest.raises(ConflictError, match="already in use"):
        alloc.reserve("fd00::5")
    assert alloc.reserve("fd00::6") == ip("fd00::6") and alloc.is_allocated("fd00::6")
    assert store.loads == 0
