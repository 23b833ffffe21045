"""Host-port facts read from the simulated host's own namespace, and conntrack flushing
through ctnetlink (no tool), on the real kernel."""
import os
import socket

import pytest

from harness import in_netns

from ansible_collections.cnm.core.plugins.module_utils.errors import ConflictError
from ansible_collections.cnm.core.plugins.module_utils.firewall import conntrack
from ansible_collections.cnm.core.plugins.module_utils.firewall.model import PortMapping
from ansible_collections.cnm.core.plugins.module_utils.ports.allocator import (
    HostPorts,
    allocate_ports,
)
from ansible_collections.cnm.core.plugins.module_utils.ports.spec import parse_ports

pytestmark = pytest.mark.integration


def test_ephemeral_ports_follow_the_namespace_range_reserved_bound_and_published(host):
    host.run("sysctl -qw net.ipv4.ip_local_port_range='41000 41010' "
             "net.ipv4.ip_local_reserved_ports=41000")
    published = [(PortMapping("tcp", "", 41002, "172.18.0.9", 80, 4), "web")]
    with in_netns(host.path):
        listener = socket.socket()
        listener.bind(("0.0.0.0", 41001))
        listener.listen()
        try:
            assert HostPorts().port_range() == (41000, 41010)
            assert 41000 in HostPorts().reserved()
            assert 41001 in HostPorts().bound("tcp")
            out = allocate_ports(parse_ports([{"container_port": "80-81"}]),
                                 "172.18.0.2/16", None, None, published, [])
            assert [m.host_port for m in out] == [41003, 41004]
            with pytest.raises(ConflictError, match="in use on the host"):
                allocate_ports(parse_ports([{"container_port": 80, "host_port": 41001}]),
                               "172.18.0.2/16", None, None, [], [])
        finally:
            listener.close()


def _entries(mapping, family=socket.AF_INET):
    """Original tuples of the entries of ``mapping`` in the calling thread's namespace."""
    return [orig for dummy, orig, reply in conntrack._ctnetlink().dump(family)
            if conntrack._matches(mapping, orig, reply)]


def _nat_lab(host, family, addresses, dnat_rules):
    """A veth pair with ``addresses`` on one end and output DNAT ``dnat_rules`` in an nft
    table of ``family``: datagrams sent to those addresses make conntrack entries."""
    nodad = " nodad" if family == "ip6" else ""
    host.run(" && ".join(["ip link add dummyx type veth peer name dummyy"]
                         + ["ip addr add %s dev dummyx%s" % (a, nodad) for a in addresses]
                         + ["ip link set dummyx up", "ip link set dummyy up"]))
    host.run(" && ".join(["nft add table %s t" % family,
                          "nft add chain %s t out '{ type nat hook output priority -100; }'"
                          % family]
                         + ["nft add rule %s t out %s" % (family, r) for r in dnat_rules]))


@pytest.mark.parametrize("kernel_filter", [True, False], ids=["filtered-flush", "dump"])
def test_conntrack_entries_of_a_mapping_are_deleted_through_netlink(
        host, monkeypatch, kernel_filter):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    monkeypatch.setitem(conntrack._KERNEL_FILTER, "supported", kernel_filter)
    _nat_lab(host, "ip", ["10.66.0.1/24"], ["udp dport 5353 dnat to 10.66.0.2:53",
                                            "udp dport 5354 dnat to 10.66.0.3:53"])
    mapping = PortMapping("udp", "", 5353, "10.66.0.2", 53, 4)
    neighbour = PortMapping("udp", "", 5354, "10.66.0.3", 53, 4)
    other = PortMapping("udp", "", 5354, "10.66.0.2", 53, 4)  # port of one, container of other
    with in_netns(host.path):
        for port in (5353, 5354):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.sendto(b"x", ("10.66.0.1", port))
            s.close()
        assert conntrack._flush_netlink([other]) == 0
        assert len(_entries(mapping)) == 1 and len(_entries(neighbour)) == 1
        deleted = conntrack._flush_netlink([mapping])
        assert _entries(mapping) == [] and len(_entries(neighbour)) == 1
        # a kernel-side filtered flush (Linux >= 6.12) is acknowledged without a count
        assert deleted == (0 if conntrack._KERNEL_FILTER["supported"] else 1)
        assert conntrack.flush_mappings([mapping]) == 0


def test_ipv6_conntrack_entries_are_deleted_exactly(host):
    """IPv6 goes through dump and delete: the kernel's filter compares IPv6 addresses
    inverted (6.18), it would delete the neighbour's entry and keep the mapping's."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    _nat_lab(host, "ip6", ["fd66::1/64", "fd66::10/64"],
             ["ip6 daddr fd66::1 udp dport 5353 dnat to [fd66::2]:53",
              "ip6 daddr fd66::10 udp dport 5353 dnat to [fd66::3]:53"])
    mapping = PortMapping("udp", "", 5353, "fd66::2", 53, 6)
    neighbour = PortMapping("udp", "", 5353, "fd66::3", 53, 6)
    with in_netns(host.path):
        for addr in ("fd66::1", "fd66::10"):
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            s.sendto(b"x", (addr, 5353))
            s.close()
        assert conntrack._flush_netlink([mapping]) == 1
        assert _entries(mapping, socket.AF_INET6) == []
        assert len(_entries(neighbour, socket.AF_INET6)) == 1
