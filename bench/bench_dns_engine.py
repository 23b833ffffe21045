#!/usr/bin/env python
"""Benchmark of the embedded resolver as the engine sets it up.

Everything here is made by the engine inside a throwaway simulated host: a network, a
sandbox ``client`` and 20 more sandboxes, each with an alias; the engine writes the
resolver config and starts the resolver. Then, inside ``client``:

- ``dnsperf -s 127.0.0.11 -d <local names> -l 10`` (dnsperf's defaults otherwise);
- 2000 sequential A queries, one at a time, from a Python UDP client (median/p90/p99 in
  microseconds).

Prints one JSON object, then a table. Goals: >= 47,500 qps (aardvark-dns on the same
machine), median <= 100 us. Needs root and dnsperf. ``bench_peers_netavark.py`` measures
aardvark-dns the same way in the same run. Run it on a quiet machine:

    sudo .venv/bin/python bench/bench_dns_engine.py [--seconds 10] [--queries 2000]
"""
import argparse
import json
import os
import re
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

# (tests/conftest puts the checkout on sys.path as ansible_collections.cnm.core; the
# integration directory comes after it: it has a conftest.py of its own)
import conftest  # noqa: E402,F401 pylint: disable=unused-import
sys.path.insert(1, os.path.join(REPO, "tests", "integration"))
from harness import SimHost  # noqa: E402
from engine_helpers import HostEngine  # noqa: E402

SANDBOXES = ["web", "api", "db", "cache", "queue", "worker", "auth", "search", "mail",
             "proxy", "static", "admin", "metrics", "logs", "billing", "users", "orders",
             "files", "jobs", "gateway"]
SUBNET = "10.210.0.0/24"
GOALS = {"qps": 47500, "median_us": 100}

LATENCY_CLIENT = r"""
import socket, struct, sys, time
names, count = sys.argv[1].split(","), int(sys.argv[2])
server = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.11"
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.connect((server, 53))
sock.settimeout(2)
queries = []
for qid, name in enumerate(names):
    wire = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    wire += b"".join(bytes([len(label)]) + label.encode() for label in name.split("."))
    queries.append(wire + b"\0" + struct.pack("!HH", 1, 1))
for wire in queries * 20:                       # warm up
    sock.send(wire)
    sock.recv(512)
samples = []
for k in range(count):
    wire = queries[k % len(queries)]
    start = time.perf_counter_ns()
    sock.send(wire)
    reply = sock.recv(512)
    samples.append(time.perf_counter_ns() - start)
    if reply[:2] != wire[:2] or reply[3] & 15 or reply[7] < 1:
        sys.exit("bad answer for %r" % names[k % len(names)])
print(" ".join(str(ns) for ns in samples))
"""


def percentile(sorted_values, fraction):
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))]


def build(host):
    """The engine makes the network, the sandboxes and the resolver; returns the names
    the resolver answers locally for ``client`` and the engine's time to do it."""
    eng = HostEngine(host)
    start = time.perf_counter()
    eng.network(name="app", ipam={"config": [{"subnet": SUBNET}]})
    eng.endpoint(network="app", sandbox="client")
    names = []
    for name in SANDBOXES:
        eng.endpoint(network="app", sandbox=name, aliases=["%s-svc" % name])
        names += [name, "%s-svc" % name, "%s.app" % name]
    # nothing listens there: a lost local query would show up, never reach a real server
    resolver = eng.dns(upstreams=["127.0.0.53"]).data["resolver"]
    if not resolver.get("running"):
        raise SystemExit("the engine did not start the resolver: %r" % resolver)
    return names, resolver["pid"], time.perf_counter() - start


def run_dnsperf(host, names, seconds, server="127.0.0.11", sandbox="client"):
    """dnsperf's figures from ``sandbox`` against ``server`` (the engine's resolver)."""
    datafile = os.path.join(host.root, "names-%s.txt" % server)
    with open(datafile, "w", encoding="utf-8") as out:
        out.write("".join("%s A\n" % name for name in names))
    proc = host.sandbox_run(sandbox, ["dnsperf", "-s", server, "-d", datafile,
                                      "-l", str(seconds)], timeout=seconds + 60)
    text = proc.stdout

    def field(label):
        match = re.search(label + r":\s+([\d.]+)", text)
        return float(match.group(1)) if match else None

    latency = field(r"Average Latency \(s\)")
    return {"qps": field("Queries per second"), "sent": int(field("Queries sent") or 0),
            "completed": int(field("Queries completed") or 0),
            "lost": int(field("Queries lost") or 0),
            "avg_latency_us": round(latency * 1e6, 1) if latency is not None else None,
            "seconds": seconds, "names": len(names)}


def run_sequential(host, names, count, server="127.0.0.11", sandbox="client"):
    """One query at a time from ``sandbox`` to ``server``: latency percentiles."""
    proc = host.sandbox_run(sandbox, [sys.executable, "-c", LATENCY_CLIENT,
                                      ",".join(names), str(count), server], timeout=120)
    values = sorted(int(ns) / 1000.0 for ns in proc.stdout.split())
    return {"queries": len(values), "median_us": round(percentile(values, 0.5), 1),
            "p90_us": round(percentile(values, 0.9), 1),
            "p99_us": round(percentile(values, 0.99), 1), "min_us": round(values[0], 1)}


def load_average():
    with open("/proc/loadavg", encoding="ascii") as src:
        return [float(v) for v in src.read().split()[:3]]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--queries", type=int, default=2000)
    args = parser.parse_args()
    host = SimHost("dnsbench")
    try:
        names, pid, setup = build(host)
        load_before = load_average()
        perf = run_dnsperf(host, names, args.seconds)
        sequential = run_sequential(host, names, args.queries)
        restarted = HostEngine(host).dns().data["resolver"]["pid"] != pid
    finally:
        host.close()
    result = {
        "setup": {"sandboxes": len(SANDBOXES) + 1, "engine_seconds": round(setup, 2),
                  "resolver_restarted": restarted},
        "dnsperf": perf,
        "sequential": sequential,
        "load_average_before": load_before,
        "goal": GOALS,
        "pass": {"qps": bool(perf["qps"] and perf["qps"] >= GOALS["qps"]),
                 "median_us": sequential["median_us"] <= GOALS["median_us"]},
    }
    print(json.dumps(result, indent=2))
    rows = [("dnsperf qps", "%.0f" % (perf["qps"] or 0), ">= %d" % GOALS["qps"]),
            ("dnsperf lost", str(perf["lost"]), "0"),
            ("dnsperf avg latency (us)", str(perf["avg_latency_us"]), ""),
            ("sequential median (us)", "%.1f" % sequential["median_us"],
             "<= %d" % GOALS["median_us"]),
            ("sequential p90 (us)", "%.1f" % sequential["p90_us"], ""),
            ("sequential p99 (us)", "%.1f" % sequential["p99_us"], ""),
            ("load average (1 min)", "%.2f" % load_before[0], "< 1")]
    print("\n%-28s %12s %10s" % ("measure", "value", "goal"))
    for row in rows:
        print("%-28s %12s %10s" % row)
    return 1 if restarted else 0        # goals are reported, not enforced (noisy machines)


if __name__ == "__main__":
    sys.exit(main())
