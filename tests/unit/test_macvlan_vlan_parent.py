"""macvlan/ipvlan on an 802.1q parent (``parent: eth0.10``): the RTM_NEWLINK bytes of
the VLAN sub-interface and who makes and removes it. The CI kernel has no 8021q, so the
kernel side is a fake here (tests/integration/test_other_drivers.py skips the real one).
"""
import struct

import pytest

from ansible_collections.cnm.core.plugins.module_utils import validation as V
from ansible_collections.cnm.core.plugins.module_utils.drivers.macvlan import MacvlanDriver
from ansible_collections.cnm.core.plugins.module_utils.errors import (KernelError,
                                                                      ValidationError)
from ansible_collections.cnm.core.plugins.module_utils.model import Network
from ansible_collections.cnm.core.plugins.module_utils.netns import rtnl
from ansible_collections.cnm.core.plugins.module_utils.netns.links import Handle


# -- the message -------------------------------------------------------------------------
class CapturingRtnl(rtnl.Rtnl):
    """An Rtnl whose requests are recorded instead of sent (no socket)."""

    def __init__(self):  # noqa: super().__init__ would open a netlink socket
        self.sent = []
        self.seq = 0

    def request(self, msg_type, flags, payload, dump=False):
        self.sent.append((msg_type, flags, payload))
        return []


def _nla(kind, data):
    pad = (4 - (4 + len(data)) % 4) % 4
    return struct.pack("=HH", 4 + len(data), kind) + data + b"\0" * pad


def test_vlan_info_data_bytes():
    assert rtnl.Rtnl.vlan_data(10) == bytes.fromhex("060001000a000000")
    assert rtnl.Rtnl.vlan_data(4094, protocol=0x88A8) == (
        bytes.fromhex("06000100fe0f0000") + bytes.fromhex("0600050088a80000"))
    for bad in (0, 4095, -1):
        with pytest.raises(ValueError):
            rtnl.Rtnl.vlan_data(bad)


def test_rtm_newlink_of_a_vlan_is_exactly_these_bytes():
    fake = CapturingRtnl()
    Handle(fake, "host").add_vlan("eth0.10", 2, 10)
    [(msg_type, flags, payload), _lookup] = fake.sent
    assert msg_type == rtnl.RTM_NEWLINK == 16
    assert flags == rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL
    ifinfomsg = struct.pack("=BxHiII", 0, 0, 0, 1, 1)           # AF_UNSPEC, up
    expected = ifinfomsg + _nla(3, b"eth0.10\0") + _nla(5, struct.pack("=I", 2)) + _nla(
        18 | 0x8000, _nla(1, b"vlan\0") + _nla(2 | 0x8000, _nla(1, struct.pack("=H", 10))))
    assert payload == expected
    assert len(payload) == 16 + 12 + 8 + 28


def test_same_bytes_as_pyroute2_up_to_the_nested_flag():
    pytest.importorskip("pyroute2")
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
    msg = ifinfmsg()
    msg["flags"] = msg["change"] = 1
    msg["attrs"] = [("IFLA_IFNAME", "eth0.10"), ("IFLA_LINK", 2), ("IFLA_LINKINFO", {
        "attrs": [("IFLA_INFO_KIND", "vlan"),
                  ("IFLA_INFO_DATA", {"attrs": [("IFLA_VLAN_ID", 10)]})]})]
    msg.encode()
    theirs = bytes(msg.data)[16:]                                 # without nlmsghdr
    fake = CapturingRtnl()
    Handle(fake, "host").add_vlan("eth0.10", 2, 10)
    ours = bytearray(fake.sent[0][2])
    for offset in (36, 52):  # IFLA_LINKINFO and IFLA_INFO_DATA: pyroute2 omits NLA_F_NESTED
        ours[offset + 3] &= 0x7F
    assert bytes(ours) == theirs


# -- the name ----------------------------------------------------------------------------
@pytest.mark.parametrize("name, parsed", [
    ("eth0.10", ("eth0", 10)), ("bond0.4094", ("bond0", 4094)), ("en.p1.1", ("en.p1", 1)),
    ("eth0", None), ("br.lan", None),
])
def test_vlan_parent_names(name, parsed):
    assert V.vlan_parent(name) == parsed


