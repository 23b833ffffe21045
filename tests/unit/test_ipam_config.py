"""ipam.config parsing: what users type, what Docker accepts, and the errors they read."""
import ipaddress

import pytest

from ansible_collections.cnm.core.plugins.module_utils.errors import ValidationError
from ansible_collections.cnm.core.plugins.module_utils.ipam.config import (
    PoolConfig,
    default_gateway,
    normalise_address,
    normalise_network,
    parse_ipam_config,
)


def parse_one(entry, enable_ipv6=False):
    pools = parse_ipam_config([entry], enable_ipv6)
    assert len(pools) == 1
    return pools[0]


def error_of(raw, enable_ipv6=False):
    with pytest.raises(ValidationError) as info:
        parse_ipam_config(raw, enable_ipv6)
    return info.value


# --- happy paths -------------------------------------------------------------------------

def test_subnet_alone_gets_dockers_default_gateway():
    pool = parse_one({"subnet": "10.1.0.0/24"})
    assert pool.subnet == ipaddress.ip_network("10.1.0.0/24")
    assert pool.gateway == ipaddress.ip_address("10.1.0.1")
    assert pool.gateway_given is False
    assert pool.ip_range is None
    assert pool.aux_addresses == ()


def test_ipv6_subnet_default_gateway_is_first_address_after_anycast():
    pool = parse_one({"subnet": "2001:db8:1::/64"}, enable_ipv6=True)
    assert str(pool.gateway) == "2001:db8:1::1"
    assert pool.version == 6


def test_given_gateway_is_kept_and_marked_given():
    pool = parse_one({"subnet": "10.1.0.0/24", "gateway": "10.1.0.254"})
    assert str(pool.gateway) == "10.1.0.254"
    assert pool.gateway_given is True


def test_missing_keys_and_none_values_are_the_same():
    assert parse_one({"subnet": "10.1.0.0/24"}) == parse_one(
        {"subnet": "10.1.0.0/24", "ip_range": None, "gateway": None, "aux_addresses": None})


def test_spaces_around_values_are_ignored():
    pool = parse_one({"subnet": " 10.1.0.0/24 ", "ip_range": "10.1.0.0/25 ",
                      "gateway": " 10.1.0.1", "aux_addresses": {"r": " 10.1.0.2 "}})
    assert pool == parse_one({"subnet": "10.1.0.0/24", "ip_range": "10.1.0.0/25",
                              "gateway": "10.1.0.1", "aux_addresses": {"r": "10.1.0.2"}})


def test_ipv6_spellings_normalise_equal():
    a = parse_one({"subnet": "2001:DB8:0:0::/64", "gateway": "2001:db8::0:1",
                   "ip_range": "2001:0db8:0000:0000:8000::/65"}, enable_ipv6=True)
    b = parse_one({"subnet": "2001:db8::/64", "gateway": "2001:db8::1",
                   "ip_range": "2001:db8:0:0:8000::/65"}, enable_ipv6=True)
    assert a == b
    assert a.to_docker() == {"Subnet": "2001:db8::/64", "IPRange": "2001:db8:0:0:8000::/65",
                             "Gateway": "2001:db8::1"}


def test_aux_addresses_are_sorted_by_name_whatever_the_input_order():
    pool = parse_one({"subnet": "10.1.0.0/24",
                      "aux_addresses": {"zeta": "10.1.0.9", "alpha": "10.1.0.8"}})
    assert [aux[0] for aux in pool.aux_addresses] == ["alpha", "zeta"]
    assert pool == parse_one({"subnet": "10.1.0.0/24",
                              "aux_addresses": {"alpha": "10.1.0.8", "zeta": "10.1.0.9"}})


