"""iptables rendering beyond the golden files: deltas, planning from a saved state,
teardown, drift. An in-memory iptables-restore --noflush stands in for the kernel."""
import pytest

from ansible_collections.cnm.core.plugins.module_utils.firewall import render_iptables as R
from ansible_collections.cnm.core.plugins.module_utils.firewall.model import (
    NetworkRules,
    PortMapping,
)

NID_A = "aaaaaaaaaaaa" + "0" * 52
NID_B = "bbbbbbbbbbbb" + "0" * 52


def rules(nid=NID_A, bridge="br-a", subnet="172.18.0.0/16", ports=(), **kw):
    return NetworkRules(network_id=nid, bridge=bridge, subnets=(subnet,),
                        ports=tuple(sorted(ports)), **kw)


def pm(hport, cport=80, proto="tcp", host_ip="", cip="172.18.0.2"):
    return PortMapping(proto, host_ip, hport, cip, cport, 4)


BUILTIN = {"filter": ["INPUT", "FORWARD", "OUTPUT"],
           "nat": ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
           "raw": ["PREROUTING", "OUTPUT"]}


def empty_host():
    return R.SavedFamily({t: {c: [] for c in chains} for t, chains in BUILTIN.items()})


def restore(saved, script):
    """Apply an iptables-restore --noflush script to ``saved`` like the tool does
    (per table: all or nothing; errors raise)."""
    table = None
    work = None
    for line in script.splitlines():
        if line.startswith("*"):
            table = line[1:]
            work = {c: list(r) for c, r in saved.tables.setdefault(table, {}).items()}
        elif line == "COMMIT":
            saved.tables[table] = work
        elif line.startswith(":"):
            work[line[1:].split()[0]] = []
        else:
            op, chain, *rest = line.split(" ", 2)
            spec = rest[0] if rest else ""
            if op == "-A":
                work[chain].append(spec)
            elif op == "-I":
                pos, spec = spec.split(" ", 1)
                work[chain].insert(int(pos) - 1, spec)
            elif op == "-D":
                work[chain].remove(spec)          # ValueError: no such rule
            elif op == "-F":
                work[chain] = []
            elif op == "-X":
                assert not work[chain], "chain not empty"
                assert not any(r.endswith("-j " + chain) for rs in work.values()
                               for r in rs), "chain still referenced"
                del work[chain]
            else:
                raise AssertionError(line)
    return saved


def test_creation_on_an_empty_host_reads_back_in_sync():
    r = rules(ports=[pm(8080), pm(5353, 53, "udp", "127.0.0.1")])
    saved = restore(empty_host(), R.render_create(r, 4))
    assert R.check_network(r, saved, 4) == []
    assert saved.chain("filter", "FORWARD") == ["-j CNM-FORWARD"]


def test_a_port_is_two_appended_lines_and_its_removal_two_deletes():
    old = rules(ports=[pm(8080)])
    new = rules(ports=[pm(8080), pm(9090, 90)])
    assert R.plan_fast(old, new, 4).splitlines() == [
        "*filter",
        "-A CNM-PUB-aaaaaaaaaaaa -d 172.18.0.2/32 -o br-a -p tcp -m tcp --dport 90 -j ACCEPT",
        "COMMIT",
        "*nat",
        "-A CNM-DN-aaaaaaaaaaaa -p tcp -m tcp --dport 9090 -j DNAT "
        "--to-destination 172.18.0.2:90",
        "COMMIT",
    ]
    assert [line for line in R.plan_fast(new, old, 4).splitlines()
            if line.startswith("-")] == [
        "-D CNM-PUB-aaaaaaaaaaaa -d 172.18.0.2/32 -o br-a -p tcp -m tcp --dport 90 -j ACCEPT",
        "-D CNM-DN-aaaaaaaaaaaa -p tcp -m tcp --dport 9090 -j DNAT "
        "--to-destination 172.18.0.2:90",
    ]
    assert R.plan_fast(old, old, 4) == ""
    assert R.plan_fast(old, new, 6) == "", "no IPv6 mapping changed"


