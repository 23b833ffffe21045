"""Firewall backends' life cycle on the real kernel: what stays, what goes, drift.

Removing the last network leaves nothing of ours (``nft list ruleset`` and
``iptables-save`` both checked) but the user's own rules in CNM-USER, which survive
every operation, and never touches other owners' tables and chains; rules removed by
hand are reported by ``check`` and put back by ``restore``; every option combination of
the golden files is accepted by the kernel and reads back as in sync.
"""
import itertools
import json

import pytest

from harness import in_netns
from test_firewall_traffic import BACKENDS, H1_LAN, H2_LAN

from ansible_collections.cnm.core.plugins.module_utils.firewall import get_backend
from ansible_collections.cnm.core.plugins.module_utils.firewall.iptables import (
    IptablesBackend,
)
from ansible_collections.cnm.core.plugins.module_utils.firewall.model import (
    NetworkRules,
    PortMapping,
)

pytestmark = pytest.mark.integration


def ruleset(host):
    """Everything both firewall front-ends show in ``host``."""
    return "\n".join(host.run(cmd, check=False).stdout for cmd in
                     ("nft list ruleset", "iptables-save", "ip6tables-save"))


def rule_handles(host):
    """{(family, table, chain, handle)} of every nft rule in ``host``."""
    doc = json.loads(host.run("nft -j -a list ruleset").stdout)
    return {(r["family"], r["table"], r["chain"], r["handle"])
            for r in (i["rule"] for i in doc["nftables"] if "rule" in i)}


def published_lab(lab):
    net = lab.network("a", "172.30.1.0/24", "fd30:1::/64")
    s1 = lab.sandbox(net, 2)
    lab.serve(s1.host, 80)
    net.publish(("tcp", "", 8080, s1, 80), ("udp", "127.0.0.1", 5353, s1, 53),
                ("tcp", "", 8080, s1, 80, 6))
    assert lab.talk(lab.h2, H1_LAN, 8080) == H2_LAN
    return net, s1


def test_removing_every_network_leaves_nothing_of_ours_and_keeps_other_owners(lab):
    lab.h1.run("nft add table inet other && "
               "nft add chain inet other input '{ type filter hook input priority 0; }' && "
               "nft add rule inet other input tcp dport 22 accept")
    lab.h1.run("iptables -N DOCKER && iptables -A DOCKER -j RETURN && "
               "iptables -t nat -N DOCKER && iptables -t nat -A DOCKER -j RETURN")
    a, dummy = published_lab(lab)
    b = lab.network("b", "172.30.2.0/24", icc=False)
    c = lab.network("c", "172.30.3.0/24", internal=True)
    assert "cnm" in ruleset(lab.h1).lower()
    for net in (a, b, c):
        lab.remove(net)
    after = ruleset(lab.h1)
    assert "table inet cnm" not in after
    assert "CNM" not in after and "cnm:" not in after
    assert "tcp dport 22 accept" in after
    assert "-A DOCKER -j RETURN" in lab.h1.run("iptables-save -t filter").stdout
    assert "-A DOCKER -j RETURN" in lab.h1.run("iptables-save -t nat").stdout


def user_rule(lab, source, action="add"):
    """Add (or delete) the user's own rule in CNM-USER dropping traffic from
    ``source``; returns how the rule reads in ``ruleset``."""
    if lab.backend_name == "nftables":
        if action == "add":
            lab.h1.run("nft add rule inet cnm CNM-USER ip saddr %s drop" % source)
        else:
            doc = json.loads(lab.h1.run("nft -j -a list chain inet cnm CNM-USER").stdout)
            [handle] = [i["rule"]["handle"] for i in doc["nftables"] if "rule" in i]
            lab.h1.run("nft delete rule inet cnm CNM-USER handle %d" % handle)
        return "ip saddr %s drop" % source
    flag = "-A" if action == "add" else "-D"
    lab.h1.run("iptables %s CNM-USER -s %s/32 -j DROP" % (flag, source))
    return "-A CNM-USER -s %s/32 -j DROP" % source


def ours_left(lab):
    """What of ours the kernel of h1 holds: nft chains of table inet cnm, and the
    CNM chain declarations and rules of iptables-save."""
    doc = json.loads(lab.h1.run("nft -j list table inet cnm", check=False).stdout
                     or '{"nftables": []}')
    nft = sorted(i["chain"]["name"] for i in doc["nftables"] if "chain" in i)
    nft += sorted(name for i in doc["nftables"] for kind in ("set", "map") if kind in i
                  for name in [i[kind]["name"]])
    saved = lab.h1.run("iptables-save; ip6tables-save").stdout.splitlines()
    return nft, [line for line in saved if "CNM" in line]


