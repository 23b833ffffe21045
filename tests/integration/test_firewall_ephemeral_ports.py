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


def test_conntrack_entries_of_a_mapping_are_deleted_through_netlink(host):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    host.run("ip link add dummyx type veth peer name dummyy && "
             "ip addr add 10.66.0.1/24 dev dummyx && ip link set dummyx up && "
             "ip link set dummyy up")
    host.run("nft add table ip t && nft add chain ip t out "
             "'{ type nat hook output priority -100; }' && "
             "nft add rule ip t out udp dport 5353 dnat to 10.66.0.2:53")
    mapping = PortMapping("udp", "", 5353, "10.66.0.2", 53, 4)
    other = PortMapping("udp", "", 5354, "10.66.0.2", 53, 4)
    with in_netns(host.path):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(b"x", ("10.66.0.1", 5353))
        s.close()
        assert conntrack._flush_netlink([other]) == 0
        assert conntrack._flush_netlink([mapping]) == 1
        assert conntrack.flush_mappings([mapping]) == 0