def test_a_second_network_keeps_the_user_chain_and_the_first_network():
    a, b = rules(ports=[pm(8080)]), rules(NID_B, "br-b", "172.19.0.0/16")
    saved = restore(empty_host(), R.render_create(a, 4))
    saved.tables["filter"]["CNM-USER"].append("-s 192.0.2.1/32 -j DROP")
    script = R.plan_apply(saved, None, b, 4)
    assert ":CNM-USER" not in script, "declaring CNM-USER again would flush it"
    restore(saved, script)
    assert saved.chain("filter", "CNM-USER") == ["-s 192.0.2.1/32 -j DROP"]
    assert R.check_network(a, saved, 4) == [] and R.check_network(b, saved, 4) == []
    assert saved.chain("filter", "CNM-FORWARD")[:2] == list(R.FORWARD_HEAD)
    assert saved.chain("filter", "FORWARD") == ["-j CNM-FORWARD"], "jump inserted once"


def test_removing_one_network_then_the_last_leaves_nothing():
    a, b = rules(ports=[pm(8080)]), rules(NID_B, "br-b", "172.19.0.0/16", icc=False)
    saved = empty_host()
    restore(saved, R.plan_apply(saved, None, a, 4))
    restore(saved, R.plan_apply(saved, None, b, 4))
    restore(saved, R.plan_apply(saved, a, None, 4))
    assert R.check_network(b, saved, 4) == []
    assert "CNM-FO-aaaaaaaaaaaa" not in saved.tables["filter"]
    assert not any("br-a" in line for t in saved.tables.values() for rs in t.values()
                   for line in rs)
    restore(saved, R.plan_apply(saved, b, None, 4))
    assert saved.tables == empty_host().tables


@pytest.mark.parametrize("how", ["apply", "restore"])
def test_the_user_chain_keeps_its_rules_when_the_last_network_goes(how):
    a = rules(ports=[pm(8080)])
    saved = restore(empty_host(), R.render_create(a, 4))
    saved.tables["filter"]["CNM-USER"].append("-s 192.0.2.1/32 -j DROP")
    script = (R.plan_apply(saved, a, None, 4) if how == "apply"
              else R.plan_restore(saved, [], 4))
    assert "CNM-USER" not in script, "neither flushed nor deleted"
    restore(saved, script)
    kept = empty_host()
    kept.tables["filter"]["CNM-USER"] = ["-s 192.0.2.1/32 -j DROP"]
    assert saved.tables == kept.tables, "only the user's chain and rules are left"
    restore(saved, R.plan_apply(saved, None, a, 4))
    assert R.check_network(a, saved, 4) == []
    assert saved.chain("filter", "CNM-USER") == ["-s 192.0.2.1/32 -j DROP"]
    assert saved.chain("filter", "CNM-FORWARD")[0] == "-j CNM-USER", "hooked again"


def test_planning_skips_what_is_already_there_and_deletes_only_what_exists():
    a = rules(ports=[pm(8080)])
    saved = restore(empty_host(), R.render_create(a, 4))
    assert R.plan_apply(saved, None, a, 4) == "", "in sync: nothing to do"
    saved.tables["nat"]["CNM-DN-aaaaaaaaaaaa"] = []          # deleted by hand
    saved.tables["nat"]["CNM-DNAT"] = []
    fixed = restore(saved, R.plan_apply(saved, a, rules(ports=[pm(9090)]), 4))
    assert fixed.chain("nat", "CNM-DN-aaaaaaaaaaaa") == [
        "-p tcp -m tcp --dport 9090 -j DNAT --to-destination 172.18.0.2:80"]
    assert fixed.chain("nat", "CNM-DNAT") == ["-j CNM-DN-aaaaaaaaaaaa"]


def test_changing_options_rewrites_the_network_chain():
    a = rules()
    saved = restore(empty_host(), R.render_create(a, 4))
    closed = rules(icc=False, internal=True)
    restore(saved, R.plan_apply(saved, a, closed, 4))
    assert saved.chain("filter", "CNM-FO-aaaaaaaaaaaa") == [
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT", "-o br-a -j DROP",
        "-j DROP"]
    assert not any("MASQUERADE" in line for line in saved.chain("nat", "CNM-POSTROUTING"))
    assert R.check_network(closed, saved, 4) == []