def test_several_ipv4_and_ipv6_subnets_are_allowed_in_input_order():
    pools = parse_ipam_config([{"subnet": "10.1.0.0/24"}, {"subnet": "2001:db8::/64"},
                               {"subnet": "10.2.0.0/24"}, {"subnet": "2001:db8:1::/64"}],
                              enable_ipv6=True)
    assert [str(p.subnet) for p in pools] == [
        "10.1.0.0/24", "2001:db8::/64", "10.2.0.0/24", "2001:db8:1::/64"]


def test_none_or_empty_config_means_no_pools():
    assert parse_ipam_config(None, False) == []
    assert parse_ipam_config([], False) == []


def test_an_entry_with_nothing_in_it_is_dropped():
    assert parse_ipam_config([{}, {"subnet": None, "gateway": None}, None], False) == []


def test_same_subnet_in_two_families_does_not_overlap():
    # the same integers in both families (0.0.0.0/8 and ::/64 are refused as special)
    pools = parse_ipam_config([{"subnet": "10.0.0.0/8"}, {"subnet": "::a00:0/104"}], True)
    assert len(pools) == 2


# --- PoolConfig serialisation -----------------------------------------------------------------

def test_to_docker_matches_docker_network_inspect_shape():
    pool = parse_one({"subnet": "10.1.0.0/16", "ip_range": "10.1.5.0/24",
                      "gateway": "10.1.0.254", "aux_addresses": {"host1": "10.1.0.5"}})
    assert pool.to_docker() == {
        "Subnet": "10.1.0.0/16",
        "IPRange": "10.1.5.0/24",
        "Gateway": "10.1.0.254",
        "AuxiliaryAddresses": {"host1": "10.1.0.5"},
    }
    assert list(pool.to_docker()) == ["Subnet", "IPRange", "Gateway", "AuxiliaryAddresses"]


def test_to_docker_omits_empty_ip_range_and_aux_addresses():
    assert parse_one({"subnet": "10.1.0.0/24"}).to_docker() == {
        "Subnet": "10.1.0.0/24", "Gateway": "10.1.0.1"}


def test_to_dict_round_trips_through_json():
    import json
    pool = parse_one({"subnet": "2001:db8::/64", "ip_range": "2001:db8::/80",
                      "gateway": "2001:db8::fe", "aux_addresses": {"a": "2001:db8::5"}},
                     enable_ipv6=True)
    data = json.loads(json.dumps(pool.to_dict()))
    assert PoolConfig.from_dict(data) == pool
    assert data["gateway_given"] is True


def test_from_dict_without_gateway_uses_the_default():
    assert str(PoolConfig.from_dict({"subnet": "10.9.0.0/24"}).gateway) == "10.9.0.1"


def test_for_subnet_builds_an_automatic_pool():
    pool = PoolConfig.for_subnet(ipaddress.ip_network("172.18.0.0/16"))
    assert pool == parse_one({"subnet": "172.18.0.0/16"})
    assert default_gateway(pool.subnet) == pool.gateway


def test_pool_configs_are_hashable_so_they_compare_as_a_set():
    a = parse_ipam_config([{"subnet": "10.1.0.0/24"}, {"subnet": "10.2.0.0/24"}], False)
    b = parse_ipam_config([{"subnet": "10.2.0.0/24 "}, {"subnet": "10.1.0.0/24"}], False)
    assert set(a) == set(b)


# --- validation errors -----------------------------------------------------------------------

def test_gateway_outside_subnet_names_the_field():
    err = error_of([{"subnet": "10.2.0.0/24", "gateway": "10.1.0.1"}])
    assert err.field == "ipam.config[0].gateway"
    assert str(err) == "ipam.config[0].gateway: 10.1.0.1 is outside subnet 10.2.0.0/24"


def test_subnet_with_host_bits_set_is_refused():
    err = error_of([{"subnet": "10.1.0.5/24"}])
    assert err.field == "ipam.config[0].subnet"
    assert "10.1.0.5/24 has host bits set" in str(err)
    assert "10.1.0.0/24" in str(err)


