"""Benchmark of the embedded resolver: throughput (dnsperf) and one-at-a-time latency.

Builds a throwaway simulated host with one sandbox and ~20 local names, starts the
resolver as the engine does (ensure_resolver, inside the simulated host's namespace),
then inside the sandbox:
- ``dnsperf -s 127.0.0.11 -d <names> -l 10`` (defaults otherwise)
- 2000 sequential A queries from a Python UDP client (median/p90/p99 in microseconds).
Prints JSON (and a small table on stderr). Needs root, dnsperf.

    sudo .venv/bin/python bench/bench_dns.py [--seconds 10] [--queries 2000]
"""
import argparse
import json
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

# (conftest puts the checkout on sys.path as ansible_collections.cnm.core)
import conftest  # noqa: E402,F401 pylint: disable=unused-import
from harness import SimHost, in_netns  # noqa: E402

from ansible_collections.cnm.core.plugins.module_utils.dns import service  # noqa: E402

NAMES = ["web", "api", "db", "cache", "queue", "worker", "auth", "search", "mail",
         "proxy", "static", "admin", "metrics", "logs", "billing", "users", "orders",
         "files", "jobs", "gateway"]

LATENCY_CLIENT = r"""
import random, socket, struct, sys, time
names, n = sys.argv[1].split(","), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("127.0.0.11", 53))
s.settimeout(2)
queries = []
for i, name in enumerate(names):
    q = struct.pack("!HHHHHH", i, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
    queries.append(q + struct.pack("!HH", 1, 1))
for q in queries * 20:                      # warm up
    s.send(q); s.recv(512)
lat = []
for k in range(n):
    q = queries[k % len(queries)]
    t0 = time.perf_counter_ns()
    s.send(q)
    r = s.recv(512)
    lat.append(time.perf_counter_ns() - t0)
    assert r[:2] == q[:2] and r[3] & 15 == 0 and r[7] >= 1
lat.sort()
print(" ".join(str(x) for x in lat))
"""


def make_sandbox(host, name):
    path = host.sandbox_path(name)
    open(path, "w").close()
    subprocess.run(["unshare", "--net=%s" % path, "true"], check=True)
    host.sandbox_run(name, "ip link set lo up")
    return path


def pct(sorted_values, p):
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--queries", type=int, default=2000)
    args = ap.parse_args()
    host = SimHost("bench")
    try:
        make_sandbox(host, "client")
        eps = [{"sandbox": "client", "names": ["client"], "ipv4": "172.18.0.2"}]
        for i, name in enumerate(NAMES):
            eps.append({"sandbox": name, "names": [name], "ipv4": "172.18.0.%d" % (i + 10)})
        cfg = service.resolver_config(
            {"client": {"netns": host.sandbox_path("client"), "networks": ["app"]}},
            {"app": eps})
        service.write_resolver_config(host.run_dir, cfg)
        with in_netns(host.path):
            service.ensure_resolver(host.state_dir, host.run_dir, python=sys.executable,
                                    use_systemd=False)
        datafile = os.path.join(host.root, "names.txt")
        with open(datafile, "w") as f:
            f.write("".join("%s A\n" % n for n in NAMES))

        proc = host.sandbox_run("client", ["dnsperf", "-s", "127.0.0.11", "-d", datafile,
                                           "-l", str(args.seconds)],
                                timeout=args.seconds + 60)
        out = proc.stdout
        qps = float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))
        lost = re.search(r"Queries lost:\s+(\d+)", out).group(1)
        sent = re.search(r"Queries sent:\s+(\d+)", out).group(1)
        avg_lat = re.search(r"Average Latency \(s\):\s+([\d.]+)", out)

        lat = host.sandbox_run("client", [sys.executable, "-c", LATENCY_CLIENT,
                                          ",".join(NAMES), str(args.queries)], timeout=120)
        values = [int(x) / 1000.0 for x in lat.stdout.split()]
        result = {
            "dnsperf": {"qps": qps, "sent": int(sent), "lost": int(lost),
                        "avg_latency_us": float(avg_lat.group(1)) * 1e6 if avg_lat else None,
                        "seconds": args.seconds, "names": len(NAMES)},
            "sequential": {"queries": len(values), "median_us": round(pct(values, 0.5), 1),
                           "p90_us": round(pct(values, 0.9), 1),
                           "p99_us": round(pct(values, 0.99), 1),
                           "min_us": round(values[0], 1)},
            "goal": {"qps": 47500, "median_us": 100},
        }
        print(json.dumps(result, indent=2))
        rows = [("dnsperf qps", "%.0f" % result["dnsperf"]["qps"], ">= 47500"),
                ("dnsperf lost", str(result["dnsperf"]["lost"]), "0"),
                ("sequential median (us)", "%.1f" % result["sequential"]["median_us"],
                 "<= 100"),
                ("sequential p90 (us)", "%.1f" % result["sequential"]["p90_us"], ""),
                ("sequential p99 (us)", "%.1f" % result["sequential"]["p99_us"], "")]
        sys.stderr.write("\n%-28s %12s %10s\n" % ("measure", "value", "goal"))
        for row in rows:
            sys.stderr.write("%-28s %12s %10s\n" % row)
    finally:
        host.close()


if __name__ == "__main__":
    main()
