"""nft rendering beyond the golden files: deltas stay small, reading back, drift."""
import pytest

from ansible_collections.cnm.core.plugins.module_utils.errors import ValidationError
from ansible_collections.cnm.core.plugins.module_utils.firewall import render_nftables as R
from ansible_collections.cnm.core.plugins.module_utils.firewall.model import (
    NetworkRules,
    PortMapping,
)

NID = "0123456789ab" + "cd" * 26
BR = "br-0123456789ab"


def rules(ports=(), **kw):
    base = dict(network_id=NID, bridge=BR, subnets=("172.18.0.0/16", "fd00:1::/64"))
    base.update(kw)
    return NetworkRules(ports=tuple(sorted(ports)), **base)


def pm(hport, cport=80, proto="tcp", host_ip="", family=4):
    cip = "172.18.0.2" if family == 4 else "fd00:1::2"
    return PortMapping(proto, host_ip, hport, cip, cport, family)


def lines(script):
    return script.splitlines()


DNAT4_ANY = ("add map inet cnm dnat4-any { type inet_proto . inet_service : "
             "ipv4_addr . inet_service; elements = { %s } }")
DNAT4 = ("add map inet cnm dnat4 { type ipv4_addr . inet_proto . inet_service : "
         "ipv4_addr . inet_service; elements = { %s } }")
PUB4 = "add set inet cnm pub4 { type ipv4_addr . inet_proto . inet_service; elements = { %s } }"


def test_adding_a_port_is_only_element_adds():
    old = rules([pm(8080)])
    new = rules([pm(8080), pm(9090, 90)])
    assert lines(R.render_update(old, new)) == [
        DNAT4_ANY % "tcp . 9090 : 172.18.0.2 . 90",
        PUB4 % "172.18.0.2 . tcp . 90",
    ]


def test_element_adds_are_set_blocks_one_per_set():
    """Set blocks, not ``add element``: libnftables reads no chains or interval elements
    of the table before the batch (see render_nftables' docstring)."""
    new = rules([pm(8080), pm(9090, 90), pm(9091, 91)])
    out = lines(R.render_update(rules([pm(8080)]), new))
    assert out == [DNAT4_ANY % "tcp . 9090 : 172.18.0.2 . 90, tcp . 9091 : 172.18.0.2 . 91",
                   PUB4 % "172.18.0.2 . tcp . 90, 172.18.0.2 . tcp . 91"]
    old = rules([pm(8080)])
    for script in (R.render_create(new), R.render_update(old, new),
                   R.render_update(old, rules([pm(8080)], icc=False)),
                   R.render_reconcile(old, new, None), R.render_restore([new])):
        assert "add element" not in script and "add rule" not in script, script


def test_the_delta_does_not_grow_with_the_number_of_mappings():
    many = [pm(10000 + i, 1000 + i) for i in range(200)]
    old, new = rules(many), rules(many + [pm(9090, 90, host_ip="127.0.0.1")])
    assert lines(R.render_update(old, new)) == [
        DNAT4 % "127.0.0.1 . tcp . 9090 : 172.18.0.2 . 90",
        PUB4 % "172.18.0.2 . tcp . 90",
    ]


def test_removing_a_port_keeps_a_container_port_still_published_by_another():
    old = rules([pm(8080), pm(8081)])
    new = rules([pm(8080)])
    assert lines(R.render_update(old, new)) == [
        "delete element inet cnm dnat4-any { tcp . 8081 }"]


def test_retargeting_a_host_port_deletes_then_adds():
    old = rules([pm(8080, 80)])
    new = rules([pm(8080, 81)])
    assert lines(R.render_update(old, new)) == [
        "delete element inet cnm dnat4-any { tcp . 8080 }",
        "delete element inet cnm pub4 { 172.18.0.2 . tcp . 80 }",
        DNAT4_ANY % "tcp . 8080 : 172.18.0.2 . 81",
        PUB4 % "172.18.0.2 . tcp . 81",
    ]


def test_an_option_change_refills_only_the_chains_it_changes():
    out = lines(R.render_update(rules(), rules(icc=False)))
    assert out == [
        "flush chain inet cnm fwd-out-0123456789ab",
        'add chain inet cnm fwd-out-0123456789ab { '
        'ct state established,related accept comment "cnm:established"; '
        'oifname "br-0123456789ab" drop comment "cnm:no-icc"; '
        'oifname @bridges drop comment "cnm:isolation"; '
        'accept comment "cnm:egress"; }',
    ]
    assert R.render_update(rules(), rules()) == ""


