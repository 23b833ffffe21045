#!/usr/bin/env python
"""Where an in-engine attach's time goes: cProfile over N attaches on one network.

Run from the collection root as root: ``.venv/bin/python bench/profile_attach.py
[--attaches 20] [--top 25] [--pre N] [--firewall none] [--save FILE]``. Everything
happens inside a throwaway simulated host (run_dir and netns_dir on tmpfs, as on a real
host). Prints one JSON object (per-attach milliseconds of the engine's main steps), then
the profile's top entries by cumulative time. ``--pre N`` attaches N sandboxes first (not
profiled), so the profile shows what an attach costs on a network that already has N;
``--save`` keeps the raw profile (pstats) to compare two runs. A profile, not a
benchmark: its overhead inflates every figure about the same.
"""
import argparse
import cProfile
import json
import os
import pstats
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests"))
import conftest  # noqa: E402,F401 pylint: disable=unused-import
from harness import SimHost, in_netns  # noqa: E402

from ansible_collections.cnm.core.plugins.module_utils.controller import Engine  # noqa: E402

STEPS = {"store open": "_open", "store close": "_close", "namespace": "_create_sandbox",
         "interface": "setup_endpoint", "routes": "_sync_routes",
         "DNS step": "_sync_dns_safely", "address": "_assign_addresses"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attaches", type=int, default=20)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--pre", type=int, default=0,
                    help="sandboxes attached before the profiled ones (not profiled)")
    ap.add_argument("--firewall", default="none",
                    help="firewall backend (none, nftables, iptables)")
    ap.add_argument("--save", help="also write the raw profile here (pstats format)")
    args = ap.parse_args()
    host = SimHost("prof", tmpfs_runtime=True)
    try:
        def call(verb, **params):
            engine = Engine(state_dir=host.state_dir, run_dir=host.run_dir,
                            netns_dir=host.netns_dir, firewall_backend=args.firewall)
            with in_netns(host.path):
                getattr(engine, verb)(params)
        call("network", name="app", ipam={"config": [{"subnet": "10.99.0.0/16"}]})
        for i in range(max(5, args.pre)):  # warm: the resolver runs, the caches are filled
            call("endpoint", network="app", sandbox="warm%d" % i)
        profile = cProfile.Profile()
        profile.enable()
        for i in range(args.attaches):
            call("endpoint", network="app", sandbox="s%d" % i)
        profile.disable()
    finally:
        host.close()
    stats = pstats.Stats(profile)
    if args.save:
        stats.dump_stats(args.save)
    per_attach = {}
    for (dummy, dummy2, name), (dummy3, dummy4, dummy5, cumulative, dummy6) in \
            stats.stats.items():
        for step, func in STEPS.items():
            if name == func:
                per_attach[step] = round(per_attach.get(step, 0.0) + cumulative * 1000.0
                                         / args.attaches, 2)
    print(json.dumps({"attaches": args.attaches, "pre": args.pre,
                      "ms_per_attach": per_attach,
                      "load": open("/proc/loadavg").read().split()[:3]}, indent=2))
    stats.sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
