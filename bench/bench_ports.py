#!/usr/bin/env python
"""In-engine benchmark of published ports: attach/detach with a port, 100 serial attaches.

Run from the collection root as root: ``.venv/bin/python bench/bench_ports.py
[--firewall nftables,iptables] [--runs 50]``. Each backend runs inside its own throwaway
simulated host (a network namespace), never on the real host; as on a real
host, run_dir and netns_dir are on tmpfs and state_dir on disk. Prints one JSON object,
then a table. Targets (issue): attach with one published port (endpoint + port_mapping)
<= 25 ms, detach (port_mapping absent + endpoint absent) <= 25 ms, 100 serial attaches
each with its own port <= 2.5 s with no growth from #1 to #100.
"""
import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
import conftest  # noqa: E402,F401 pylint: disable=unused-import
from benchlib import growth, stats  # noqa: E402
from harness import SimHost, in_netns  # noqa: E402

from ansible_collections.cnm.core.plugins.module_utils.controller import Engine  # noqa: E402

TARGETS = {"attach_ms": 25, "detach_ms": 25, "serial_100_s": 2.5}


class Bench:
    """Engine calls inside the host namespace (the caller has entered it)."""

    def __init__(self, host, firewall):
        self.host = host
        self.firewall = firewall

    def engine(self):
        return Engine(state_dir=self.host.state_dir, run_dir=self.host.run_dir,
                      netns_dir=self.host.netns_dir, firewall_backend=self.firewall)

    def call(self, verb, **params):
        """Seconds one engine call took (a fresh Engine per call, as per module run)."""
        engine = self.engine()
        start = time.perf_counter()
        getattr(engine, verb)(params)
        return time.perf_counter() - start

    def attach(self, sandbox, host_port):
        """Seconds for endpoint + port_mapping (one published port)."""
        return (self.call("endpoint", network="app", sandbox=sandbox)
                + self.call("port_mapping", sandbox=sandbox,
                            ports=[{"container_port": 80, "host_port": host_port}]))

    def detach(self, sandbox):
        """Seconds for port_mapping state=absent + endpoint state=absent."""
        return (self.call("port_mapping", sandbox=sandbox, state="absent")
                + self.call("endpoint", network="app", sandbox=sandbox, state="absent"))


def run_backend(firewall, runs, serial_runs):
    out = {}
    host = SimHost("bport", tmpfs_runtime=True)
    try:
        with in_netns(host.path):
            b = Bench(host, firewall)
            # warm-up: imports, store creation, a first firewall batch
            b.call("network", name="warmup",
                   ipam={"config": [{"subnet": "10.203.0.0/24"}]})
            b.call("endpoint", network="warmup", sandbox="w")
            b.call("port_mapping", sandbox="w",
                   ports=[{"container_port": 80, "host_port": 9999}])
            b.call("network", name="warmup", state="absent", force=True)

            b.call("network", name="app", ipam={"config": [{"subnet": "10.204.0.0/16"}]})
            attach = [b.attach("s%d" % i, 10000 + i) for i in range(runs)]
            detach = [b.detach("s%d" % i) for i in range(runs)]
            out["attach_with_port"] = stats(attach)
            out["detach_with_port"] = stats(detach)

            b.call("network", name="app", state="absent", force=True)
            runs = []
            for r in range(serial_runs):
                b.call("network", name="app", ipam={"config": [{"subnet": "10.204.0.0/16"}]})
                runs.append([b.attach("t%d-%d" % (r, i), 20000 + i) for i in range(100)])
                b.call("network", name="app", state="absent", force=True)
            out["attach_100_serial_with_port"] = growth(runs)
    finally:
        host.close()
    return out


def print_table(out):
    header = ("backend", "operation", "median ms", "p90 ms", "target")
    print("\n%-10s %-22s %10s %10s  %s" % header)
    for backend in out["backends"]:
        res = out[backend]
        for key, label, target in (("attach_with_port", "attach + 1 port", "attach_ms"),
                                   ("detach_with_port", "detach (port, ep)", "detach_ms")):
            print("%-10s %-22s %10s %10s  <= %s ms" % (
                backend, label, res[key]["median_ms"], res[key]["p90_ms"], TARGETS[target]))
    print()
    for backend in out["backends"]:
        s = out[backend]["attach_100_serial_with_port"]
        print("%-10s 100 serial attaches with a port (%d runs): slowest run %.3f s total "
              "(target <= %s s); median #1-10 %s ms, #91-100 %s ms (x%s; per run %s)"
              % (backend, s["runs"], s["total_s_max"], TARGETS["serial_100_s"],
                 s["median_1_10_ms"], s["median_91_100_ms"], s["growth_ratio"],
                 s["per_run_ratios"]))
    print("load average before / after: %s / %s" % (out["load_before"], out["load_after"]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--firewall", default="nftables,iptables",
                    help="comma-separated backends (nftables, iptables, none)")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--serial-runs", type=int, default=3,
                    help="runs of 100 serial attaches, each on an empty network")
    args = ap.parse_args()
    backends = [b.strip() for b in args.firewall.split(",") if b.strip()]
    out = {"backends": backends, "runs": args.runs,
           "load_before": [round(x, 2) for x in os.getloadavg()]}
    for backend in backends:
        out[backend] = run_backend(backend, args.runs, args.serial_runs)
    out["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out, indent=2))
    print_table(out)


if __name__ == "__main__":
    main()
