#!/usr/bin/env python
"""200 DNAT rules written by each way there is: ours against iptables tools,
``nft -j -f -`` and python-iptables.

Backs the README's firewall figures (200 DNAT rules: python-iptables 85-96 ms against
iptables-restore 3-4 ms, "about 25 times slower"). Each variant, in a fresh throwaway
simulated host, writes one chain of 200 ``tcp dport P DNAT to 172.18.x.y:80`` rules:

- ours: the engine's backends (``NftablesBackend``, ``IptablesBackend``) applying a
  network with 200 published ports in one call (their rules include the network's
  other chains too);
- ``iptables-legacy-restore --noflush``, ``iptables-nft-restore --noflush``;
- ``nft -j -f -`` (one JSON batch);
- python-iptables (a throwaway venv under /tmp; it always writes legacy xtables), one
  commit per rule (its default, autocommit) and one commit for all;
- one ``iptables`` exec per rule (the nf_tables variant).

Run as root: ``.venv/bin/python bench/bench_peers_firewall.py [--rules 200]
[--rounds 3] [--keep]``. Prints one JSON object, then a table.
"""
import argparse
import json
import os
import re
import sys
import time

from peerlib import (ensure_debian, loadavg, median_ms, pip_version, report, run_json,
                     skipped, throwaway_venv)

from harness import SimHost, in_netns

from ansible_collections.cnm.core.plugins.module_utils.firewall.iptables import (  # noqa: E402
    IptablesBackend)
from ansible_collections.cnm.core.plugins.module_utils.firewall.model import (  # noqa: E402
    NetworkRules, PortMapping)
from ansible_collections.cnm.core.plugins.module_utils.firewall.nftables import (  # noqa: E402
    NftablesBackend)


def target(i):
    return "172.18.%d.%d" % (i // 200, 2 + i % 200)


def restore_text(rules):
    lines = ["*nat", ":CNMB - [0:0]"]
    lines += ["-A CNMB -p tcp -m tcp --dport %d -j DNAT --to-destination %s:80"
              % (20000 + i, target(i)) for i in range(rules)]
    return "\n".join(lines + ["COMMIT", ""])


def nft_json(rules):
    cmds = [{"add": {"table": {"family": "ip", "name": "cnmb"}}},
            {"add": {"chain": {"family": "ip", "table": "cnmb", "name": "dnat"}}}]
    for i in range(rules):
        cmds.append({"add": {"rule": {"family": "ip", "table": "cnmb", "chain": "dnat", "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                       "right": 20000 + i}},
            {"dnat": {"addr": target(i), "port": 80}}]}}})
    return json.dumps({"nftables": cmds})