def test_user_chain_keeps_its_rules_while_networks_change_and_after_the_last(lab):
    """The user's own rules survive every operation, the removal of the last network
    included (Docker never deletes DOCKER-USER): they are evaluated again, first, as
    soon as a network exists again."""
    a, s1 = published_lab(lab)
    marker = user_rule(lab, H2_LAN)
    assert lab.talk(lab.h2, H1_LAN, 8080) == "", "the user's rule is evaluated"
    b = lab.network("b", "172.30.2.0/24")
    a.publish(("tcp", "", 9090, s1, 80))
    a.unpublish(8080)
    lab.remove(b)
    lab.in_h1(lab.backend.restore, [a.rules()])
    lab.in_h1(lab.backend.restore_network, a.rules())
    a.opts["icc"] = False
    lab.apply(a)
    assert marker in ruleset(lab.h1)
    assert lab.talk(lab.h2, H1_LAN, 9090) == ""
    assert lab.talk(lab.h1, H1_LAN, 9090) == H1_LAN, "the port itself works"
    lab.remove(a)
    assert marker in ruleset(lab.h1), "the last network took the user's rule along"
    nft, ipt = ours_left(lab)
    if lab.backend_name == "nftables":
        assert (nft, ipt) == (["CNM-USER"], []), "only the user's chain is left"
    else:
        assert (nft, ipt) == ([], [":CNM-USER - [0:0]", marker]), \
            "only the user's chain is left"
    # the next network hooks the user's chain again, first
    lab.apply(a)
    assert lab.talk(lab.h2, H1_LAN, 9090) == ""
    user_rule(lab, H2_LAN, "delete")
    assert lab.talk(lab.h2, H1_LAN, 9090) == H2_LAN
    # and a user chain left empty goes with the last network: nothing of ours stays
    lab.remove(a)
    assert ours_left(lab) == ([], [])
    assert "CNM" not in ruleset(lab.h1) and "table inet cnm" not in ruleset(lab.h1)


def test_restore_with_no_networks_keeps_the_user_chain(lab):
    a, dummy = published_lab(lab)
    marker = user_rule(lab, "192.0.2.99")
    lab.in_h1(lab.backend.restore, [])
    assert marker in ruleset(lab.h1)
    nft, ipt = ours_left(lab)
    assert "CNM-USER" in (nft if lab.backend_name == "nftables" else " ".join(ipt))
    assert not [c for c in nft if c != "CNM-USER"], nft
    assert [line for line in ipt if "CNM-USER" not in line] == [], ipt


def test_a_user_rule_using_our_bridges_set_survives_the_last_network(lab):
    if lab.backend_name != "nftables":
        pytest.skip("nft sets are an nftables backend matter")
    a, s1 = published_lab(lab)
    lab.h1.run("nft add rule inet cnm CNM-USER iifname @bridges ip daddr %s drop" % H2_LAN)
    assert not lab.ping(s1.host, H2_LAN), "the user's rule is evaluated"
    lab.remove(a)
    assert "iifname @bridges ip daddr %s drop" % H2_LAN in ruleset(lab.h1)
    assert ours_left(lab) == (["CNM-USER", "bridges"], []), "the set it uses stays, empty"
    lab.in_h1(lab.backend.restore, [])
    lab.apply(a)
    assert lab.in_h1(lab.backend.check, a.rules()) == []
    assert not lab.ping(s1.host, H2_LAN)
    assert lab.talk(lab.h1, H1_LAN, 8080) == H1_LAN


