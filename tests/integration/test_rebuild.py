"""A network rebuild (``force: true``) never loses configuration and is all or nothing,
observed with packets (ping, TCP through the published port, dig) and the kernel."""
import pytest

from engine_helpers import HostEngine
from harness import eventually, greeters, tcp_answer
from snapshot import store_rows
from test_bad_input import full_snapshot
from ansible_collections.cnm.core.plugins.module_utils.errors import CnmError

BRIDGE = "com.docker.network.bridge.name"
ICC = "com.docker.network.bridge.enable_icc"
MTU = "com.docker.network.driver.mtu"
SUBNET = "10.96.0.0/24"


def dig(host, sandbox, name):
    out = host.sandbox_run(sandbox, ["dig", "+short", "+time=1", "+tries=2",
                                     "@127.0.0.11", name], check=False)
    return out.stdout.split() if out.returncode == 0 else None


@pytest.fixture
def site(host):
    """Network app with an explicit subnet and gateway, labels, MTU 1400, ICC off; web
    (static address, alias, port 80 published as 8096) and db (allocated address)."""
    eng = HostEngine(host, firewall_backend="nftables")
    eng.network(name="app", labels={"team": "a"},
                ipam={"config": [{"subnet": SUBNET, "gateway": "10.96.0.254",
                                  "ip_range": "10.96.0.0/25"}]},
                driver_options={BRIDGE: "br-rb", ICC: "false", MTU: "1400"})
    eng.endpoint(network="app", sandbox="web", ipv4_address="10.96.0.10", aliases=["www"])
    eng.endpoint(network="app", sandbox="db", aliases=["database"])
    eng.port_mapping(sandbox="web", ports=[{"container_port": 80, "host_port": 8096}])
    return host, eng


def endpoints(eng):
    info = eng.network_info(name="app").data["networks"][0]
    return {c["Name"]: (c["IPv4Address"], c["MacAddress"]) for c in info["Containers"].values()}


def works(host):
    """The old network as users see it: ICC off (no sandbox-to-sandbox), the gateway,
    the published port and the names."""
    return {"gateway": host.ping("10.96.0.254", sandbox="db"),
            "port": tcp_answer(host, "127.0.0.1", 8096),
            "www": dig(host, "db", "www"), "database": dig(host, "web", "database")}


def test_internal_with_published_ports_fails_with_nothing_changed(site):
    host, eng = site
    before = full_snapshot(host)
    with pytest.raises(CnmError) as err:
        eng.network(name="app", internal=True, force=True)
    assert err.value.field == "internal" and "web" in str(err.value)
    assert full_snapshot(host) == before


def test_a_rebuild_keeps_every_option_address_mac_alias_and_port(site):
    host, eng = site
    before = endpoints(eng)
    with greeters(host, [80], sandbox="web", name="web"):
        res = eng.network(name="app", driver_options={BRIDGE: "br-rb2"}, force=True)
        assert res.changed
        net = res.data["network"]
        assert net["IPAM"]["Config"] == [{"Subnet": SUBNET, "Gateway": "10.96.0.254",
                                          "IPRange": "10.96.0.0/25"}]
        assert net["Labels"] == {"team": "a"}
        assert net["Options"][ICC] == "false" and net["Options"][MTU] == "1400"
        assert endpoints(eng) == before
        links = {link["ifname"]: link for link in host.ip_json("link")}
        assert "br-rb" not in links and links["br-rb2"]["mtu"] == 1400
        assert tcp_answer(host, "127.0.0.1", 8096) == "hello from web 80"
        assert eventually(lambda: dig(host, "db", "www") == ["10.96.0.10"])
        assert host.ping("10.96.0.254", sandbox="db")
        assert not host.ping("10.96.0.10", sandbox="db")  # ICC still off
    assert not eng.network(name="app", driver_options={BRIDGE: "br-rb2"}).changed


def test_a_fault_half_way_through_a_rebuild_leaves_the_old_network_working(
        site, monkeypatch):
    host, eng = site
    with greeters(host, [80], sandbox="web", name="web"):
        working = works(host)
        assert working["port"] == "hello from web 80" and working["www"] == ["10.96.0.10"]
        rows = store_rows(host)
        for point in ("rebuild-old-network-removed", "rebuild-endpoints-joined"):
            monkeypatch.setenv("CNM_FAULT_RAISE", point)
            with pytest.raises(CnmError) as err:
                eng.network(name="app", driver_options={BRIDGE: "br-rb3"}, force=True)
            assert "fault injected at %s" % point in str(err.value)
            monkeypatch.delenv("CNM_FAULT_RAISE")
            assert store_rows(host) == rows, point
            assert works(host) == working, point
            links = {link["ifname"] for link in host.ip_json("link")}
            assert "br-rb" in links and "br-rb3" not in links
        check = HostEngine(host, check_mode=True, firewall_backend="nftables")
        assert not check.network(name="app").changed  # no drift left behind
