#!/usr/bin/env python
"""In-engine benchmark of the foundation: network create/delete, attach/detach.

Run from the collection root as root: ``.venv/bin/python bench/bench_engine.py
[--firewall none|nftables|iptables] [--runs 50]``. Everything happens inside a throwaway
simulated host (a network namespace), never on the real host; as on a real
host, run_dir and netns_dir are on tmpfs and state_dir on disk. Prints one JSON object,
then a table. Targets (issue 2): create <= 20 ms, attach <= 15 ms, detach <= 15 ms,
100 serial attaches <= 2 s with no growth from #1 to #100, fill a /16 <= 1 s.
Network create/delete is also timed with each backend of ``--create-firewalls``
(default nftables), each in its own simulated host: the README quotes none / nftables.
"""
import argparse
import json
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
import conftest  # noqa: E402,F401 pylint: disable=unused-import
from benchlib import growth, ms, stats  # noqa: E402
from harness import SimHost, in_netns  # noqa: E402

from ansible_collections.cnm.core.plugins.module_utils.controller import Engine  # noqa: E402


class Bench:
    def __init__(self, host, firewall):
        self.host = host
        self.firewall = firewall

    def call(self, verb, **params):
        engine = Engine(state_dir=self.host.state_dir, run_dir=self.host.run_dir,
                        netns_dir=self.host.netns_dir, firewall_backend=self.firewall)
        start = time.perf_counter()
        getattr(engine, verb)(params)
        return time.perf_counter() - start


def create_delete(firewall, runs):
    """Median/p90 of ``runs`` network creates, then deletes, with ``firewall``."""
    host = SimHost("bcreate", tmpfs_runtime=True)
    try:
        with in_netns(host.path):
            b = Bench(host, firewall)
            b.call("network", name="warmup", ipam={"config": [{"subnet": "10.199.0.0/24"}]})
            create = [b.call("network", name="n%d" % i,
                             ipam={"config": [{"subnet": "10.200.%d.0/24" % i}]})
                      for i in range(runs)]
            delete = [b.call("network", name="n%d" % i, state="absent") for i in range(runs)]
        return {"network_create": stats(create), "network_delete": stats(delete)}
    finally:
        host.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--firewall", default="none")
    ap.add_argument("--create-firewalls", default="nftables",
                    help="comma-separated backends whose network create/delete is timed too")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--serial-runs", type=int, default=3,
                    help="runs of 100 serial attaches, each on an empty network")
    args = ap.parse_args()
    out = {"firewall": args.firewall, "load_before": [round(x, 2) for x in os.getloadavg()]}
    host = SimHost("bench", tmpfs_runtime=True)
    try:
        with in_netns(host.path):
            b = Bench(host, args.firewall)
            b.call("network", name="warmup")  # imports, store creation
            b.call("network", name="warmup", state="absent")
            create, delete = [], []
            for i in range(args.runs):
                create.append(b.call("network", name="n%d" % i,
                                     ipam={"config": [{"subnet": "10.200.%d.0/24" % i}]}))
            for i in range(args.runs):
                delete.append(b.call("network", name="n%d" % i, state="absent"))
            out["network_create"] = stats(create)
            out["network_delete"] = stats(delete)

            b.call("network", name="app", ipam={"config": [{"subnet": "10.201.0.0/16"}]})
            attach, detach = [], []
            for i in range(args.runs):
                attach.append(b.call("endpoint", network="app", sandbox="s%d" % i))
            for i in range(args.runs):
                detach.append(b.call("endpoint", network="app", sandbox="s%d" % i,
                                     state="absent"))
            out["attach"] = stats(attach)
            out["detach"] = stats(detach)

            b.call("network", name="app", state="absent", force=True)
            runs = []
            for r in range(args.serial_runs):
                b.call("network", name="serial", ipam={"config": [{"subnet": "10.201.0.0/16"}]})
                runs.append([b.call("endpoint", network="serial", sandbox="t%d-%d" % (r, i))
                             for i in range(100)])
                b.call("network", name="serial", state="absent", force=True)
            out["attach_100_serial"] = growth(runs)

            empty = [b.call("network", name="e%d" % i) for i in range(10)]
            for i in range(10):
                b.call("network", name="e%d" % i, state="absent")
            for i in range(50):  # Docker's default pools hold 31 networks: be explicit
                b.call("network", name="bg%d" % i,
                       ipam={"config": [{"subnet": "10.202.%d.0/24" % i}]})
            full = [b.call("network", name="f%d" % i) for i in range(10)]
            out["network_create_0_vs_50_existing"] = {
                "with_0_median_ms": ms(statistics.median(empty)),
                "with_50_median_ms": ms(statistics.median(full))}
    finally:
        host.close()

    from ansible_collections.cnm.core.plugins.module_utils.ipam.allocator import (
        AddressAllocator)
    from ansible_collections.cnm.core.plugins.module_utils.ipam.config import (
        parse_ipam_config)
    allocator = AddressAllocator(parse_ipam_config([{"subnet": "10.7.0.0/16"}], False)[0])
    start = time.perf_counter()
    n = 0
    while allocator.free_count():
        allocator.allocate()
        n += 1
    out["ipam_fill_16"] = {"addresses": n, "seconds": round(time.perf_counter() - start, 3)}
    for fw in [f.strip() for f in args.create_firewalls.split(",") if f.strip()]:
        if fw != args.firewall:
            out["network_create_delete_" + fw] = create_delete(fw, args.runs)

    out["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out, indent=2))
    rows = [(label, out[key]["median_ms"], out[key]["p90_ms"], target)
            for label, key, target in (("network create", "network_create", "<= 20 ms"),
                                       ("network delete", "network_delete", ""),
                                       ("attach", "attach", "<= 15 ms"),
                                       ("detach", "detach", "<= 15 ms"))]
    for key in sorted(k for k in out if k.startswith("network_create_delete_")):
        fw = key[len("network_create_delete_"):]
        rows[2:2] = [("net create (%s)" % fw, out[key]["network_create"]["median_ms"],
                      out[key]["network_create"]["p90_ms"], "<= 20 ms"),
                     ("net delete (%s)" % fw, out[key]["network_delete"]["median_ms"],
                      out[key]["network_delete"]["p90_ms"], "")]
    print("\nfirewall backend: %s\n%-22s %10s %10s  %s" % (
        out["firewall"], "operation", "median ms", "p90 ms", "target"))
    for r in rows:
        print("%-22s %10s %10s  %s" % r)
    s = out["attach_100_serial"]
    print("100 serial attaches (%d runs): slowest run %.3f s total (target <= 2 s); "
          "median #1-10 %s ms, #91-100 %s ms (x%s; per run %s)"
          % (s["runs"], s["total_s_max"], s["median_1_10_ms"], s["median_91_100_ms"],
             s["growth_ratio"], s["per_run_ratios"]))
    c = out["network_create_0_vs_50_existing"]
    print("network create with 0 / 50 existing networks: %s / %s ms"
          % (c["with_0_median_ms"], c["with_50_median_ms"]))
    print("IPAM fill a /16: %s s (target <= 1 s)" % out["ipam_fill_16"]["seconds"])
    print("load average before / after: %s / %s" % (out["load_before"], out["load_after"]))


if __name__ == "__main__":
    main()