def test_rules_deleted_by_hand_are_reported_and_restored(lab):
    net, s1 = published_lab(lab)
    rules = net.rules()
    assert lab.in_h1(lab.backend.check, rules) == []
    short = net.id[:12]
    if lab.backend_name == "nftables":
        lab.h1.run("nft flush chain inet cnm fwd-in-%s" % short)
        lab.h1.run("nft delete element inet cnm dnat4-any '{ tcp . 8080 }'")
    else:
        lab.h1.run("iptables -F CNM-FI-%s" % short)
        lab.h1.run("iptables -t nat -D CNM-DN-%s -p tcp -m tcp --dport 8080 -j DNAT "
                   "--to-destination %s:80" % (short, s1.ip4))
    drift = lab.in_h1(lab.backend.check, rules)
    assert len(drift) >= 2, drift
    assert any("8080" in d for d in drift), drift
    assert lab.talk(lab.h2, H1_LAN, 8080) == ""
    lab.in_h1(lab.backend.restore, [rules])
    assert lab.in_h1(lab.backend.check, rules) == []
    assert lab.talk(lab.h2, H1_LAN, 8080) == H2_LAN


def test_restore_after_flush_ruleset_brings_every_network_back(lab):
    a, s1 = published_lab(lab)
    b = lab.network("b", "172.30.2.0/24")
    s3 = lab.sandbox(b, 2)
    lab.h1.run("nft flush ruleset")
    assert lab.in_h1(lab.backend.check, a.rules())
    lab.in_h1(lab.backend.restore, [a.rules(), b.rules()])
    assert lab.in_h1(lab.backend.check, a.rules()) == []
    assert lab.in_h1(lab.backend.check, b.rules()) == []
    assert lab.talk(lab.h2, H1_LAN, 8080) == H2_LAN
    assert not lab.ping(s3.host, s1.ip4), "isolation is back too"


def test_restore_drops_networks_that_are_gone(lab):
    a, dummy = published_lab(lab)
    b = lab.network("b", "172.30.2.0/24")
    lab.in_h1(lab.backend.restore, [a.rules()])
    assert b.id[:12] not in ruleset(lab.h1)
    assert lab.in_h1(lab.backend.check, a.rules()) == []
    lab.in_h1(lab.backend.restore, [])
    assert "CNM" not in ruleset(lab.h1) and "table inet cnm" not in ruleset(lab.h1)


def test_apply_reconciles_when_the_kernel_lost_the_previous_rules(lab):
    net, s1 = published_lab(lab)
    lab.h1.run("nft flush ruleset")
    net.publish(("tcp", "", 9090, s1, 80))  # old state is gone: the delta cannot apply
    assert lab.in_h1(lab.backend.check, net.rules()) == []
    assert lab.talk(lab.h2, H1_LAN, 9090) == H2_LAN


def test_adding_a_port_leaves_existing_rules_in_place(lab):
    net, s1 = published_lab(lab)
    before = rule_handles(lab.h1)
    net.publish(("tcp", "", 9090, s1, 81))
    after = rule_handles(lab.h1)
    assert before <= after, "no rule was deleted or re-created"
    if lab.backend_name == "nftables":
        assert after == before, "a port is set/map elements only"
    else:
        assert len(after - before) == 2, "one DNAT and one ACCEPT rule"
    net.unpublish(9090)
    assert rule_handles(lab.h1) == before


def test_withdrawn_ports_leave_exactly_the_rules_of_the_others(lab, monkeypatch):
    """IPv4, 127.0.0.1-bound UDP and IPv6 mappings withdrawn one by one: the kernel is
    back in sync each time, and the port stops answering. On nf_tables-variant
    iptables the rules go by handle, not through ``iptables-restore -D``."""
    net, s1 = published_lab(lab)
    scripts = []
    restore = IptablesBackend._restore

    def recording_restore(self, family, script):
        scripts.append(script)
        return restore(self, family, script)
    monkeypatch.setattr(IptablesBackend, "_restore", recording_restore)
    for port, proto in ((5353, "udp"), (8080, "tcp")):
        net.unpublish(port, proto)
        assert lab.in_h1(lab.backend.check, net.rules()) == []
    assert lab.talk(lab.h2, H1_LAN, 8080) == ""
    if lab.backend_name == "iptables":
        saved = lab.h1.run("iptables-save -t nat; ip6tables-save -t nat").stdout
        assert "-j DNAT" not in saved
        if lab.backend.variant == "nft":
            assert not any("-D " in script for script in scripts), scripts


def test_changing_network_options_in_place(lab):
    net = lab.network("a", "172.30.1.0/24")
    s1, s2 = lab.sandbox(net, 2), lab.sandbox(net, 3)
    assert lab.ping(s1.host, s2.ip4)
    net.opts["icc"] = False
    lab.apply(net)
    assert lab.in_h1(lab.backend.check, net.rules()) == []
    assert not lab.ping(s1.host, s2.ip4)
    assert lab.ping(s1.host, H2_LAN)
    net.opts.update(icc=True, internal=True)
    lab.apply(net)
    assert lab.in_h1(lab.backend.check, net.rules()) == []
    assert lab.ping(s1.host, s2.ip4)
    assert not lab.ping(s1.host, H2_LAN)


