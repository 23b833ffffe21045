"""Choosing host ports: ranges, ephemeral ports, stability, conflicts (no kernel)."""
import ipaddress

import pytest

from ansible_collections.cnm.core.plugins.module_utils.errors import (
    ConflictError,
    PoolExhaustedError,
    ValidationError,
)
from ansible_collections.cnm.core.plugins.module_utils.firewall.model import PortMapping
from ansible_collections.cnm.core.plugins.module_utils.ports.allocator import (
    _hex_ip,
    allocate_ports,
    parse_port_list,
)
from ansible_collections.cnm.core.plugins.module_utils.ports.spec import parse_ports

IP4, IP6 = "172.18.0.2/16", "fd00::2/64"


class FakeHost:
    """Host port facts without /proc: range, reserved, bound and listening sockets."""

    def __init__(self, low=40000, high=40009, reserved=(), bound=(), listening=()):
        self.range = (low, high)
        self._reserved = set(reserved)
        self._bound = set(bound)
        self._listening = list(listening)   # (protocol, port, address or None)

    def port_range(self):
        return self.range

    def reserved(self):
        return self._reserved

    def bound(self, protocol):
        return self._bound | {p for proto, p, dummy in self._listening
                              if proto == protocol}

    def listening(self, protocol, port):
        return [ip for proto, p, ip in self._listening if proto == protocol and p == port]


def alloc(entries, ip4=IP4, ip6=None, default=None, published=(), previous=(),
          host=None, **kw):
    return allocate_ports(parse_ports(entries), ip4, ip6, default, list(published),
                          list(previous), host_state=host or FakeHost(), **kw)


def m(hport, cport=80, proto="tcp", host_ip="", family=4, cip="172.18.0.2"):
    return PortMapping(proto, host_ip, hport, cip, cport, family)


def test_explicit_port_maps_v4_only_for_a_v4_endpoint():
    assert alloc([{"container_port": 80, "host_port": 8080}]) == [m(8080)]


def test_no_host_ip_maps_both_families_with_the_same_ephemeral_port():
    out = alloc([{"container_port": 80}], ip6=IP6)
    assert out == [m(40000), m(40000, family=6, cip="fd00::2")]


def test_explicit_all_addresses_of_one_family():
    assert alloc([{"container_port": 80, "host_port": 8080, "host_ip": "0.0.0.0"}],
                 ip6=IP6) == [m(8080)]
    assert alloc([{"container_port": 80, "host_port": 8080, "host_ip": "::"}],
                 ip6=IP6) == [m(8080, family=6, cip="fd00::2")]


def test_ranges_expand_pairwise():
    out = alloc([{"container_port": "80-81", "host_port": "8080-8081", "protocol": "udp"}])
    assert out == [m(8080, 80, "udp"), m(8081, 81, "udp")]


def test_ephemeral_range_skips_reserved_bound_published_and_own_ports():
    host = FakeHost(reserved={40000}, bound={40001})
    published = [(m(40002, cip="172.18.0.9"), "other")]
    out = alloc([{"container_port": "80-81"}], host=host, published=published)
    assert [x.host_port for x in out] == [40003, 40004]


def test_ephemeral_ports_of_another_protocol_do_not_collide():
    published = [(m(40000, proto="udp", cip="172.18.0.9"), "other")]
    assert alloc([{"container_port": 80}], published=published) == [m(40000)]


def test_ephemeral_ports_are_stable_across_runs():
    previous = [m(40007), m(40005, 443)]
    out = alloc([{"container_port": 443}, {"container_port": 80}], previous=previous)
    assert out == sorted([m(40007), m(40005, 443)])


def test_a_previous_port_taken_meanwhile_is_replaced():
    previous = [m(40007)]
    published = [(m(40007, cip="172.18.0.9"), "web")]
    assert alloc([{"container_port": 80}], previous=previous,
                 published=published) == [m(40000)]


def test_ephemeral_exhaustion_names_the_entry():
    host = FakeHost(low=40000, high=40001)
    with pytest.raises(PoolExhaustedError) as err:
        alloc([{"container_port": 1}, {"container_port": "80-82"}], host=host)
    assert err.value.field == "ports[1].host_port"


def test_conflict_with_another_sandbox_names_port_address_and_owner():
    published = [(m(8080, cip="172.18.0.9"), "web")]
    with pytest.raises(ConflictError) as err:
        alloc([{"container_port": 80, "host_port": 8080}], published=published)
    assert str(err.value) == ("ports[0].host_port 8080/tcp on 0.0.0.0 is already "
                              "published by sandbox web")
    assert err.value.field == "ports[0].host_port"