def full_table(user_rules):
    """The ParsedTable of one network's table whose CNM-USER holds ``user_rules``."""
    chains = {name: [] for name, dummy in R.BASE_CHAINS}
    chains.update({c: [] for c in R.net_chain_names(NID[:12])})
    chains[R.CHAIN_USER] = list(user_rules)
    return R.ParsedTable(chains=chains, elements={name: {} for name in R.SETS})


def test_removal_of_the_last_network_deletes_the_table_when_the_user_chain_is_empty():
    assert R.render_teardown(full_table([])) == "delete table inet cnm\n"
    assert R.render_teardown(None) == "", "no table: nothing to do"


def test_removal_of_the_last_network_keeps_the_user_chain_and_its_rules():
    out = lines(R.render_teardown(full_table([None, "mine"])))
    assert "delete table inet cnm" not in out
    assert not any("CNM-USER" in line for line in out), "neither flushed nor deleted"
    ours = [name for name, dummy in R.BASE_CHAINS if name != "CNM-USER"]
    ours += list(R.net_chain_names(NID[:12]))
    assert sorted(line.split()[-1] for line in out
                  if line.startswith("delete chain")) == sorted(ours)
    assert sorted(line.split()[-1] for line in out
                  if line.startswith(("delete set", "delete map"))) == sorted(R.SETS)
    # chains are emptied before sets go (rules use them), sets before chains (verdicts)
    first_set = min(i for i, line in enumerate(out) if line.startswith("delete "))
    assert all(line.startswith("flush chain") for line in out[:first_set])
    # with only the user chain left, a second teardown has nothing to do
    assert R.render_teardown(R.ParsedTable(chains={"CNM-USER": ["mine"]})) == ""


def test_sets_the_user_rules_use_are_emptied_not_deleted():
    doc = {"nftables": [
        {"chain": {"name": "CNM-USER"}},
        {"rule": {"chain": "CNM-USER", "expr": [
            {"match": {"op": "==", "left": {"meta": {"key": "iifname"}},
                       "right": "@bridges"}},
            {"drop": None}]}}]}
    assert R.sets_used(doc) == {"bridges"}
    out = lines(R.render_teardown(full_table(["mine"]), keep_sets=R.sets_used(doc)))
    assert "flush set inet cnm bridges" in out
    assert "delete set inet cnm bridges" not in out
    assert "delete map inet cnm fwd-out" in out


def test_removal_of_one_network_deletes_its_elements_then_its_chains():
    out = lines(R.render_remove(rules([pm(8080)])))
    assert out[0] == 'delete element inet cnm bridges { "br-0123456789ab" }'
    assert "delete element inet cnm dnat4-any { tcp . 8080 }" in out
    assert out[-4:] == ["delete chain inet cnm %s0123456789ab" % p
                        for p in ("fwd-out-", "fwd-in-", "post-", "raw-")]
    assert not any("CNM-USER" in line for line in out)


def test_chains_are_declared_before_sets_in_one_batch():
    out = lines(R.render_create(rules()))
    decls = [i for i, line in enumerate(out) if line.startswith("add chain")
             and (not line.endswith("}") or "policy accept; }" in line)]
    first_set = min(i for i, line in enumerate(out)
                    if line.startswith(("add set", "add map")))
    assert max(decls) < first_set
    refills = [i for i, line in enumerate(out) if line.startswith("add chain")
               and line.endswith("; }") and i not in decls]
    assert refills and min(refills) > first_set, "rules come after every set"
    assert "flush chain inet cnm CNM-USER" not in out


def test_restore_flushes_sets_deletes_stale_network_chains_and_keeps_the_user_chain():
    actual = R.ParsedTable(chains={"CNM-USER": ["mine"], "forward": [],
                                   "prerouting-raw": [],
                                   "fwd-out-aaaaaaaaaaaa": [], "post-aaaaaaaaaaaa": [],
                                   "someone-else": []})
    out = lines(R.render_restore([rules()], actual))
    assert "flush map inet cnm dnat4-any" in out
    assert "delete chain inet cnm fwd-out-aaaaaaaaaaaa" in out
    assert "delete chain inet cnm post-aaaaaaaaaaaa" in out
    assert not any(x in line for line in out for x in ("CNM-USER }", "someone-else",
                                                       "delete chain inet cnm prerouting"))
    out = lines(R.render_restore([], actual))
    assert "delete chain inet cnm post-aaaaaaaaaaaa" in out
    assert not any("CNM-USER" in line or "someone-else" in line for line in out), \
        "with no networks the user chain keeps its rules (and the table stays)"
    assert "delete table inet cnm" not in out
    actual.chains["CNM-USER"] = []
    assert R.render_restore([], actual) == "delete table inet cnm\n"
    assert R.render_restore([], None) == ""