def test_restore_rebuilds_everything_and_drops_unknown_network_chains():
    a, b = rules(ports=[pm(8080)]), rules(NID_B, "br-b", "172.19.0.0/16")
    saved = empty_host()
    for r in (a, b):
        restore(saved, R.plan_apply(saved, None, r, 4))
    saved.tables["filter"]["CNM-USER"].append("-j RETURN")
    saved.tables["filter"]["CNM-PUB"] = []
    restore(saved, R.plan_restore(saved, [a], 4))
    assert R.check_network(a, saved, 4) == []
    assert "CNM-FO-bbbbbbbbbbbb" not in saved.tables["filter"]
    assert saved.chain("filter", "CNM-USER") == ["-j RETURN"]
    restore(saved, R.plan_restore(saved, [], 4))
    kept = empty_host()
    kept.tables["filter"]["CNM-USER"] = ["-j RETURN"]
    assert saved.tables == kept.tables, "everything of ours goes but the user's rules"
    saved.tables["filter"]["CNM-USER"] = []
    restore(saved, R.plan_restore(saved, [], 4))
    assert saved.tables == empty_host().tables, "an empty user chain goes too"


def test_drift_reports_missing_and_stale_lines():
    a = rules(ports=[pm(8080)])
    saved = restore(empty_host(), R.render_create(a, 4))
    saved.tables["filter"]["CNM-FI-aaaaaaaaaaaa"] = []
    saved.tables["nat"]["CNM-DN-aaaaaaaaaaaa"].append(
        "-p tcp -m tcp --dport 7000 -j DNAT --to-destination 172.18.0.2:70")
    saved.tables["nat"]["CNM-DNAT"].append(
        "-p tcp -m tcp --dport 7001 -j DNAT --to-destination 10.9.9.9:70")  # not ours
    problems = R.check_network(a, saved, 4)
    assert len(problems) == 2, problems
    assert "CNM-FI-aaaaaaaaaaaa has []" in problems[0]
    assert "stale rule '-A CNM-DN-aaaaaaaaaaaa -p tcp -m tcp --dport 7000" in problems[1]
    saved.tables["nat"]["PREROUTING"] = []
    assert any("PREROUTING" in p for p in R.check_network(a, saved, 4))


def test_ipv6_lines():
    r = NetworkRules(network_id=NID_A, bridge="br-a", subnets=("fd00::/64",),
                     ports=(PortMapping("tcp", "2001:db8::1", 8443, "fd00::2", 443, 6),))
    net = R.network_objects(r, 6)
    assert net.shared[("nat", "CNM-DNAT")] == ["-j CNM-DN-aaaaaaaaaaaa"]
    assert net.own[("nat", "CNM-DN-aaaaaaaaaaaa")] == [
        "-d 2001:db8::1/128 -p tcp -m tcp --dport 8443 -j DNAT "
        "--to-destination [fd00::2]:443"]
    assert not any("127.0.0.0/8" in line for lines in net.shared.values()
                   for line in lines)
    assert ("nat", "CNM-POSTROUTING") not in R.network_objects(r, 4).shared
    assert ("nat", "CNM-DN-aaaaaaaaaaaa") not in R.network_objects(r, 4).own


def test_port_chains_compare_as_sets():
    a = rules(ports=[pm(8080), pm(8081, 81)])
    saved = restore(empty_host(), R.render_create(a, 4))
    saved.tables["nat"]["CNM-DN-aaaaaaaaaaaa"].reverse()   # appended in another order
    assert R.check_network(a, saved, 4) == []
    assert R.plan_apply(saved, a, a, 4) == ""


def test_parse_save_reads_chains_and_rules():
    text = "\n".join(["# Generated by iptables-save", "*nat", ":PREROUTING ACCEPT [0:0]",
                      ":CNM-DNAT - [0:0]", "-A PREROUTING -j CNM-DNAT", "COMMIT"])
    saved = R.parse_save(text)
    assert saved.tables == {"nat": {"PREROUTING": ["-j CNM-DNAT"], "CNM-DNAT": []}}
    assert saved.chain("filter", "FORWARD") is None


@pytest.mark.parametrize("name,ours", [("CNM-FORWARD", True), ("CNM-USER", True),
                                       ("CNM-FO-aaaaaaaaaaaa", True), ("DOCKER", False),
                                       ("CNMX", False)])
def test_only_our_prefix_is_ours(name, ours):
    assert R.is_ours(name) is ours
