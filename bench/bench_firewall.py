#!/usr/bin/env python
"""Benchmark the firewall backends: is the cost of one more published port flat?

In a throwaway network namespace (a simulated host with one bridge), create a network,
then add 100 port mappings one by one (``apply(old, new)`` each time) and compare the
cost of adds #1-10 with #91-100; also time removing one port, ``check``, ``restore``
and removing the network. Docker's nftables backend rewrites its ruleset per port and
slows down as ports accumulate (moby#53466); ours must not.

Run from the collection root as root: ``.venv/bin/python bench/bench_firewall.py
[--rounds N] [--ports N]``. Prints one JSON object, then a table. Exit status 1 when a
backend's #91-100 median exceeds 2x its #1-10 median (+1 ms of noise allowance) or the
first add takes more than 5 ms.
"""
import argparse
import json
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _import_engine():
    """Make ``ansible_collections.cnm.core`` importable (tests/conftest.py does it)."""
    tests = os.path.join(REPO, "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import conftest  # noqa: F401 pylint: disable=unused-import,import-outside-toplevel


def _ms(seconds):
    return round(seconds * 1000.0, 3)


def _stats(samples):
    ordered = sorted(samples)
    return {"median_ms": _ms(statistics.median(ordered)),
            "p90_ms": _ms(ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]),
            "n": len(ordered)}


def run_round(make_backend, ports):
    """One fresh simulated host: returns raw timings (seconds) of every step."""
    from harness import SimHost, in_netns

    from ansible_collections.cnm.core.plugins.module_utils.firewall.model import (
        NetworkRules,
        PortMapping,
    )

    host = SimHost("bench")
    try:
        nid = os.urandom(32).hex()
        bridge = "br-" + nid[:12]
        host.run("ip link add %s type bridge && ip addr add 172.18.0.1/16 dev %s && "
                 "ip link set %s up" % (bridge, bridge, bridge))
        base = dict(network_id=nid, bridge=bridge, subnets=("172.18.0.0/16",))
        out = {"adds": []}
        with in_netns(host.path):
            fw = make_backend()
            rules = NetworkRules(**base)
            t = time.perf_counter()
            fw.apply(None, rules)
            out["create"] = time.perf_counter() - t
            mappings = []
            for i in range(ports):
                mappings.append(PortMapping("tcp", "", 20000 + i, "172.18.%d.%d"
                                            % (i // 200, 2 + i % 200), 1000 + i, 4))
                new = NetworkRules(ports=tuple(sorted(mappings)), **base)
                t = time.perf_counter()
                fw.apply(rules, new)
                out["adds"].append(time.perf_counter() - t)
                rules = new
            t = time.perf_counter()
            problems = fw.check(rules)
            out["check"] = time.perf_counter() - t
            assert problems == [], problems
            fewer = NetworkRules(ports=rules.ports[1:], **base)
            t = time.perf_counter()
            fw.apply(rules, fewer)
            out["remove_port"] = time.perf_counter() - t
            t = time.perf_counter()
            fw.restore([fewer])
            out["restore"] = time.perf_counter() - t
            t = time.perf_counter()
            fw.apply(fewer, None)
            out["delete_network"] = time.perf_counter() - t
        return out
    finally:
        host.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ports", type=int, default=100)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_firewall: needs root (network namespaces)", file=sys.stderr)
        return 2
    _import_engine()
    from ansible_collections.cnm.core.plugins.module_utils.firewall.iptables import (
        IptablesBackend,
    )
    from ansible_collections.cnm.core.plugins.module_utils.firewall.nftables import (
        NftablesBackend,
    )

    variants = {
        "nftables": NftablesBackend,
        "nftables (nft -f subprocess)": lambda: NftablesBackend(use_library=False),
        "iptables": IptablesBackend,
    }
    results, failed = {}, []
    first, last = slice(0, 10), slice(args.ports - 10, args.ports)
    for name, factory in variants.items():
        rounds = [run_round(factory, args.ports) for dummy in range(args.rounds)]
        early = [s for r in rounds for s in r["adds"][first]]
        late = [s for r in rounds for s in r["adds"][last]]
        res = {
            "create_network": _stats([r["create"] for r in rounds]),
            "first_add": _stats([r["adds"][0] for r in rounds]),
            "adds_1_10": _stats(early),
            "adds_%d_%d" % (args.ports - 9, args.ports): _stats(late),
            "remove_one_port": _stats([r["remove_port"] for r in rounds]),
            "check": _stats([r["check"] for r in rounds]),
            "restore": _stats([r["restore"] for r in rounds]),
            "delete_network": _stats([r["delete_network"] for r in rounds]),
        }
        res["late_over_early"] = round(statistics.median(late) / statistics.median(early), 2)
        results[name] = res
        if name != "nftables (nft -f subprocess)" and (
                statistics.median(late) > 2 * statistics.median(early) + 0.001
                or statistics.median(r["adds"][0] for r in rounds) > 0.005):
            failed.append(name)
    print(json.dumps({"firewall": results, "ports": args.ports, "rounds": args.rounds}))
    late_key = "adds_%d_%d" % (args.ports - 9, args.ports)
    print("%-30s %9s %9s %9s %9s %9s %7s %9s %9s" % (
        "backend (ms, median)", "create", "add#1", "add1-10", "add91-100", "p90 late",
        "ratio", "check", "restore"))
    for name, res in results.items():
        print("%-30s %9.2f %9.2f %9.2f %9.2f %9.2f %7.2f %9.2f %9.2f" % (
            name, res["create_network"]["median_ms"], res["first_add"]["median_ms"],
            res["adds_1_10"]["median_ms"], res[late_key]["median_ms"],
            res[late_key]["p90_ms"], res["late_over_early"], res["check"]["median_ms"],
            res["restore"]["median_ms"]))
    if failed:
        print("bench_firewall: per-port cost not flat for %s" % ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
