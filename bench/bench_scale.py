#!/usr/bin/env python
"""Flat at scale: what an operation costs with many objects around, against the kernel's
own cost measured in the same run.

- attach #1-10 against #991-1000 on one network that ends with 1,000 sandboxes (and
  #1-50 against the last 50, with each side's user and system CPU); beside
  each engine attach, the kernel-only work of one (a namespace, a veth whose peer is made
  inside it with IPv6 off, enslaved to a bridge, up: no engine, no store, no firewall, no
  DNS) at the same point, so the engine's share (engine - kernel) can be compared: goal
  growth <= 1.2x;
- network create with 0 against 100 existing networks: goal <= 1.1x;
- ``network_info``/``sandbox_info`` of one name among 1,000 sandboxes;
- the resolver's RSS with the 1,000 sandboxes registered.

Everything runs in throwaway simulated hosts (run_dir and netns_dir on tmpfs, as on a
real host). Prints one JSON object (with the load average before and after) and a table.

    sudo .venv/bin/python bench/bench_scale.py [--sandboxes 1000] [--networks 100]
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

import benchlib  # noqa: F401 pylint: disable=unused-import
from benchlib import ms

import conftest  # noqa: F401,E402 pylint: disable=unused-import
from harness import SimHost, in_netns  # noqa: E402

from ansible_collections.cnm.core.plugins.module_utils.controller import Engine  # noqa: E402
from ansible_collections.cnm.core.plugins.module_utils.netns import namespace, sysctl  # noqa: E402
from ansible_collections.cnm.core.plugins.module_utils.netns.links import Netlink  # noqa: E402
from ansible_collections.cnm.core.plugins.module_utils.firewall import (  # noqa: E402
    render_nftables)
from ansible_collections.cnm.core.plugins.module_utils.firewall.model import (  # noqa: E402
    NetworkRules)
from ansible_collections.cnm.core.plugins.module_utils.firewall import (  # noqa: E402
    nftables as nftables_backend)
from ansible_collections.cnm.core.plugins.module_utils.firewall.nftables import (  # noqa: E402
    NftRunner)


def loadavg():
    with open("/proc/loadavg", encoding="ascii") as src:
        return src.read().split()[:3]


def call(host, verb, **params):
    engine = Engine(state_dir=host.state_dir, run_dir=host.run_dir, netns_dir=host.netns_dir,
                    firewall_backend="nftables")
    start = time.perf_counter()
    result = getattr(engine, verb)(params)
    return time.perf_counter() - start, result


def timed(func, *args, **kwargs):
    """``(wall, user CPU, system CPU)`` seconds of ``func(*args, **kwargs)`` in this
    process (RUSAGE_SELF: every thread; the kernel splits user/system by ticks, so
    they are meaningful as means over many calls, not one by one)."""
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    func(*args, **kwargs)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    return wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


def kernel_attach(netlink, netns_dir, bridge_index, i):
    """The kernel's share of one attach, without the engine: the same kernel objects
    as the engine's attach on a network without IPv6. The host end is made by the
    engine's own ``add_veth`` (no IPv6 addresses on a bridge port), and the sandbox's
    eth0 gets ``disable_ipv6=1`` before it is up, as the engine's does (Docker's
    behaviour). Without it the 1,000 eth0 here ran IPv6 (DAD, MLD, router
    solicitations, flooded to every port of their bridge): ~25 ms of softirq per
    attach at 1,000, charged to whatever ran then, the engine's attaches included."""
    start = time.perf_counter()
    path = os.path.join(netns_dir, "k%d" % i)
    namespace.create_netns(path)
    netlink.host.add_veth("kv%d" % i, "eth0", path, None, 1500, bridge_index)
    inside = netlink.sandbox(path)
    sysctl.ensure_in(path, "net.ipv6.conf.eth0.disable_ipv6", 1)
    inside.set_up(inside.index("eth0"))
    netlink.forget(path)
    return time.perf_counter() - start