@pytest.mark.parametrize("mine,theirs,clash", [
    ("", "", True),
    ("", "127.0.0.1", True),            # all addresses include the specific one
    ("127.0.0.1", "", True),
    ("127.0.0.1", "127.0.0.1", True),
    ("127.0.0.1", "10.0.0.1", False),
])
def test_address_overlap_rules(mine, theirs, clash):
    published = [(m(8080, host_ip=theirs, cip="172.18.0.9"), "web")]
    entry = {"container_port": 80, "host_port": 8080, "host_ip": mine or None}
    if clash:
        with pytest.raises(ConflictError):
            alloc([entry], published=published)
    else:
        assert alloc([entry], published=published) == [m(8080, host_ip=mine)]


def test_same_port_other_family_or_protocol_is_no_conflict():
    published = [(m(8080, family=6, cip="fd00::9"), "web"),
                 (m(8080, proto="udp", cip="172.18.0.9"), "dns")]
    assert alloc([{"container_port": 80, "host_port": 8080}],
                 published=published) == [m(8080)]


def test_duplicates_within_one_request_are_refused():
    with pytest.raises(ConflictError) as err:
        alloc([{"container_port": 80, "host_port": 8080},
               {"container_port": 81, "host_port": 8080, "host_ip": "127.0.0.1"}])
    assert "also requested by ports[0]" in str(err.value)
    assert err.value.field == "ports[1].host_port"


def test_an_explicit_port_a_host_socket_listens_on_is_refused():
    host = FakeHost(listening=[("tcp", 22, "0.0.0.0"), ("tcp", 53, "127.0.0.53")])
    with pytest.raises(ConflictError, match="in use on the host"):
        alloc([{"container_port": 22, "host_port": 22}], host=host)
    with pytest.raises(ConflictError, match="in use on the host"):
        alloc([{"container_port": 53, "host_port": 53}], host=host)
    # a specific other address does not clash
    assert alloc([{"container_port": 53, "host_port": 53, "host_ip": "10.0.0.1"}],
                 host=host) == [m(53, 53, host_ip="10.0.0.1")]


def test_a_v6_wildcard_socket_clashes_with_both_families():
    host = FakeHost(listening=[("tcp", 8080, "::")])
    with pytest.raises(ConflictError):
        alloc([{"container_port": 80, "host_port": 8080}], host=host)


def test_our_own_previous_mapping_is_not_a_listening_conflict():
    host = FakeHost(listening=[("tcp", 8080, None)])
    assert alloc([{"container_port": 80, "host_port": 8080}], host=host,
                 previous=[m(8080)]) == [m(8080)]


def test_default_host_binding_applies_when_no_host_ip_is_given():
    out = alloc([{"container_port": 80, "host_port": 8080},
                 {"container_port": 81, "host_port": 8081, "host_ip": "0.0.0.0"}],
                ip6=IP6, default="127.0.0.1")
    assert out == sorted([m(8080, host_ip="127.0.0.1"), m(8081, 81)])
    assert alloc([{"container_port": 80, "host_port": 8080}], ip6=IP6,
                 default="0.0.0.0") == [m(8080), m(8080, family=6, cip="fd00::2")]


def test_family_mismatches_and_internal_networks_are_refused():
    with pytest.raises(ValidationError) as err:
        alloc([{"container_port": 80, "host_ip": "2001:db8::1"}])
    assert err.value.field == "ports[0].host_ip"
    with pytest.raises(ValidationError, match="no address"):
        alloc([{"container_port": 80}], ip4=None)
    with pytest.raises(ValidationError, match="internal"):
        alloc([{"container_port": 80}], internal=True)
    with pytest.raises(ValidationError):
        alloc([{"container_port": 80}], default="not-an-ip")
    assert alloc([], internal=True) == []


def test_proc_helpers():
    assert parse_port_list("8080, 9000-9002,,x") == {8080, 9000, 9001, 9002}
    assert _hex_ip("0100007F") == "127.0.0.1"
    mapped = ipaddress.ip_address(_hex_ip("0000000000000000FFFF00000100007F"))
    assert mapped.ipv4_mapped == ipaddress.ip_address("127.0.0.1")
    assert _hex_ip("B80D0120000000000000000001000000") == "2001:db8::1"