PYTHON_IPTABLES = r"""
import json, sys, time
import iptc
n, batched = int(sys.argv[1]), sys.argv[2] == "batched"
start = time.perf_counter()
table = iptc.Table(iptc.Table.NAT)
if batched:
    table.autocommit = False
chain = table.create_chain("CNMB")
for i in range(n):
    rule = iptc.Rule()
    rule.protocol = "tcp"
    match = rule.create_match("tcp")
    match.dport = str(20000 + i)
    tgt = rule.create_target("DNAT")
    tgt.to_destination = "172.18.%d.%d:80" % (i // 200, 2 + i % 200)
    chain.append_rule(rule)
if batched:
    table.commit()
    table.autocommit = True
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def count_rules(host, tool, rules):
    """How many of the 200 host ports ``tool`` (iptables-legacy-save, nft list ruleset)
    shows: ours keeps ports as map elements, not one rule each."""
    text = host.run(tool).stdout
    return len(set(re.findall(r"\b(2\d{4})\b", text))
               & {str(20000 + i) for i in range(rules)})


def timed_cmd(host, argv, text=None):
    start = time.perf_counter()
    host.run(argv, input=text)
    return time.perf_counter() - start


def ours(host, backend, rules):
    nid = os.urandom(32).hex()
    bridge = "br-" + nid[:12]
    host.run("ip link add %s type bridge && ip addr add 172.18.0.1/16 dev %s && "
             "ip link set %s up" % (bridge, bridge, bridge))
    ports = tuple(sorted(PortMapping("tcp", "", 20000 + i, target(i), 80, 4)
                         for i in range(rules)))
    with in_netns(host.path):
        fw = backend()
        fw.apply(None, NetworkRules(network_id=nid, bridge=bridge,
                                    subnets=("172.18.0.0/16",)))      # warm up, no ports
        start = time.perf_counter()
        fw.apply(None, NetworkRules(network_id=nid, bridge=bridge, subnets=("172.18.0.0/16",),
                                    ports=ports))
        return time.perf_counter() - start


def variants(rules, python_iptables):
    """name -> (function(host) -> seconds, how to count the rules made)."""
    out = {
        "ours: nftables backend (libnftables)": (
            lambda h: ours(h, NftablesBackend, rules), "nft list ruleset"),
        "ours: iptables backend (iptables-restore)": (
            lambda h: ours(h, IptablesBackend, rules), "iptables-save"),
        "iptables-legacy-restore --noflush": (
            lambda h: timed_cmd(h, ["iptables-legacy-restore", "--noflush"],
                                restore_text(rules)), "iptables-legacy-save"),
        "iptables-nft-restore --noflush": (
            lambda h: timed_cmd(h, ["iptables-nft-restore", "--noflush"],
                                restore_text(rules)), "iptables-nft-save"),
        "nft -j -f - (one JSON batch)": (
            lambda h: timed_cmd(h, ["nft", "-j", "-f", "-"], nft_json(rules)),
            "nft list ruleset"),
        "one iptables (nft) exec per rule": (
            lambda h: timed_cmd(h, "iptables -t nat -N CNMB && for i in $(seq 0 %d); do "
                                "iptables -t nat -A CNMB -p tcp --dport $((20000 + i)) -j DNAT "
                                "--to-destination 172.18.0.2:80; done" % (rules - 1)),
            "iptables-nft-save"),
    }
    if python_iptables:
        for mode in ("autocommit", "batched"):
            out["python-iptables (%s)" % mode] = (
                lambda h, m=mode: run_json(["nsenter", "--net=%s" % h.path, python_iptables,
                                            "-c", PYTHON_IPTABLES, str(rules), m])["seconds"],
                "iptables-legacy-save")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rules", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="save under bench/results-kept/")
    args = ap.parse_args()
    if skipped("bench_peers_firewall"):
        return 0
    out = {"loadavg_before": loadavg(), "rules": args.rules, "rounds": args.rounds,
           "packages": ensure_debian("iptables", "nftables", "libip4tc2"), "ms": {}}
    with throwaway_venv("python-iptables") as python:
        out["python_iptables_version"] = pip_version(python, "python-iptables") if python \
            else None
        for name, (run, counter) in variants(args.rules, python).items():
            samples = []
            for dummy in range(args.rounds):
                host = SimHost("bfw")
                try:
                    samples.append(run(host))
                    made = count_rules(host, counter, args.rules)
                    if made < args.rules:
                        raise SystemExit("%s: %d of the host ports seen by %s, not %d"
                                         % (name, made, counter, args.rules))
                finally:
                    host.close()
            out["ms"][name] = {"median": median_ms(samples),
                               "range": [median_ms([min(samples)]), median_ms([max(samples)])]}
    ref = out["ms"]["iptables-legacy-restore --noflush"]["median"]
    rows = []
    for name, res in out["ms"].items():
        rows.append(("%d DNAT rules: %s" % (args.rules, name), res["median"],
                     "%s-%s" % tuple(res["range"]), "x%.1f" % (res["median"] / ref)))
    report("bench_peers_firewall", out, rows, args.keep,
           header=("way of writing them", "median ms", "range ms", "vs legacy restore"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
