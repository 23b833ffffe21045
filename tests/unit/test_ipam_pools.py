"""Choosing subnets from address pools, and refusing overlapping ones."""
import ipaddress

import pytest

from ansible_collections.cnm.core.plugins.module_utils.constants import (
    DEFAULT_ADDRESS_POOLS,
    DEFAULT_ADDRESS_POOLS_V6,
)
from ansible_collections.cnm.core.plugins.module_utils.errors import (
    PoolExhaustedError,
    ValidationError,
)
from ansible_collections.cnm.core.plugins.module_utils.ipam.pools import (
    choose_subnet,
    find_overlap,
    parse_pools,
)


def net(text):
    return ipaddress.ip_network(text)


# --- choose_subnet ---------------------------------------------------------------------------

def test_first_network_gets_172_17_on_an_empty_host():
    assert choose_subnet(DEFAULT_ADDRESS_POOLS, []) == net("172.17.0.0/16")


def test_subnets_in_use_are_skipped_in_pool_order():
    assert choose_subnet(DEFAULT_ADDRESS_POOLS, [net("172.17.0.0/16")]) == net("172.18.0.0/16")


def test_twenty_networks_get_distinct_subnets_around_a_host_route():
    # The host has a route to 172.20.0.0/14 (covers 172.20-23) and an address in 192.168.0.0/24.
    host = [net("172.20.0.0/14"), ipaddress.ip_interface("192.168.0.7/24")]
    chosen = []
    for dummy in range(20):
        chosen.append(choose_subnet(DEFAULT_ADDRESS_POOLS, host + chosen))
    assert len(set(chosen)) == 20
    for a in chosen:
        assert not a.overlaps(net("172.20.0.0/14"))
        assert not a.overlaps(net("192.168.0.0/24"))
    assert [str(s) for s in chosen[:4]] == [
        "172.17.0.0/16", "172.18.0.0/16", "172.19.0.0/16", "172.24.0.0/16"]
    # 172.17-19 and 172.24-31: 11 /16s, then /20s of 192.168 after the used 192.168.0.0/20.
    assert str(chosen[11]) == "192.168.16.0/20"
    assert str(chosen[19]) == "192.168.144.0/20"


def test_default_route_is_ignored():
    in_use = [net("0.0.0.0/0"), net("::/0")]
    assert choose_subnet(DEFAULT_ADDRESS_POOLS, in_use) == net("172.17.0.0/16")
    assert choose_subnet(DEFAULT_ADDRESS_POOLS_V6, in_use, family=6) == net("fd63:6e6d::/64")


def test_vpn_default_route_halves_are_ignored():
    in_use = ["0.0.0.0/1", "128.0.0.0/1", "::/3", "2000::/4", "3000::/4", "fc00::/7"]
    assert choose_subnet(DEFAULT_ADDRESS_POOLS, in_use) == net("172.17.0.0/16")
    assert choose_subnet(DEFAULT_ADDRESS_POOLS_V6, in_use, family=6) == net("fd63:6e6d::/64")


def test_a_route_larger_than_a_pool_block_is_avoided():
    # A corporate VPN routes 172.16.0.0/12: every /16 of the 172 pools is behind it.
    assert choose_subnet(DEFAULT_ADDRESS_POOLS, [net("172.16.0.0/12")]) == net("192.168.0.0/20")


def test_an_address_inside_a_candidate_makes_it_used():
    assert choose_subnet(DEFAULT_ADDRESS_POOLS, ["172.17.200.1/32"]) == net("172.18.0.0/16")


def test_other_family_entries_do_not_matter():
    in_use = [net("fd63:6e6d::/64"), net("2001:db8::/32")]
    assert choose_subnet(DEFAULT_ADDRESS_POOLS, in_use, family=4) == net("172.17.0.0/16")
    assert choose_subnet(DEFAULT_ADDRESS_POOLS + DEFAULT_ADDRESS_POOLS_V6,
                         [net("172.17.0.0/16"), net("fd63:6e6d::/64")],
                         family=6) == net("fd63:6e6d:0:1::/64")


def test_ipv6_48_of_64s_skips_many_used_subnets_without_enumerating():
    used = [net("fd63:6e6d:0:%x::/64" % i) for i in range(0, 5000)]
    assert choose_subnet(DEFAULT_ADDRESS_POOLS_V6, used, family=6) == net("fd63:6e6d:0:1388::/64")


