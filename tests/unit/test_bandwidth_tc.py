"""Bandwidth limits: parsing of rates and bursts, and the tc lines planned from what the
kernel reports (netns/tc.py is pure apart from running tc)."""
import pytest

from ansible_collections.cnm.core.plugins.module_utils import validation as V
from ansible_collections.cnm.core.plugins.module_utils.errors import ValidationError
from ansible_collections.cnm.core.plugins.module_utils.netns import tc

NOQUEUE = [{"kind": "noqueue", "handle": "0:", "root": True, "refcnt": 2, "options": {}}]


@pytest.mark.parametrize("text, bits", [
    ("10mbit", 10 ** 7), ("1gbit", 10 ** 9), ("500kbit", 500000), ("1000000", 10 ** 6),
    (2500, 2500), ("1.5Mbit", 1500000), ("10m", 10 ** 7), (" 64 kbit ", 64000),
])
def test_rates(text, bits):
    assert V.rate(text, "r") == bits


@pytest.mark.parametrize("text, size", [
    ("32kb", 32768), ("1mb", 1 << 20), ("65536", 65536), (4096, 4096), ("2k", 2048),
])
def test_sizes(text, size):
    assert V.byte_size(text, "b") == size


def test_bandwidth_normalises_and_defaults_the_burst():
    assert V.bandwidth({"egress_rate": "10mbit", "ingress_rate": None,
                        "egress_burst": None, "ingress_burst": None}) == {
        "egress_rate": 10 ** 7, "egress_burst": 16384}
    assert V.bandwidth({"ingress_rate": "10gbit"}) == {
        "ingress_rate": 10 ** 10, "ingress_burst": 10 ** 10 // 800}
    assert V.bandwidth({}) == {} and V.bandwidth(None) == {}


@pytest.mark.parametrize("value, field", [
    ({"egress_rate": "fast"}, "bandwidth.egress_rate"),
    ({"egress_rate": "0"}, "bandwidth.egress_rate"),
    ({"egress_rate": [1]}, "bandwidth.egress_rate"),
    ({"ingress_rate": "1mbit", "ingress_burst": "1xb"}, "bandwidth.ingress_burst"),
    ({"ingress_rate": "1mbit", "ingress_burst": "10"}, "bandwidth.ingress_burst"),
    ({"egress_burst": "1mb"}, "bandwidth.egress_burst"),
    ({"egress_rate": "100kbit", "egress_burst": "4mb"}, "bandwidth.egress_burst"),
    ({"egress_rate": "100gbit", "egress_burst": "1kb"}, "bandwidth.egress_burst"),
    ({"rate": "1mbit"}, "bandwidth.rate"),
    ("10mbit", "bandwidth"),
])
def test_bad_bandwidth_names_the_field(value, field):
    with pytest.raises(ValidationError) as err:
        V.bandwidth(value)
    assert err.value.field == field


WANT = {"egress_rate": 10 ** 7, "egress_burst": 32768,
        "ingress_rate": 2 * 10 ** 7, "ingress_burst": 65536}


def _applied():
    """What tc -j reports once WANT is applied (bursts read back with tick rounding)."""
    qdiscs = [{"kind": "tbf", "handle": "1:", "root": True,
               "options": {"rate": 2500000, "burst": 65535, "lat": 25000}},
              {"kind": "ingress", "handle": "ffff:", "parent": "ffff:fff1", "options": {}}]
    filters = [{"parent": "ffff:", "kind": "u32"},
               {"parent": "ffff:", "kind": "u32", "options": {"fh": "800:"}},
               {"parent": "ffff:", "kind": "u32", "options": {
                   "fh": "800::800", "actions": [{"kind": "mirred", "to_dev": "cnbabc",
                                                  "mirred_action": "redirect"}]}}]
    ifb = [{"kind": "tbf", "handle": "1:", "root": True,
            "options": {"rate": 1250000, "burst": 32767}}]
    return tc.parse_state(qdiscs, filters, ifb)


def test_plan_from_nothing_is_the_whole_batch():
    lines, drift = tc.plan("vethx", "cnbabc", WANT, tc.parse_state(NOQUEUE, [], None))
    assert lines == [
        "qdisc replace dev vethx root handle 1: tbf rate 20000000bit burst 65536b "
        "latency 25ms",
        "qdisc add dev vethx handle ffff: ingress",
        "filter add dev vethx parent ffff: protocol all prio 1 u32 match u32 0 0 "
        "action mirred egress redirect dev cnbabc",
        "qdisc replace dev cnbabc root handle 1: tbf rate 10000000bit burst 32768b "
        "latency 25ms",
    ]
    assert len(drift) == 3


def test_plan_in_sync_is_empty():
    assert tc.plan("vethx", "cnbabc", WANT, _applied()) == ([], [])


def test_plan_repairs_only_what_differs():
    state = _applied()
    state["ifb_root"] = None                      # the ifb's tbf deleted by hand
    state["root"]["rate"] = 125000                # someone changed the rate
    lines, drift = tc.plan("vethx", "cnbabc", WANT, state)
    assert [line.split(" tbf ")[0] for line in lines] == [
        "qdisc replace dev vethx root handle 1:", "qdisc replace dev cnbabc root handle 1:"]
    assert "1000000bit" in drift[0] and "missing" in drift[1]


def test_plan_redirect_to_a_wrong_device_is_replaced():
    state = _applied()
    state["redirects"] = ["other"]
    lines, dummy = tc.plan("vethx", "cnbabc", WANT, state)
    assert lines == ["filter del dev vethx parent ffff:",
                     "filter add dev vethx parent ffff: protocol all prio 1 u32 match u32 0 0 "
                     "action mirred egress redirect dev cnbabc"]


def test_plan_removal():
    lines, drift = tc.plan("vethx", "cnbabc", {}, _applied())
    assert lines == ["qdisc del dev vethx root", "qdisc del dev vethx ingress"]
    assert len(drift) == 2
    assert tc.plan("vethx", "cnbabc", {}, tc.parse_state(NOQUEUE, [], None)) == ([], [])


def test_ifb_name():
    assert tc.ifb_name("0123456789abcdef") == "cnb01234567"
