#!/usr/bin/env python
"""rtnetlink requests: the engine's own client (netns/rtnl.py) against pyroute2.

Backs the README's "~50 us a request" (ours) against pyroute2's "~0.7 ms a request"
and "import ~200 ms". In a throwaway simulated host with one bridge, each library, in
its own fresh process, times its import, then ``--requests`` link lookups by name and as
many address add + delete pairs (one request each). pyroute2 is installed into a
throwaway venv under /tmp (not a project dependency), removed at the end.

Run as root: ``.venv/bin/python bench/bench_peers_netlink.py [--requests 500]
[--pyroute2 pyroute2==0.9.7] [--keep]``. Prints one JSON object, then a table.
"""
import argparse
import os
import sys

from peerlib import loadavg, pip_version, report, run_json, skipped, throwaway_venv

from harness import SimHost

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RTNL = os.path.join(REPO, "plugins", "module_utils", "netns", "rtnl.py")

WORKER = r"""
import json, statistics, sys, time
lib, n, rtnl_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
t0 = time.perf_counter()
if lib == "pyroute2":
    from pyroute2 import IPRoute
    ipr = IPRoute()
    def index(): return ipr.link("get", ifname="bnch0")[0]["index"]
    def add(i, ip): ipr.addr("add", index=i, address=ip, prefixlen=32)
    def delete(i, ip): ipr.addr("del", index=i, address=ip, prefixlen=32)
else:
    import importlib.util
    spec = importlib.util.spec_from_file_location("rtnl", rtnl_path)
    rtnl = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rtnl)
    ipr = rtnl.Rtnl()
    def index(): return ipr.get_link("bnch0")["index"]
    def add(i, ip): ipr.address(True, i, ip, 32, 4)
    def delete(i, ip): ipr.address(False, i, ip, 32, 4)
imported = time.perf_counter() - t0
get, adds, dels = [], [], []
for k in range(n):
    t = time.perf_counter(); i = index(); get.append(time.perf_counter() - t)
    ip = "10.251.%d.%d" % (k // 250, 1 + k % 250)
    t = time.perf_counter(); add(i, ip); adds.append(time.perf_counter() - t)
    t = time.perf_counter(); delete(i, ip); dels.append(time.perf_counter() - t)
us = lambda v: round(statistics.median(v) * 1e6, 1)
print(json.dumps({"import_and_open_ms": round(imported * 1000, 1), "get_link_us": us(get),
                  "addr_add_us": us(adds), "addr_del_us": us(dels)}))
"""


def measure(host, python, lib, requests, processes=3):
    """Median over ``processes`` fresh processes of each figure."""
    runs = [run_json(["nsenter", "--net=%s" % host.path, python, "-c", WORKER, lib,
                      str(requests), RTNL]) for dummy in range(processes)]
    return {key: sorted(r[key] for r in runs)[len(runs) // 2] for key in runs[0]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--pyroute2", default="pyroute2==0.9.7", help="pip requirement")
    ap.add_argument("--keep", action="store_true", help="save under bench/results-kept/")
    args = ap.parse_args()
    if skipped("bench_peers_netlink"):
        return 0
    out = {"loadavg_before": loadavg(), "requests": args.requests}
    host = SimHost("bnl")
    try:
        host.run("ip link add bnch0 type bridge && ip link set bnch0 up")
        out["ours"] = measure(host, sys.executable, "ours", args.requests)
        with throwaway_venv(args.pyroute2) as python:
            if python:
                out["pyroute2_version"] = pip_version(python, "pyroute2")
                out["pyroute2"] = measure(host, python, "pyroute2", args.requests)
            else:
                out["pyroute2"] = None
                out["pyroute2_error"] = "pip install %s failed" % args.pyroute2
    finally:
        host.close()
    peer = out["pyroute2"] or {}
    name = "pyroute2 %s" % out.get("pyroute2_version")
    rows = [("import + open a socket (ms)", out["ours"]["import_and_open_ms"],
             peer.get("import_and_open_ms"), name),
            ("get link by name (us, median)", out["ours"]["get_link_us"],
             peer.get("get_link_us"), name),
            ("address add (us, median)", out["ours"]["addr_add_us"],
             peer.get("addr_add_us"), name),
            ("address delete (us, median)", out["ours"]["addr_del_us"],
             peer.get("addr_del_us"), name)]
    report("bench_peers_netlink", out, rows, args.keep)


if __name__ == "__main__":
    sys.exit(main())
