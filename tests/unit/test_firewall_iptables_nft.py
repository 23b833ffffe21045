"""Withdrawing iptables-nft rules by handle: fields read from nft's JSON listing."""
import pytest

from ansible_collections.cnm.core.plugins.module_utils.errors import KernelError
from ansible_collections.cnm.core.plugins.module_utils.firewall import iptables_nft as N
from ansible_collections.cnm.core.plugins.module_utils.firewall import render_iptables as R
from ansible_collections.cnm.core.plugins.module_utils.firewall.model import (
    NetworkRules,
    PortMapping,
)

NID = "aaaaaaaaaaaa" + "0" * 52

# `nft -j list chain` of rules written by iptables-nft-restore 1.8.9 (expr only):
#   -p tcp -m tcp --dport 8080 -j DNAT ...
#   -d 127.0.0.1/32 -p udp -m udp --dport 5353 -j DNAT ...
#   -p sctp -m sctp --dport 9 -j DNAT ...
#   -d 172.18.0.2/32 -o br-a -p tcp -m tcp --dport 80 -j ACCEPT
#   -d fd00::1/128 -p tcp -m tcp --dport 8080 -j DNAT ... (ip6tables)
COUNTER = {"counter": {"packets": 0, "bytes": 0}}
DNAT = {"xt": {"type": "target", "name": "DNAT"}}


def match(left, right):
    return {"match": {"op": "==", "left": left, "right": right}}


def payload(protocol, field):
    return {"payload": {"protocol": protocol, "field": field}}


TCP_8080 = [match(payload("tcp", "dport"), 8080), COUNTER, DNAT]
UDP_LOCAL = [match(payload("ip", "daddr"), "127.0.0.1"), match(payload("udp", "dport"), 5353),
             COUNTER, DNAT]
SCTP = [match({"meta": {"key": "l4proto"}}, "sctp"), {"xt": {"type": "match", "name": "sctp"}},
        COUNTER, DNAT]
PUB = [match({"meta": {"key": "oifname"}}, "br-a"), match(payload("ip", "daddr"), "172.18.0.2"),
       match(payload("tcp", "dport"), 80), COUNTER, {"accept": None}]
V6 = [match(payload("ip6", "daddr"), "fd00::1"), match(payload("tcp", "dport"), 8080),
      COUNTER, DNAT]


def listing(*exprs):
    return {"nftables": [{"metainfo": {}}, {"chain": {"name": "x"}}]
            + [{"rule": {"handle": 10 + i, "expr": e}} for i, e in enumerate(exprs)]}


def rules(*ports):
    return NetworkRules(network_id=NID, bridge="br-a", subnets=("172.18.0.0/16",),
                        ports=tuple(sorted(ports)))


def pm(hport, cport=80, proto="tcp", host_ip=""):
    return PortMapping(proto, host_ip, hport, "172.18.0.2", cport, 4)


def test_fields_of_the_rules_iptables_nft_writes():
    assert N.rule_fields({"expr": TCP_8080}) == N.dnat_fields(pm(8080))
    assert N.rule_fields({"expr": UDP_LOCAL}) == N.dnat_fields(
        pm(5353, 53, "udp", "127.0.0.1"))
    assert N.rule_fields({"expr": PUB}) == N.pub_fields("br-a", "172.18.0.2", "tcp", 80)
    assert N.rule_fields({"expr": V6}) == N.dnat_fields(
        PortMapping("tcp", "fd00::1", 8080, "fd00::2", 80, 6))
    assert N.rule_fields({"expr": SCTP}) is None, "an xtables match is not readable"


def test_handles_are_found_by_fields_each_rule_once():
    doc = listing(SCTP, TCP_8080, UDP_LOCAL, TCP_8080)
    assert N.find_handles(doc, [N.dnat_fields(pm(8080))]) == [11]
    assert N.find_handles(doc, [N.dnat_fields(pm(8080))] * 2) == [11, 13]
    with pytest.raises(KernelError, match="no rule"):
        N.find_handles(doc, [N.dnat_fields(pm(8081))])


def test_deletions_of_a_withdrawn_mapping_and_its_target():
    old, new = rules(pm(8080), pm(8081, 81)), rules(pm(8081, 81))
    assert N.deletions(old, new, 4) == [
        ("ip", "nat", "CNM-DN-aaaaaaaaaaaa", N.dnat_fields(pm(8080))),
        ("ip", "filter", "CNM-PUB-aaaaaaaaaaaa", N.pub_fields("br-a", "172.18.0.2", "tcp", 80))]
    assert N.deletions(old, new, 6) == []
    assert N.deletions(rules(pm(9, 9, "sctp")), rules(), 4) is None, "sctp: iptables-restore"
    # the appends are left to iptables-restore, the deletes are not in its script
    assert "-D " not in R.plan_fast(old, new, 4, deletes=False)
    assert "-D " in R.plan_fast(old, new, 4)


class Runner:
    def __init__(self, chains):
        self.chains = chains

    def list_json(self, what):
        return self.chains.get(what)


def test_delete_script_lists_each_chain_once_and_deletes_by_handle():
    old, new = rules(pm(8080)), rules()
    runner = Runner({"chain ip nat CNM-DN-aaaaaaaaaaaa": listing(UDP_LOCAL, TCP_8080),
                     "chain ip filter CNM-PUB-aaaaaaaaaaaa": listing(PUB)})
    assert N.delete_script(runner, N.deletions(old, new, 4)).splitlines() == [
        "delete rule ip filter CNM-PUB-aaaaaaaaaaaa handle 10",
        "delete rule ip nat CNM-DN-aaaaaaaaaaaa handle 11"]
    with pytest.raises(KernelError, match="missing"):
        N.delete_script(Runner({}), N.deletions(old, new, 4))