def all_combinations(tag):
    """The golden files' option combinations (see tests/unit/test_firewall_render_golden)."""
    out = []
    for n, (icc, internal, ipv6, masquerade, with_ports) in enumerate(
            itertools.product((False, True), repeat=5)):
        if internal and with_ports:
            continue
        cip4, cip6 = "172.31.%d.2" % n, "fd31:%x::2" % n
        ports = []
        if with_ports:
            ports = [PortMapping("tcp", "", 8000 + n, cip4, 80, 4),
                     PortMapping("udp", "127.0.0.1", 8000 + n, cip4, 53, 4),
                     PortMapping("sctp", "192.0.2.10", 8000 + n, cip4, 9000, 4)]
            if ipv6:
                ports += [PortMapping("tcp", "", 8000 + n, cip6, 80, 6),
                          PortMapping("tcp", "2001:db8::10", 8000 + n, cip6, 443, 6)]
        subnets = ("172.31.%d.0/24" % n,) + (("fd31:%x::/64" % n,) if ipv6 else ())
        out.append(NetworkRules(network_id=("%02x" % n) * 32, bridge="br-c%02d%s" % (n, tag),
                                subnets=subnets, icc=icc, masquerade=masquerade,
                                internal=internal, ports=tuple(sorted(ports))))
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_option_combination_applies_and_reads_back_in_sync(host, backend):
    fw = get_backend(backend)
    nets = all_combinations(host.suffix[:4])
    with in_netns(host.path):
        for rules in nets:
            fw.apply(None, rules)
        for rules in nets:
            assert fw.check(rules) == [], rules
        before = ruleset(host)
        for rules in nets:  # a create run again (adjacent subnets all around) is a no-op
            fw.apply(None, rules)
        assert ruleset(host) == before
        for rules in nets:
            fw.apply(rules, None)
    after = ruleset(host)
    assert "CNM" not in after and "table inet cnm" not in after


def test_auto_picks_nftables_when_it_works(host):
    with in_netns(host.path):
        assert get_backend("auto").name == "nftables"


def test_iptables_legacy_variant_round_trip(host):
    """The backend follows the variant it is given (here: legacy xtables)."""
    fw = IptablesBackend(variant="legacy")
    rules = all_combinations(host.suffix[:4])[-1]
    with in_netns(host.path):
        fw.apply(None, rules)
        assert fw.check(rules) == []
        assert "CNM-FORWARD" in host.run("iptables-legacy-save").stdout
        assert "CNM" not in host.run("iptables-nft-save").stdout
        fw.apply(rules, None)
    assert "CNM" not in host.run("iptables-legacy-save; ip6tables-legacy-save").stdout


def test_sysctls_the_rules_need_are_checked_and_restored(lab):
    net = lab.network("a", "172.30.1.0/24", icc=False)
    s1 = lab.sandbox(net, 2)
    lab.serve(s1.host, 80)
    net.publish(("tcp", "127.0.0.1", 8081, s1, 80))
    lab.h1.run("sysctl -qw net.ipv4.conf.%s.route_localnet=0" % net.bridge)
    drift = lab.in_h1(lab.backend.check, net.rules())
    assert drift == ["sysctl net.ipv4.conf.%s.route_localnet is 0, expected 1" % net.bridge]
    assert lab.talk(lab.h1, "127.0.0.1", 8081) == ""
    lab.in_h1(lab.backend.restore_network, net.rules())
    assert lab.in_h1(lab.backend.check, net.rules()) == []
    assert lab.talk(lab.h1, "127.0.0.1", 8081) == net.gateway4


def test_legacy_xtables_rules_beside_ours_are_warned_about(host):
    with in_netns(host.path):
        assert get_backend("nftables").warnings() == []
    host.run("iptables-legacy -A FORWARD -j ACCEPT")
    with in_netns(host.path):
        [warning] = get_backend("nftables").warnings()
        assert "iptables-legacy holds 1 rule(s)" in warning
        assert get_backend("iptables").warnings() == [warning]
        assert IptablesBackend(variant="legacy").warnings() == []
