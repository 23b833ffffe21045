"""Docker parity and safety, observed in the kernel and with packets: the bridge's MAC
is pinned, published ports need a firewall, and keys not given in an ``ipam.config``
entry are not compared."""
import subprocess

import pytest

from engine_helpers import HostEngine
from ansible_collections.cnm.core.plugins.module_utils.errors import CnmError


def _bridge(host, name):
    return {link["ifname"]: link for link in host.ip_json("link")}[name]


def test_the_bridge_mac_stays_when_the_lower_mac_port_leaves(host):
    """A bridge left to itself takes its lowest port's MAC: when that port left, the
    MAC changed and the other sandboxes' ARP entry for the gateway went stale."""
    eng = HostEngine(host)
    eng.network(name="app", ipam={"config": [{"subnet": "10.78.0.0/24"}]},
                driver_options={"com.docker.network.bridge.name": "br-mac"})
    assert _bridge(host, "br-mac")["address"] == "02:42:0a:4e:00:01"  # Docker's derivation
    eng.endpoint(network="app", sandbox="low", mac_address="02:00:00:00:00:01")
    eng.endpoint(network="app", sandbox="high", mac_address="0e:00:00:00:00:02")
    assert host.ping("10.78.0.1", sandbox="high")  # the gateway's MAC is in its ARP cache
    pinger = host.popen(["ping", "-n", "-c", "30", "-i", "0.1", "-W", "1", "10.78.0.1"],
                        sandbox="high", stdout=subprocess.PIPE)
    eng.endpoint(network="app", sandbox="low", state="absent")
    out, dummy = pinger.communicate(timeout=30)
    assert _bridge(host, "br-mac")["address"] == "02:42:0a:4e:00:01"
    assert b" 0% packet loss" in out, out.decode()
    assert not eng.network(name="app").changed


def test_a_bridge_mac_changed_by_hand_is_drift(host):
    eng = HostEngine(host)
    eng.network(name="app", ipam={"config": [{"subnet": "10.79.0.0/24"}]},
                driver_options={"com.docker.network.bridge.name": "br-drift"})
    host.run(["ip", "link", "set", "br-drift", "address", "0a:00:00:00:00:09"])
    check = HostEngine(host, check_mode=True).network(name="app")
    assert check.changed and any("MAC" in a for a in check.actions)
    assert eng.network(name="app").changed
    assert _bridge(host, "br-drift")["address"] == "02:42:0a:4f:00:01"
    assert not eng.network(name="app").changed


def test_publishing_ports_without_a_firewall_is_refused(host):
    """``firewall_backend: none`` forwards nothing: a mapping would be a lie."""
    eng = HostEngine(host, firewall_backend="none")
    eng.network(name="app", ipam={"config": [{"subnet": "10.80.0.0/24"}]})
    eng.endpoint(network="app", sandbox="web")
    with pytest.raises(CnmError) as err:
        eng.port_mapping(sandbox="web", ports=[{"container_port": 80, "host_port": 8080}])
    assert err.value.field == "firewall_backend"
    assert eng.sandbox_info(name="web").data["sandboxes"][0]["Networks"]["app"]["Ports"] == {}
    # withdrawing nothing is fine without a firewall
    assert not eng.port_mapping(sandbox="web", state="absent").changed


def test_a_pool_entry_that_repeats_only_its_subnet_is_not_a_change(host):
    """community.docker's own tests: keys not given in an ipam.config entry are kept."""
    eng = HostEngine(host)
    full = {"subnet": "10.81.0.0/24", "gateway": "10.81.0.254",
            "ip_range": "10.81.0.128/25", "aux_addresses": {"router": "10.81.0.253"}}
    eng.network(name="app", ipam={"config": [full]})
    again = eng.network(name="app", ipam={"config": [{"subnet": "10.81.0.0/24"}]})
    assert not again.changed, again.actions
    cfg = again.data["network"]["IPAM"]["Config"][0]
    assert cfg["Gateway"] == "10.81.0.254" and cfg["IPRange"] == "10.81.0.128/25"
    assert cfg["AuxiliaryAddresses"] == {"router": "10.81.0.253"}
    # a key that is given still counts
    with pytest.raises(CnmError) as err:
        eng.network(name="app", ipam={"config": [{"subnet": "10.81.0.0/24",
                                                   "ip_range": "10.81.0.0/25"}]})
    assert err.value.field == "ipam.config[subnet=10.81.0.0/24].ip_range"
