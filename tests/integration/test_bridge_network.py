"""Bridge networks and endpoints, observed in the kernel and with packets."""
import pytest

from engine_helpers import HostEngine
from ansible_collections.cnm.core.plugins.module_utils.errors import CnmError


def _addr(host, sandbox, ifname="eth0"):
    for link in host.ip_json("addr show dev %s" % ifname, sandbox=sandbox):
        for a in link["addr_info"]:
            if a["family"] == "inet":
                return a["local"]
    return None


def test_two_sandboxes_on_one_bridge_ping_each_other(host):
    eng = HostEngine(host)
    res = eng.network(name="app", ipam={"config": [{"subnet": "10.77.0.0/24"}]})
    assert res.changed
    bridge = "br-" + res.data["network"]["Id"][:12]
    links = {l["ifname"]: l for l in host.ip_json("link")}
    assert bridge in links
    a = eng.endpoint(network="app", sandbox="a").data["endpoint"]
    b = eng.endpoint(network="app", sandbox="b").data["endpoint"]
    assert a["IPAddress"] == "10.77.0.2" and b["IPAddress"] == "10.77.0.3"
    assert _addr(host, "a") == "10.77.0.2"
    assert host.ping("10.77.0.3", sandbox="a")
    assert host.ping("10.77.0.2", sandbox="b")
    assert host.ping("10.77.0.2") and host.ping("10.77.0.3")
    # MAC derived from IP
    link = host.ip_json("link show dev eth0", sandbox="a")[0]
    assert link["address"] == "02:42:0a:4d:00:02"
    # second run: nothing changes
    assert not eng.network(name="app", ipam={"config": [{"subnet": "10.77.0.0/24"}]}).changed
    assert not eng.endpoint(network="app", sandbox="a").changed


def test_none_and_host_networks(host):
    eng = HostEngine(host)
    eng.endpoint(network="none", sandbox="iso")
    links = host.ip_json("link", sandbox="iso")
    assert [l["ifname"] for l in links] == ["lo"]
    host.run("ip link add dummyveth type veth peer name dummyveth2")
    eng.endpoint(network="host", sandbox="hostbox")
    names = {l["ifname"] for l in host.ip_json("link", sandbox="hostbox")}
    assert {"dummyveth", "dummyveth2"} <= names
    with pytest.raises(CnmError, match="predefined"):
        eng.network(name="host", state="absent")
    with pytest.raises(CnmError, match="predefined"):
        eng.network(name="none", state="absent")


def test_static_ip_and_mac_are_honoured(host):
    eng = HostEngine(host)
    eng.network(name="n1", ipam={"config": [{"subnet": "10.78.0.0/24"}]})
    ep = eng.endpoint(network="n1", sandbox="s", ipv4_address="10.78.0.50",
                      mac_address="02:AA:bb:cc:dd:ee").data["endpoint"]
    assert ep["IPAddress"] == "10.78.0.50"
    assert _addr(host, "s") == "10.78.0.50"
    assert host.ip_json("link show dev eth0", sandbox="s")[0]["address"] == "02:aa:bb:cc:dd:ee"
    assert not eng.endpoint(network="n1", sandbox="s", ipv4_address="10.78.0.50",
                            mac_address="02:aa:bb:cc:dd:ee").changed


def test_check_mode_predicts_and_creates_nothing(host):
    chk = HostEngine(host, check_mode=True)
    res = chk.network(name="app", ipam={"config": [{"subnet": "10.79.0.0/24"}]})
    assert res.changed
    res = chk.endpoint(network="app", sandbox="x")
    assert res.changed  # the network would exist by then in a real run
    assert [l["ifname"] for l in host.ip_json("link")] == ["lo"]
    assert host.sandboxes() == []


def test_a_bridge_port_has_no_ipv6_address_of_its_own(host):
    """The host end of an endpoint's veth is a bridge port: it makes no IPv6 link-local
    address (``addrgenmode none``), so no DAD and no routes of its own in the host's
    table, while the sandbox's side of an IPv6 network still gets its addresses."""
    eng = HostEngine(host)
    eng.network(name="app", ipam={"config": [{"subnet": "10.77.3.0/24"}]})
    eng.network(name="six", enable_ipv6=True,
                ipam={"config": [{"subnet": "10.77.4.0/24"}, {"subnet": "fd00:77:4::/64"}]})
    eng.endpoint(network="app", sandbox="a")
    eng.endpoint(network="six", sandbox="b")
    ports = [l for l in host.ip_json("-d link") if l["ifname"].startswith("veth")]
    assert len(ports) == 2
    for port in ports:
        assert "UP" in port["flags"], port
        assert port["inet6_addr_gen_mode"] == "none", port
        assert not [a for l in host.ip_json("-6 addr show dev %s" % port["ifname"])
                    for a in l["addr_info"]]
    inside = [a["local"] for a in host.ip_json("-6 addr show dev eth0", sandbox="b")[0]
              ["addr_info"]]
    assert "fd00:77:4::2" in inside, inside
    assert host.ping("fd00:77:4::1", sandbox="b")
