"""macvlan / ipvlan networks and IPv6 on bridges."""
import ipaddress
import subprocess

import pytest

from engine_helpers import HostEngine
from harness import connect
from ansible_collections.cnm.core.plugins.module_utils.errors import CnmError


def _kernel_has(kind):
    """Probe in a throwaway namespace (never on the real host) whether ``kind`` links work."""
    proc = subprocess.run(["unshare", "--net", "sh", "-c",
                           "ip link add p0 type veth peer name p1 && "
                           "ip link add probe link p0 type %s" % kind], capture_output=True,
                          check=False)
    return proc.returncode == 0


def test_macvlan_sandbox_reaches_a_neighbour_on_the_parent_lan(make_host):
    h1, h2 = make_host("mv1"), make_host("mv2")
    connect(h1, h2, "192.168.250.1", "192.168.250.2", name="lan")
    eng = HostEngine(h1)
    eng.network(name="mv", driver="macvlan", driver_options={"parent": "lan0"},
                ipam={"config": [{"subnet": "192.168.250.0/24",
                                  "gateway": "192.168.250.2"}]})
    ep = eng.endpoint(network="mv", sandbox="m1", ipv4_address="192.168.250.10")
    assert ep.data["endpoint"]["IPAddress"] == "192.168.250.10"
    links = h1.ip_json("-d link show dev eth0", sandbox="m1")
    assert links[0]["linkinfo"]["info_kind"] == "macvlan"
    assert h1.ping("192.168.250.2", sandbox="m1")
    assert not eng.endpoint(network="mv", sandbox="m1", ipv4_address="192.168.250.10").changed
    eng.endpoint(network="mv", sandbox="m1", state="absent")
    eng.network(name="mv", state="absent")


def test_macvlan_without_parent_is_refused(host):
    with pytest.raises(CnmError, match="driver_options.parent"):
        HostEngine(host).network(name="mv", driver="macvlan")


@pytest.mark.skipif(not _kernel_has("ipvlan"), reason="ipvlan is not available in this kernel")
def test_ipvlan_sandbox_gets_its_address(make_host):
    h1, h2 = make_host("iv1"), make_host("iv2")
    connect(h1, h2, "192.168.251.1", "192.168.251.2", name="lan")
    eng = HostEngine(h1)
    eng.network(name="iv", driver="ipvlan", driver_options={"parent": "lan0"},
                ipam={"config": [{"subnet": "192.168.251.0/24", "gateway": "192.168.251.2"}]})
    eng.endpoint(network="iv", sandbox="i1")
    assert h1.ping("192.168.251.2", sandbox="i1")


def test_ipv6_bridge_network(host):
    eng = HostEngine(host)
    net = eng.network(name="v6", enable_ipv6=True,
                      ipam={"config": [{"subnet": "10.85.0.0/24"},
                                       {"subnet": "fd00:85::/64"}]}).data["network"]
    assert {c["Subnet"] for c in net["IPAM"]["Config"]} == {"10.85.0.0/24", "fd00:85::/64"}
    a = eng.endpoint(network="v6", sandbox="a").data["endpoint"]
    b = eng.endpoint(network="v6", sandbox="b", ipv6_address="fd00:85::99").data["endpoint"]
    assert a["GlobalIPv6Address"] == "fd00:85::2"
    assert b["GlobalIPv6Address"] == "fd00:85::99"
    assert host.ping("fd00:85::99", sandbox="a")
    assert host.ping("fd00:85::2")
    routes = host.ip_json("-6 route show default", sandbox="a")
    assert routes and routes[0]["gateway"] == "fd00:85::1"
    assert not eng.endpoint(network="v6", sandbox="b", ipv6_address="fd00:85::99").changed


def test_ipv6_subnet_is_chosen_when_none_is_given(host):
    eng = HostEngine(host)
    net = eng.network(name="auto6", enable_ipv6=True).data["network"]
    versions = sorted(":" in c["Subnet"] for c in net["IPAM"]["Config"])
    assert versions == [False, True]
    [v6] = [c for c in net["IPAM"]["Config"] if ":" in c["Subnet"]]
    subnet = ipaddress.ip_network(v6["Subnet"])
    # the chosen subnet is in the kernel: the gateway on the bridge, an address of it
    # in each sandbox, and the two sandboxes talk over it
    bridge = host.ip_json("-6 addr show dev br-%s" % net["Id"][:12])[0]
    assert v6["Gateway"] in [a["local"] for a in bridge["addr_info"]]
    a = eng.endpoint(network="auto6", sandbox="a").data["endpoint"]["GlobalIPv6Address"]
    b = eng.endpoint(network="auto6", sandbox="b").data["endpoint"]["GlobalIPv6Address"]
    for sandbox, address in (("a", a), ("b", b)):
        eth0 = host.ip_json("-6 addr show dev eth0", sandbox=sandbox)[0]
        assert address in [i["local"] for i in eth0["addr_info"]
                           if ipaddress.ip_address(i["local"]) in subnet], eth0
    assert host.ping(b, sandbox="a") and host.ping(a, sandbox="b")
    assert host.ping(a)