def test_subnet_that_does_not_parse_is_refused():
    err = error_of([{"subnet": "10.1.0.300/24"}])
    assert err.field == "ipam.config[0].subnet"
    assert "10.1.0.300/24" in str(err)


def test_subnet_without_prefix_length_is_refused():
    err = error_of([{"subnet": "10.1.0.0"}])
    assert err.field == "ipam.config[0].subnet"
    assert "prefix length" in str(err)


def test_subnet_too_small_for_a_network_is_refused():
    assert error_of([{"subnet": "10.1.0.0/31"}]).field == "ipam.config[0].subnet"
    assert error_of([{"subnet": "2001:db8::/127"}], True).field == "ipam.config[0].subnet"


def test_ip_range_outside_subnet_is_refused():
    err = error_of([{"subnet": "10.1.0.0/24", "ip_range": "10.1.1.0/25"}])
    assert err.field == "ipam.config[0].ip_range"
    assert "10.1.1.0/25 is outside subnet 10.1.0.0/24" in str(err)


def test_ip_range_larger_than_subnet_is_refused():
    err = error_of([{"subnet": "10.1.0.0/24", "ip_range": "10.1.0.0/16"}])
    assert err.field == "ipam.config[0].ip_range"


def test_ip_range_of_the_other_family_is_refused():
    err = error_of([{"subnet": "10.1.0.0/24", "ip_range": "2001:db8::/64"}], True)
    assert err.field == "ipam.config[0].ip_range"


def test_ip_range_with_host_bits_set_is_refused():
    err = error_of([{"subnet": "10.1.0.0/24", "ip_range": "10.1.0.130/25"}])
    assert err.field == "ipam.config[0].ip_range"
    assert "host bits set" in str(err)


def test_gateway_on_the_network_address_is_refused():
    err = error_of([{"subnet": "10.1.0.0/24", "gateway": "10.1.0.0"}])
    assert err.field == "ipam.config[0].gateway"
    assert "network address" in str(err)


def test_gateway_on_the_ipv4_broadcast_is_refused():
    err = error_of([{"subnet": "10.1.0.0/24", "gateway": "10.1.0.255"}])
    assert err.field == "ipam.config[0].gateway"
    assert "broadcast" in str(err)


def test_ipv6_gateway_on_the_last_address_is_fine():
    pool = parse_one({"subnet": "2001:db8::/120", "gateway": "2001:db8::ff"}, True)
    assert str(pool.gateway) == "2001:db8::ff"


def test_gateway_of_the_other_family_is_outside_the_subnet():
    err = error_of([{"subnet": "10.1.0.0/24", "gateway": "2001:db8::1"}], True)
    assert err.field == "ipam.config[0].gateway"
    assert "outside subnet" in str(err)


def test_gateway_that_is_not_an_address_is_refused():
    err = error_of([{"subnet": "10.1.0.0/24", "gateway": "router"}])
    assert err.field == "ipam.config[0].gateway"
    assert "'router'" in str(err)


def test_gateway_with_prefix_length_is_refused():
    err = error_of([{"subnet": "10.1.0.0/24", "gateway": "10.1.0.1/24"}])
    assert err.field == "ipam.config[0].gateway"


def test_aux_address_outside_subnet_names_its_key():
    err = error_of([{"subnet": "10.1.0.0/24", "aux_addresses": {"nas": "10.9.0.5"}}])
    assert err.field == "ipam.config[0].aux_addresses.nas"
    assert "10.9.0.5 is outside subnet 10.1.0.0/24" in str(err)


def test_aux_address_equal_to_the_gateway_is_refused():
    err = error_of([{"subnet": "10.1.0.0/24", "gateway": "10.1.0.1",
                     "aux_addresses": {"router": "10.1.0.1"}}])
    assert err.field == "ipam.config[0].aux_addresses.router"
    assert "gateway" in str(err)