# -- reading back ----------------------------------------------------------------------
def kernel_view(r):
    """The ParsedTable the kernel would show after render_create(r) (built from the
    nft -j shapes: concat lists, prefixes, verdict dicts)."""
    net = R.network_objects(r)
    doc = {"nftables": []}
    for name, dummy in R.BASE_CHAINS:
        doc["nftables"].append({"chain": {"name": name}})
    for chain, comment, dummy in R.BASE_RULES:
        doc["nftables"].append({"rule": {"chain": chain, "comment": comment}})
    for chain, items in net.chains.items():
        doc["nftables"].append({"chain": {"name": chain}})
        for comment, dummy in items:
            doc["nftables"].append({"rule": {"chain": chain, "comment": comment}})

    def js(parts):
        conv = [{"prefix": {"addr": p.split("/")[0], "len": int(p.split("/")[1])}}
                if "/" in p else int(p) if p.isdigit() else p for p in parts]
        return conv[0] if len(conv) == 1 else {"concat": conv}

    for name, (kind, dummy, dummy2) in R.SETS.items():
        elems = []
        for key, value in net.elements.get(name, {}).items():
            if kind == "set":
                elems.append(js(key))
            elif value[0] == "jump":
                elems.append([js(key), {"jump": {"target": value[1]}}])
            else:
                elems.append([js(key), js(value)])
        doc["nftables"].append({kind: {"name": name, "elem": elems}})
    return R.parse_table(doc)


def test_a_table_in_sync_has_no_drift():
    r = rules([pm(8080), pm(5353, 53, "udp", "127.0.0.1"), pm(8080, family=6)])
    assert R.check_network(r, kernel_view(r)) == []


def test_drift_names_missing_rules_elements_and_stale_mappings():
    r = rules([pm(8080)])
    view = kernel_view(r)
    view.chains["fwd-in-0123456789ab"] = []
    del view.elements["dnat4-any"][("tcp", "8080")]
    view.elements["dnat4"][("10.0.0.1", "tcp", "7000")] = ("172.18.0.2", "70")
    view.elements["dnat4"][("10.0.0.1", "tcp", "7001")] = ("10.99.0.2", "70")  # not ours
    problems = R.check_network(r, view)
    assert len(problems) == 3, problems
    assert "fwd-in-0123456789ab has rules []" in problems[0]
    assert "{ tcp . 8080 : 172.18.0.2 . 80 } missing from dnat4-any" in problems[1]
    assert "stale element { 10.0.0.1 . tcp . 7000 : 172.18.0.2 . 70 }" in problems[2]
    assert R.check_network(r, None) == ["nftables: table inet cnm is missing"]


def test_parse_table_normalises_kernel_json():
    doc = {"nftables": [
        {"map": {"name": "raw4", "elem": [[{"prefix": {"addr": "172.18.0.0", "len": 16}},
                                           {"jump": {"target": "raw-x"}}]]}},
        {"map": {"name": "dnat6", "elem": [[{"concat": ["2001:db8::1", "tcp", 80]},
                                            {"concat": ["fd00::2", 8080]}]]}},
        {"set": {"name": "bridges", "elem": ["br-a", {"elem": {"val": "br-b"}}]}},
        {"rule": {"chain": "forward", "expr": []}},
    ]}
    t = R.parse_table(doc)
    assert t.elements["raw4"] == {("172.18.0.0/16",): ("jump", "raw-x")}
    assert t.elements["dnat6"] == {("2001:db8::1", "tcp", "80"): ("fd00::2", "8080")}
    assert set(t.elements["bridges"]) == {("br-a",), ("br-b",)}
    assert t.chains == {"forward": [None]}


@pytest.mark.parametrize("bad", [
    dict(bridge='br"; flush ruleset; "'), dict(bridge="br+"), dict(bridge=""),
    dict(network_id="xyz"), dict(subnets=("not-a-subnet",)),
    dict(internal=True, ports=(pm(8080),)),
    dict(ports=(PortMapping("icmp", "", 1, "172.18.0.2", 1, 4),)),
    dict(ports=(PortMapping("tcp", "", 1, "10.9.9.9", 1, 4),)),
    dict(ports=(PortMapping("tcp", "", 0, "172.18.0.2", 1, 4),)),
    dict(ports=(PortMapping("tcp", "::1", 1, "fd00:1::2", 1, 6),)),
    dict(ports=(PortMapping("tcp", "0.0.0.0", 1, "172.18.0.2", 1, 4),)),
    dict(ports=(PortMapping("tcp", "", 1, "FD00:1::2", 1, 6),)),
])
def test_unsafe_or_incoherent_input_is_refused_before_rendering(bad):
    kw = dict(network_id=NID, bridge=BR, subnets=("172.18.0.0/16", "fd00:1::/64"))
    kw.update(bad)
    with pytest.raises(ValidationError):
        R.render_create(NetworkRules(**kw))