@pytest.mark.parametrize("name", ["eth0.0", "eth0.4095", "eth0.99999", "eth0.010",
                                  "..10", "a/b.10"])
def test_bad_vlan_parent_names(name):
    with pytest.raises(ValidationError) as err:
        V.vlan_parent(name)
    assert err.value.field == "driver_options.parent"


# -- the decisions -----------------------------------------------------------------------
class FakeHost:
    """The host's links by name; records what was made and removed."""

    def __init__(self, *names):
        self.links = {name: i + 1 for i, name in enumerate(names)}
        self.made, self.removed = [], []

    def index(self, name):
        return self.links.get(name)

    def add_vlan(self, name, parent, vid):
        self.made.append((name, parent, vid))
        self.links[name] = len(self.links) + 1

    def delete_link(self, name):
        self.removed.append(name)
        return self.links.pop(name, None) is not None


class FakeNetlink:
    def __init__(self, host):
        self.host = host


def _net(name, parent="eth0.10", created=""):
    return Network(id=name * 8, name=name, driver="macvlan", created=created,
                   options={"parent": parent})


def test_missing_vlan_parent_is_made_and_recorded_before_it_is_made():
    host = FakeHost("lo", "eth0")
    net = _net("a")
    MacvlanDriver().validate(net, FakeNetlink(host))
    assert net.created_parent and host.made == []    # the intent is saved with the record
    MacvlanDriver().setup_network(net, FakeNetlink(host))
    assert host.made == [("eth0.10", 2, 10)]
    MacvlanDriver().setup_network(net, FakeNetlink(host))   # idempotent
    assert len(host.made) == 1
    assert MacvlanDriver().teardown_network(net, FakeNetlink(host)) == []
    assert host.removed == ["eth0.10"]


def test_an_existing_parent_is_used_and_never_removed():
    host = FakeHost("lo", "eth0", "eth0.10")
    net = _net("b")
    MacvlanDriver().validate(net, FakeNetlink(host))
    MacvlanDriver().setup_network(net, FakeNetlink(host))
    assert not net.created_parent and host.made == []
    MacvlanDriver().teardown_network(net, FakeNetlink(host))
    assert host.removed == []


@pytest.mark.parametrize("parent, message", [
    ("eth1.10", "the link of VLAN 10"), ("eth0.5000", "outside 1..4094"),
    ("nope", "does not exist"),
])
def test_refused_before_anything_is_made(parent, message):
    host = FakeHost("lo", "eth0")
    net = _net("c", parent)
    with pytest.raises(ValidationError, match=message) as err:
        MacvlanDriver().validate(net, FakeNetlink(host))
    assert err.value.field == "driver_options.parent"
    assert host.made == [] and not net.created_parent


def test_lower_link_gone_at_setup_is_a_kernel_error():
    host = FakeHost("lo")
    with pytest.raises(KernelError):
        MacvlanDriver().setup_network(_net("d"), FakeNetlink(host))


def test_handover_the_parent_goes_with_the_last_network_using_it():
    maker = _net("a", created="2026-01-01")
    maker.created_parent = True
    later, older = _net("c", created="2026-03-01"), _net("b", created="2026-02-01")
    elsewhere = _net("e", parent="eth0.20")
    bridge = Network(id="f" * 8, name="f", driver="bridge", options={"parent": "eth0.10"})
    # others still use it: it stays, the oldest user inherits the record
    assert MacvlanDriver.parent_handover(maker, [maker, later, older, elsewhere]) == (
        False, older)
    # nobody else: it goes
    assert MacvlanDriver.parent_handover(maker, [maker, elsewhere, bridge]) == (True, None)
    # a network that did not make it never removes it
    assert MacvlanDriver.parent_handover(later, [maker]) == (False, None)


def test_endpoint_repairs_a_vlan_parent_this_network_made():
    host = FakeHost("lo", "eth0")
    net = _net("a")
    net.created_parent = True
    MacvlanDriver().setup_network(net, FakeNetlink(host))
    host.delete_link("eth0.10")                     # removed by hand: drift
    assert MacvlanDriver().network_drift(net, FakeNetlink(host)) == [
        "parent interface eth0.10 is missing"]
    MacvlanDriver().setup_network(net, FakeNetlink(host))
    assert host.index("eth0.10") is not None