def test_aux_address_equal_to_the_default_gateway_is_refused():
    err = error_of([{"subnet": "10.1.0.0/24", "aux_addresses": {"router": "10.1.0.1"}}])
    assert err.field == "ipam.config[0].aux_addresses.router"


def test_aux_addresses_must_be_a_dict():
    err = error_of([{"subnet": "10.1.0.0/24", "aux_addresses": ["10.1.0.5"]}])
    assert err.field == "ipam.config[0].aux_addresses"


def test_aux_address_that_does_not_parse_is_refused():
    err = error_of([{"subnet": "10.1.0.0/24", "aux_addresses": {"x": "nope"}}])
    assert err.field == "ipam.config[0].aux_addresses.x"


@pytest.mark.parametrize("key,value", [
    ("ip_range", "10.1.0.0/25"),
    ("gateway", "10.1.0.1"),
    ("aux_addresses", {"a": "10.1.0.5"}),
])
def test_range_gateway_or_aux_without_subnet_is_refused(key, value):
    err = error_of([{key: value}])
    assert err.field == "ipam.config[0].%s" % key
    assert "needs a subnet" in str(err)


def test_overlapping_subnets_in_one_network_are_refused():
    err = error_of([{"subnet": "10.1.0.0/16"}, {"subnet": "10.2.0.0/24"},
                    {"subnet": "10.1.5.0/24"}])
    assert err.field == "ipam.config[2].subnet"
    assert "10.1.5.0/24 overlaps 10.1.0.0/16 of ipam.config[0]" in str(err)


def test_same_subnet_twice_is_an_overlap_even_spelled_differently():
    err = error_of([{"subnet": "2001:db8::/64"}, {"subnet": "2001:DB8:0::/64"}], True)
    assert err.field == "ipam.config[1].subnet"


def test_ipv6_subnet_without_enable_ipv6_names_enable_ipv6():
    err = error_of([{"subnet": "2001:db8::/64"}], enable_ipv6=False)
    assert err.field == "ipam.config[0].subnet"
    assert "enable_ipv6" in str(err)


def test_unknown_key_in_an_entry_is_refused():
    err = error_of([{"subnet": "10.1.0.0/24", "iprange": "10.1.0.0/25"}])
    assert err.field == "ipam.config[0]"
    assert "iprange" in str(err)


def test_config_must_be_a_list_of_dicts():
    assert error_of("10.1.0.0/24").field == "ipam.config"
    assert error_of(["10.1.0.0/24"]).field == "ipam.config[0]"


def test_custom_field_prefix_is_used_in_errors():
    with pytest.raises(ValidationError) as info:
        parse_ipam_config([{"subnet": "bad"}], False, field="networks[3].ipam.config")
    assert info.value.field == "networks[3].ipam.config[0].subnet"


# --- helpers used by endpoints and ports ------------------------------------------------------

def test_normalise_address_returns_canonical_ipv6():
    assert str(normalise_address(" 2001:0DB8::0:5 ", "ipv6_address")) == "2001:db8::5"


def test_normalise_address_accepts_address_objects():
    value = ipaddress.ip_address("10.0.0.1")
    assert normalise_address(value, "x") is value


@pytest.mark.parametrize("value", ["", "10.0.0.256", "10.0.0.1/32", "fe80::1%eth0", 5, None])
def test_normalise_address_refuses_bad_input_naming_the_field(value):
    with pytest.raises(ValidationError) as info:
        normalise_address(value, "ports[0].host_ip")
    assert info.value.field == "ports[0].host_ip"


def test_normalise_network_refuses_host_bits_naming_the_field():
    with pytest.raises(ValidationError) as info:
        normalise_network("192.168.1.7/24", "pools[0].base")
    assert info.value.field == "pools[0].base"
    assert "host bits set" in str(info.value)


def test_normalise_network_canonicalises_ipv6():
    assert str(normalise_network("FD00:0:0:0::/64", "x")) == "fd00::/64"
