#!/usr/bin/env python
"""The resolver behind its port-53 redirect against the same code without it, and
against aardvark-dns, in one run (issue item 8: qps >= 1.5x aardvark-dns's).

Each round, interleaved so load drifts hit all three alike:
- before: ``bench_dns_engine.py`` of another tree (``--base``, e.g. ``git archive HEAD``
  of the commit before the redirect, unpacked), run as a subprocess;
- after: this tree's resolver, set up by the engine as ``bench_dns_engine.py`` does,
  queried at 127.0.0.11:53 through the redirect (``dnsperf``);
- aardvark-dns at its network's gateway, same names (``bench_peers_netavark.py``'s
  setup).
Prints one JSON object (every round with /proc/loadavg before and after it), then the
medians. Needs root, dnsperf and aardvark-dns (Debian: aardvark-dns, netavark):

    sudo .venv/bin/python bench/bench_dns_port53.py --base /tmp/base [--rounds 3]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

# benchlib puts tests/ on sys.path
import benchlib  # noqa: F401 pylint: disable=unused-import
import conftest  # noqa: F401,E402 pylint: disable=unused-import

from bench_peers_netavark import dns  # noqa: E402


def loadavg():
    with open("/proc/loadavg", encoding="ascii") as src:
        return src.read().split()[:3]


def before(base, seconds):
    """qps of ``base``'s bench_dns_engine.py (None without ``base``)."""
    if not base:
        return None
    proc = subprocess.run([sys.executable, os.path.join(base, "bench", "bench_dns_engine.py"),
                           "--seconds", str(seconds), "--queries", "200"],
                          capture_output=True, text=True, timeout=seconds + 120, check=False)
    text = proc.stdout
    try:
        return json.loads(text[:text.index("\n}\n") + 2])["dnsperf"]["qps"]
    except ValueError:
        sys.stderr.write(proc.stdout + proc.stderr)
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--base", help="root of a tree without the redirect (before)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10, help="dnsperf -l")
    args = ap.parse_args()
    rounds = []
    for dummy in range(args.rounds):
        load = loadavg()
        old = before(args.base, args.seconds)
        d = dns(args.seconds, 200)
        rounds.append({"loadavg_before": load, "before_qps": old,
                       "after_qps": d["ours"]["dnsperf"]["qps"],
                       "after_lost": d["ours"]["dnsperf"]["lost"],
                       "aardvark_qps": d["aardvark"]["dnsperf"]["qps"],
                       "aardvark_lost": d["aardvark"]["dnsperf"]["lost"],
                       "loadavg_after": loadavg()})
    out = {"rounds": rounds}
    for key in ("before_qps", "after_qps", "aardvark_qps"):
        vals = [r[key] for r in rounds if r[key]]
        out[key.replace("_qps", "_median_qps")] = statistics.median(vals) if vals else None
    if out["after_median_qps"] and out["aardvark_median_qps"]:
        ratio = out["after_median_qps"] / out["aardvark_median_qps"]
        out["after_over_aardvark"] = round(ratio, 2)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
