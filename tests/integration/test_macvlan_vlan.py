"""macvlan on an 802.1q parent (``parent: lan0.10``), as Docker does it: the VLAN
sub-interface is made when missing and removed with the last network that made it.
The CI kernel has no 8021q: the tests that need it skip there (the bytes and the
decisions are unit-tested in tests/unit/test_macvlan_vlan_parent.py)."""
import subprocess

import pytest

from engine_helpers import HostEngine
from harness import connect
from snapshot import kernel_state, store_rows
from ansible_collections.cnm.core.plugins.module_utils.errors import CnmError


def _kernel_has_vlan():
    """Probe in a throwaway namespace whether 802.1q links can be made."""
    proc = subprocess.run(["unshare", "--net", "sh", "-c",
                           "ip link add p0 type veth peer name p1 && "
                           "ip link add link p0 name p0.10 type vlan id 10"],
                          capture_output=True, check=False)
    return proc.returncode == 0


HAS_VLAN = _kernel_has_vlan()
needs_vlan = pytest.mark.skipif(not HAS_VLAN, reason="8021q not available in this kernel")
SUBNET = {"config": [{"subnet": "192.168.252.0/24", "gateway": "192.168.252.2"}]}


def _lan(make_host):
    h1, h2 = make_host("vl1"), make_host("vl2")
    connect(h1, h2, "192.168.249.1", "192.168.249.2", name="lan")
    HostEngine(h1).sandbox(name="warm", state="absent")  # store + predefined networks
    return h1, h2


def _links(host):
    return {link["ifname"]: link for link in host.ip_json("-d link")}


@pytest.mark.parametrize("parent, message", [
    ("lan0.0", "outside 1..4094"), ("lan0.4095", "outside 1..4094"),
    ("lan0.010", "leading zeros"), ("nosuch.10", "the link of VLAN 10"),
])
def test_bad_vlan_parent_is_refused_with_nothing_made(make_host, parent, message):
    h1, _h2 = _lan(make_host)
    before = (kernel_state(h1), store_rows(h1))
    with pytest.raises(CnmError, match=message) as err:
        HostEngine(h1).network(name="mv", driver="macvlan", driver_options={"parent": parent},
                               ipam=SUBNET)
    assert str(err.value).startswith("driver_options.parent")
    assert (kernel_state(h1), store_rows(h1)) == before


@pytest.mark.skipif(HAS_VLAN, reason="this kernel has 8021q")
def test_without_8021q_the_creation_fails_and_leaves_nothing(make_host):
    h1, _h2 = _lan(make_host)
    before = (kernel_state(h1), store_rows(h1))
    with pytest.raises(CnmError, match="add vlan lan0.10"):
        HostEngine(h1).network(name="mv", driver="macvlan",
                               driver_options={"parent": "lan0.10"}, ipam=SUBNET)
    assert (kernel_state(h1), store_rows(h1)) == before


@needs_vlan
def test_missing_vlan_parent_is_made_used_and_removed_with_its_network(make_host):
    h1, h2 = _lan(make_host)
    h2.run("ip link add link lan0 name lan0.10 type vlan id 10 && ip link set lan0.10 up "
           "&& ip addr add 192.168.252.2/24 dev lan0.10")
    eng = HostEngine(h1)
    eng.network(name="mv", driver="macvlan", driver_options={"parent": "lan0.10"},
                ipam=SUBNET)
    vlan = _links(h1)["lan0.10"]
    assert vlan["linkinfo"]["info_kind"] == "vlan"
    assert vlan["linkinfo"]["info_data"]["id"] == 10
    assert not eng.network(name="mv", driver="macvlan",
                           driver_options={"parent": "lan0.10"}, ipam=SUBNET).changed
    eng.endpoint(network="mv", sandbox="m1", ipv4_address="192.168.252.10")
    assert h1.ping("192.168.252.2", sandbox="m1")
    eng.endpoint(network="mv", sandbox="m1", state="absent")
    eng.network(name="mv", state="absent")
    assert "lan0.10" not in _links(h1)


@needs_vlan
def test_an_existing_vlan_parent_is_left_alone(make_host):
    h1, _h2 = _lan(make_host)
    h1.run("ip link add link lan0 name lan0.20 type vlan id 20 && ip link set lan0.20 up")
    eng = HostEngine(h1)
    eng.network(name="mv", driver="macvlan", driver_options={"parent": "lan0.20"},
                ipam=SUBNET)
    eng.network(name="mv", state="absent")
    assert "lan0.20" in _links(h1)


@needs_vlan
def test_the_parent_stays_while_another_network_uses_it(make_host):
    h1, _h2 = _lan(make_host)
    eng = HostEngine(h1)
    eng.network(name="a", driver="macvlan", driver_options={"parent": "lan0.10"},
                ipam=SUBNET)
    eng.network(name="b", driver="macvlan", driver_options={"parent": "lan0.10"},
                ipam={"config": [{"subnet": "192.168.253.0/24"}]})
    eng.network(name="a", state="absent")
    assert "lan0.10" in _links(h1)
    eng.network(name="b", state="absent")
    assert "lan0.10" not in _links(h1)
