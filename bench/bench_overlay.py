#!/usr/bin/env python
"""Overlay networks: in-engine attach on an overlay against a bridge network (same host,
same run, interleaved), and cross-host propagation: from the start of an attach on host A
until host B's resolver answers the new sandbox's name (B runs no module: its agent
applies the change it sees in etcd).

A fleet of simulated hosts as in the tests (``tests/cluster_harness.py``): a LAN in its
own namespace, a 3-member etcd cluster on it, hosts A and B. B's probe is a UDP socket
made inside one of B's sandboxes, asking 127.0.0.11 for the name every 2 ms.
Prints one JSON object (with the load average before and after), then a table.

    sudo .venv/bin/python bench/bench_overlay.py [--attaches 30] [--propagations 20]
"""
import argparse
import json
import random
import socket
import struct
import sys
import threading
import time

import benchlib
from benchlib import stats

import conftest  # noqa: F401,E402 pylint: disable=unused-import
from cluster_harness import EtcdCluster  # noqa: E402
from harness import in_netns  # noqa: E402

from ansible_collections.cnm.core.plugins.module_utils.cluster import agent_service  # noqa: E402
from ansible_collections.cnm.core.plugins.module_utils.controller import Engine  # noqa: E402


def loadavg():
    with open("/proc/loadavg", encoding="ascii") as src:
        return src.read().split()[:3]


def lan_ip(host):
    return host.ip_json("addr show dev lan0")[0]["addr_info"][0]["local"]


def engine(host, cluster):
    return Engine(state_dir=host.state_dir, run_dir=host.run_dir, netns_dir=host.netns_dir,
                  firewall_backend="nftables", cluster=cluster)


def call(host, cluster, verb, **params):
    with in_netns(host.path):
        return getattr(engine(host, cluster), verb)(params)


def query(name):
    """A DNS A query for ``name`` (id random, recursion desired)."""
    qid = random.randint(0, 0xFFFF)
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return qid, struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\0\1\0\1"


def probe_socket(netns_path):
    """A UDP socket living in the sandbox namespace at ``netns_path``."""
    out = {}

    def make():
        with in_netns(netns_path):
            out["sock"] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    t = threading.Thread(target=make)
    t.start()
    t.join()
    sock = out["sock"]
    sock.settimeout(0.002)
    return sock


def answered(sock, name):
    """True when 127.0.0.11 answers ``name`` with at least one address."""
    qid, packet = query(name)
    sock.sendto(packet, ("127.0.0.11", 53))
    try:
        while True:
            data = sock.recv(512)
            rid, flags, qd, an = struct.unpack(">HHHH", data[:8])
            if rid == qid:
                return an > 0 and flags & 0xF == 0
    except socket.timeout:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--attaches", type=int, default=30)
    ap.add_argument("--propagations", type=int, default=20)
    args = ap.parse_args()
    load_before = loadavg()
    with EtcdCluster(members=3, extra_hosts=2) as fleet:
        a, b = fleet.hosts
        try:
            opts = {h.name: {"cluster_store": list(fleet.endpoints),
                             "advertise_address": lan_ip(h)} for h in (a, b)}
            call(a, opts[a.name], "network", name="b1")
            for h in (a, b):
                call(h, opts[h.name], "network", name="ov1", driver="overlay")
            call(b, opts[b.name], "endpoint", sandbox="watch", network="ov1")
            bridge, overlay = [], []
            for i in range(args.attaches):
                for net, series in (("b1", bridge), ("ov1", overlay)):
                    start = time.perf_counter()
                    call(a, opts[a.name], "endpoint", sandbox="%s-%d" % (net, i), network=net)
                    series.append(time.perf_counter() - start)
            sock = probe_socket(b.sandbox_path("watch"))
            propagation = []
            for i in range(args.propagations):
                name = "p%d" % i
                start = time.perf_counter()
                done = {}

                def attach(name=name):
                    call(a, opts[a.name], "endpoint", sandbox=name, network="ov1")
                    done["at"] = time.perf_counter()
                worker = threading.Thread(target=attach)
                worker.start()
                while not answered(sock, name):
                    if time.perf_counter() - start > 10:
                        raise SystemExit("name %s not answered on B within 10 s" % name)
                seen = time.perf_counter()
                worker.join()
                propagation.append(seen - start)
                time.sleep(0.05)
            sock.close()
        finally:
            for h in (a, b):
                agent_service.stop_agent(h.run_dir)
    result = {"bench": "overlay", "load_before": load_before, "load_after": loadavg(),
              "attach_bridge": stats(bridge[5:]), "attach_overlay": stats(overlay[5:]),
              "propagation_attach_on_a_to_answer_on_b": stats(propagation)}
    print(json.dumps(result, indent=1))
    print("\n%-44s %10s %10s %5s" % ("what", "median ms", "p90 ms", "n"))
    for key in ("attach_bridge", "attach_overlay", "propagation_attach_on_a_to_answer_on_b"):
        s = result[key]
        print("%-44s %10s %10s %5s" % (key, s["median_ms"], s["p90_ms"], s["n"]))
    print("load average before %s, after %s" % (" ".join(load_before),
                                                " ".join(result["load_after"])))
    return 0


if __name__ == "__main__":
    benchlib.REPO  # noqa: B018 - benchlib put tests/ on sys.path
    sys.exit(main())