def test_every_candidate_partly_used_is_skipped_one_by_one():
    pools = [{"base": "10.0.0.0/8", "size": 24}]
    used = [net("10.%d.%d.128/25" % (i // 256, i % 256)) for i in range(3000)]
    assert choose_subnet(pools, used) == net("10.11.184.0/24")


def test_ten_slash_eight_pool_of_24s_skips_a_used_16():
    pools = [{"base": "10.0.0.0/8", "size": 24}]
    used = [net("10.0.0.0/16"), net("10.1.0.0/24"), net("10.1.1.128/25")]
    assert choose_subnet(pools, used) == net("10.1.2.0/24")


def test_unaligned_in_use_network_skips_to_the_next_block_boundary():
    pools = [{"base": "10.0.0.0/8", "size": 16}]
    assert choose_subnet(pools, [net("10.0.255.0/24"), net("10.1.0.0/30")]) == net("10.2.0.0/16")


def test_full_pool_moves_on_to_the_next_pool():
    pools = [{"base": "10.0.0.0/23", "size": 24}, {"base": "10.9.0.0/16", "size": 24}]
    assert choose_subnet(pools, [net("10.0.0.0/24"), net("10.0.1.0/24")]) == net("10.9.0.0/24")


def test_pool_exhaustion_raises_a_clear_error():
    pools = [{"base": "10.0.0.0/23", "size": 24}]
    with pytest.raises(PoolExhaustedError) as info:
        choose_subnet(pools, [net("10.0.0.0/24"), net("10.0.1.128/25")])
    message = str(info.value)
    assert "no free IPv4 subnet" in message
    assert "10.0.0.0/23 in /24s" in message


def test_exhaustion_message_stays_short_with_many_pools():
    with pytest.raises(PoolExhaustedError) as info:
        choose_subnet(DEFAULT_ADDRESS_POOLS, ["172.16.0.0/12", "192.168.0.0/16"])
    assert "and 12 more" in str(info.value)


def test_whole_default_pools_exhausted():
    in_use = [net("172.16.0.0/12"), net("192.168.0.0/16")]
    with pytest.raises(PoolExhaustedError):
        choose_subnet(DEFAULT_ADDRESS_POOLS, in_use)


def test_no_pool_of_the_family_raises():
    with pytest.raises(PoolExhaustedError) as info:
        choose_subnet(DEFAULT_ADDRESS_POOLS, [], family=6)
    assert "IPv6" in str(info.value)


def test_many_in_use_entries_are_handled():
    in_use = [net("172.%d.%d.0/24" % (a, b)) for a in range(17, 32) for b in range(256)]
    in_use += [net("192.168.%d.0/24" % b) for b in range(0, 240)]
    assert choose_subnet(DEFAULT_ADDRESS_POOLS, in_use) == net("192.168.240.0/20")


# --- parse_pools -----------------------------------------------------------------------------------

def test_parse_pools_normalises_and_keeps_order():
    assert parse_pools([{"base": " 10.0.0.0/8", "size": 24},
                        {"base": "FD00::/48", "size": "64"}], "pools") == [
        {"base": "10.0.0.0/8", "size": 24}, {"base": "fd00::/48", "size": 64}]


def test_parse_pools_accepts_the_default_pools():
    assert parse_pools(DEFAULT_ADDRESS_POOLS, "p") == DEFAULT_ADDRESS_POOLS
    assert parse_pools(DEFAULT_ADDRESS_POOLS_V6, "p") == DEFAULT_ADDRESS_POOLS_V6


@pytest.mark.parametrize("entry,bad_field", [
    ({"base": "10.0.0.1/8", "size": 24}, "pools[0].base"),
    ({"base": "nope", "size": 24}, "pools[0].base"),
    ({"size": 24}, "pools[0].base"),
    ({"base": "10.0.0.0/16", "size": 8}, "pools[0].size"),
    ({"base": "10.0.0.0/16", "size": 31}, "pools[0].size"),
    ({"base": "fd00::/48", "size": 127}, "pools[0].size"),
    ({"base": "10.0.0.0/16", "size": "big"}, "pools[0].size"),
    ({"base": "10.0.0.0/16", "size": True}, "pools[0].size"),
    ({"base": "10.0.0.0/16", "size": 24, "extra": 1}, "pools[0]"),
    ("10.0.0.0/16", "pools[0]"),
])
def test_parse_pools_refuses_bad_entries_naming_the_field(entry, bad_field):
    with pytest.raises(ValidationError) as info:
        parse_pools([entry], "pools")
    assert info.value.field == bad_field


def test_parse_pools_size_limits_are_inclusive():
    assert parse_pools([{"base": "10.0.0.0/30", "size": 30},
                        {"base": "fd00::/126", "size": 126}], "p")


# --- find_overlap ----------------------------------------------------------------------------

def test_find_overlap_names_the_network_holding_the_subnet():
    existing = [("web", net("10.2.0.0/24")), ("foo", net("10.1.0.0/16"))]
    assert find_overlap(net("10.1.0.0/24"), existing) == ("foo", net("10.1.0.0/16"))


def test_find_overlap_sees_a_smaller_subnet_inside_a_larger_request():
    assert find_overlap(net("10.0.0.0/8"), [("db", "10.200.3.0/24")]) == (
        "db", net("10.200.3.0/24"))


def test_find_overlap_returns_none_when_free_or_other_family():
    existing = [("v6", net("2001:db8::/64")), ("web", net("10.2.0.0/24"))]
    assert find_overlap(net("10.1.0.0/24"), existing) is None
    assert find_overlap(net("2001:db8:1::/64"), existing) is None