def attach_growth(count):
    host = SimHost("bscale", tmpfs_runtime=True)
    try:
        with in_netns(host.path):
            call(host, "network", name="big", ipam={"config": [{"subnet": "10.128.0.0/16"}]})
            kdir = os.path.join(host.runtime_root, "kernel-netns")
            os.makedirs(kdir, exist_ok=True)
            netlink = Netlink()
            netlink.host.add_bridge("kbr0", 1500)
            kbr = netlink.host.index("kbr0")
            netlink.host.set_up(kbr)
            engine, kernel = [], []     # (wall, user CPU, system CPU) per attach
            for i in range(count):
                engine.append(timed(call, host, "endpoint", sandbox="s%d" % i,
                                    network="big"))
                kernel.append(timed(kernel_attach, netlink, kdir, kbr, i))
            infos = {"network_info": [call(host, "network_info", name="big")[0]
                                      for dummy in range(10)],
                     "sandbox_info": [call(host, "sandbox_info", name="s%d" % (count // 2))[0]
                                      for dummy in range(10)]}
            rss = resolver_rss(host)
            netlink.close()
            for i in range(count):
                namespace.delete_netns(os.path.join(kdir, "k%d" % i))
    finally:
        host.close()
    first, last = slice(0, 10), slice(count - 10, count)
    walls = [e[0] for e in engine], [k[0] for k in kernel]
    e1, e2 = statistics.median(walls[0][first]), statistics.median(walls[0][last])
    k1, k2 = statistics.median(walls[1][first]), statistics.median(walls[1][last])
    share1, share2 = e1 - k1, e2 - k2
    # the same over windows of 50 (#1-50, last 50), with the CPU split: the engine's
    # user-space CPU is what the engine itself does (Python: store, files, rules as
    # data); its system CPU beyond the kernel-only work is kernel work the baseline
    # does not do (addresses, routes, the sandbox's DNS rule, the resolver's sockets)
    wide = min(50, count // 2)
    windows = {}
    for name, part in (("first", slice(0, wide)), ("last", slice(count - wide, count))):
        e_wall, k_wall = statistics.median(walls[0][part]), statistics.median(walls[1][part])
        windows[name] = {
            "engine_wall_ms": ms(e_wall), "kernel_only_wall_ms": ms(k_wall),
            "engine_share_ms": ms(e_wall - k_wall),
            "engine_user_cpu_ms": ms(statistics.mean(e[1] for e in engine[part])),
            "engine_system_cpu_ms": ms(statistics.mean(e[2] for e in engine[part])),
            "kernel_only_system_cpu_ms": ms(statistics.mean(k[2] for k in kernel[part]))}

    def growth(key):
        a, b = windows["first"][key], windows["last"][key]
        return round(b / a, 2) if a > 0 else None
    return {"sandboxes": count,
            "engine_attach_ms": {"first_10": ms(e1), "last_10": ms(e2)},
            "kernel_only_ms": {"first_10": ms(k1), "last_10": ms(k2)},
            "engine_share_ms": {"first_10": ms(share1), "last_10": ms(share2)},
            "engine_share_growth": round(share2 / share1, 2) if share1 > 0 else None,
            "windows_of_%d" % wide: windows,
            "engine_share_growth_%d" % wide: growth("engine_share_ms"),
            "engine_user_cpu_growth": growth("engine_user_cpu_ms"),
            "engine_system_cpu_growth": growth("engine_system_cpu_ms"),
            "kernel_only_system_cpu_growth": growth("kernel_only_system_cpu_ms"),
            "info_of_one_name_ms": {k: ms(statistics.median(v)) for k, v in infos.items()},
            "resolver_rss_mb": rss}


def resolver_rss(host):
    """RSS (MB) of this host's resolver, from its pidfile."""
    try:
        with open(os.path.join(host.run_dir, "dns", "resolver.pid")) as f:
            pid = int(f.read().strip())
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except (OSError, ValueError):
        return None
    return None


SETTLE_S = 2.0


def kernel_rules(i):
    """The firewall description of the ``i``-th kernel-only network."""
    return NetworkRules(network_id="%012x" % (0xbe0000 + i) + "0" * 52, bridge="kn%d" % i,
                        subnets=("10.71.%d.0/24" % i,))


def kernel_network(netlink, nft, i):
    """The kernel's and the firewall's share of one network create, without the engine:
    a bridge with its gateway address, up, and the very nft transaction the engine
    applies for a new network (``render_create``, through libnftables). Returns the
    seconds that took; ``kernel_network_remove`` takes it away."""
    start = time.perf_counter()
    index = netlink.host.add_bridge("kn%d" % i, 1500)
    netlink.host.add_address(index, "10.71.%d.1/24" % i)
    netlink.host.set_up(index)
    nft.run(render_nftables.render_create(kernel_rules(i)))
    return time.perf_counter() - start


def kernel_network_remove(netlink, nft, i):
    nft.run(render_nftables.render_remove(kernel_rules(i)))
    netlink.host.delete_link("kn%d" % i)


def create_growth(existing, rounds=3, samples=22):
    """Network create on a host with no other network against one with ``existing``,
    ``rounds`` fresh pairs of hosts, the two interleaved create by create (the order
    alternating), back to back, so the kernel's background work (kworker netns settling
    links, tearing namespaces down) lands on both sides alike; the first side goes from
    0 to ``samples`` networks, the other from ``existing``. Beside each engine create, in
    the same host, the same kernel and firewall work without the engine
    (``kernel_network``) is timed: the engine's share is the difference. Medians over
    every round, but each round's first two creates (warm-up). Before each create, the
    host's libnftables context is made, untimed, as the engine makes it (it keeps one
    context, for the namespace it last worked in; freeing the other's waits for the
    kernel's RCU grace period). Not by a listing: a context keeps what it listed in its
    cache while the ruleset does not change, and the create would then work against
    the whole table in memory, which no engine run does."""
    series = {"engine": ([], []), "kernel": ([], [])}
    for dummy in range(rounds):
        hosts = [SimHost("bnets", tmpfs_runtime=True) for dummy2 in (0, 1)]
        try:
            links = []
            for side, host in enumerate(hosts):
                with in_netns(host.path):
                    links.append(Netlink())
                    for i in range(existing if side else 0):
                        call(host, "network", name="x%d" % i, ipam={"config": [
                            {"subnet": "10.%d.%d.0/24" % (61 + i // 250, i % 250)}]})
            time.sleep(SETTLE_S)
            for i in range(samples):
                for side in ((0, 1) if i % 2 else (1, 0)):
                    host, netlink = hosts[side], links[side]
                    with in_netns(host.path):
                        nft = NftRunner()
                        nftables_backend._context(nft.lib)  # pylint: disable=protected-access
                        took = call(host, "network", name="m%d" % i, ipam={
                            "config": [{"subnet": "10.60.%d.0/24" % i}]})[0]
                        kernel = kernel_network(netlink, nft, i)
                        if i >= 2:  # but the warm-up
                            series["engine"][side].append(took)
                            series["kernel"][side].append(kernel)
            for side, host in enumerate(hosts):
                with in_netns(host.path):
                    nft = NftRunner()
                    for i in range(samples):
                        kernel_network_remove(links[side], nft, i)
                    # the bridges go now, not with the namespace: the kernel's teardown
                    # of a namespace holding 100 bridges holds the RTNL lock for seconds
                    names = ["m%d" % i for i in range(samples)]
                    names += ["x%d" % i for i in range(existing if side else 0)]
                    for name in names:
                        call(host, "network", name=name, state="absent")
                    links[side].close()
        finally:
            for host in hosts:
                host.close()
    med = {k: [statistics.median(v[0]), statistics.median(v[1])] for k, v in series.items()}
    share = [med["engine"][n] - med["kernel"][n] for n in (0, 1)]
    return {"existing": existing, "samples_per_side": len(series["engine"][0]),
            "create_ms": {"with_0": ms(med["engine"][0]),
                          "with_%d" % existing: ms(med["engine"][1])},
            "growth": round(med["engine"][1] / med["engine"][0], 2),
            "kernel_and_firewall_only_ms": {"with_0": ms(med["kernel"][0]),
                                            "with_%d" % existing: ms(med["kernel"][1])},
            "kernel_and_firewall_only_growth": round(med["kernel"][1] / med["kernel"][0], 2),
            "engine_share_ms": {"with_0": ms(share[0]), "with_%d" % existing: ms(share[1])},
            "engine_share_growth": round(share[1] / share[0], 2) if share[0] > 0 else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--sandboxes", type=int, default=1000)
    ap.add_argument("--networks", type=int, default=100)
    args = ap.parse_args()
    load_before = loadavg()
    result = {"bench": "scale", "load_before": load_before,
              "network_create": create_growth(args.networks),
              "attach": attach_growth(args.sandboxes), "load_after": loadavg()}
    print(json.dumps(result, indent=1))
    att, net = result["attach"], result["network_create"]
    rows = [("attach #1-10, engine (ms)", att["engine_attach_ms"]["first_10"]),
            ("attach last 10, engine (ms)", att["engine_attach_ms"]["last_10"]),
            ("attach #1-10, kernel only (ms)", att["kernel_only_ms"]["first_10"]),
            ("attach last 10, kernel only (ms)", att["kernel_only_ms"]["last_10"]),
            ("engine share growth (goal <= 1.2)", att["engine_share_growth"]),
            ("the same, windows of 50 (medians)",
             att.get("engine_share_growth_50")),
            ("engine user-space CPU growth, windows of 50", att["engine_user_cpu_growth"]),
            ("engine system CPU growth, windows of 50", att["engine_system_cpu_growth"]),
            ("kernel-only system CPU growth, windows of 50",
             att["kernel_only_system_cpu_growth"]),
            ("network create with 0 (ms)", net["create_ms"]["with_0"]),
            ("network create with %d (ms)" % net["existing"],
             net["create_ms"]["with_%d" % net["existing"]]),
            ("network create growth (goal <= 1.1)", net["growth"]),
            ("  kernel + nft transaction only, with 0 (ms)",
             net["kernel_and_firewall_only_ms"]["with_0"]),
            ("  kernel + nft transaction only, with %d (ms)" % net["existing"],
             net["kernel_and_firewall_only_ms"]["with_%d" % net["existing"]]),
            ("  kernel + nft transaction only, growth", net["kernel_and_firewall_only_growth"]),
            ("  engine share growth", net["engine_share_growth"]),
            ("network_info of one (ms)", att["info_of_one_name_ms"]["network_info"]),
            ("sandbox_info of one (ms)", att["info_of_one_name_ms"]["sandbox_info"]),
            ("resolver RSS with %d sandboxes (MB)" % att["sandboxes"], att["resolver_rss_mb"])]
    print()
    for name, value in rows:
        print("%-44s %10s" % (name, value))
    print("load average before %s, after %s" % (" ".join(load_before),
                                                " ".join(result["load_after"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
