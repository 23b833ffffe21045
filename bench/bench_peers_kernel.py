#!/usr/bin/env python
"""Kernel floors and conntrack: what the README's "Kernel floors" paragraph quotes.

Inside a throwaway simulated host:

- deleting a veth pair and a bridge over rtnetlink (the engine's client) and with
  ``ip link del`` (with ``ip link show lo`` as the cost of running ``ip`` at all);
- the wait a process pays when it closes a netfilter netlink socket after freeing rules
  or set elements: ``nft delete element`` and ``iptables-nft-restore --noflush`` with a
  ``-D`` line, each against the same tool doing nothing to free (``nft list table``, an
  empty ``-A``/commit), and the engine's way (one libnftables context kept open);
- flushing the conntrack entries of one withdrawn TCP mapping: the engine's kernel-side
  filtered delete (Linux >= 6.12), the engine's dump-and-delete (what IPv6/SCTP mappings
  and older kernels use: it walks the whole shared conntrack hash) and the ``conntrack``
  tool (``conntrack -D ...``, one exec), each deleting one real entry.

Run as root: ``.venv/bin/python bench/bench_peers_kernel.py [--repeat 10] [--keep]``.
Prints one JSON object, then a table.
"""
import argparse
import os
import sys
import subprocess
import time

from peerlib import ensure_debian, loadavg, median_ms, report, skipped

from harness import SimHost, in_netns

from ansible_collections.cnm.core.plugins.module_utils.firewall import conntrack  # noqa: E402
from ansible_collections.cnm.core.plugins.module_utils.firewall.model import (  # noqa: E402
    PortMapping)
from ansible_collections.cnm.core.plugins.module_utils.netns.rtnl import Rtnl  # noqa: E402

MAPPING = PortMapping("tcp", "", 8080, "10.70.0.10", 80, 4)
CT_ENTRY = ["-p", "tcp", "-s", "192.0.2.7", "-d", "198.51.100.1", "--sport", "40000",
            "--dport", "8080", "-r", "10.70.0.10", "-q", "192.0.2.7", "--reply-port-src",
            "80", "--reply-port-dst", "40000", "--state", "ESTABLISHED", "-t", "300",
            "-u", "SEEN_REPLY"]


def timed(host, cmd, text=None):
    start = time.perf_counter()
    host.run(cmd, input=text)
    return time.perf_counter() - start


def links(host, repeat):
    rt = Rtnl()
    out = {"veth_rtnl": [], "veth_ip": [], "bridge_rtnl": [], "ip_exec": []}
    try:
        for i in range(repeat):
            host.run("ip link add bv%d type veth peer name bv%dp && ip link set bv%d up && "
                     "ip link set bv%dp up && ip link add bb%d type bridge && "
                     "ip link set bb%d up" % ((i,) * 6))
            start = time.perf_counter()
            rt.delete_link("bv%d" % i)
            out["veth_rtnl"].append(time.perf_counter() - start)
            start = time.perf_counter()
            rt.delete_link("bb%d" % i)
            out["bridge_rtnl"].append(time.perf_counter() - start)
            host.run("ip link add bw%d type veth peer name bw%dp && ip link set bw%d up"
                     % (i, i, i))
            out["veth_ip"].append(timed(host, "ip link del bw%d" % i))
            out["ip_exec"].append(timed(host, "ip link show lo >/dev/null"))
    finally:
        rt.close()
    return {k: median_ms(v) for k, v in out.items()}


def netfilter_close(host, repeat):
    """Seconds of a tool that freed something against the same tool freeing nothing."""
    from nftables import Nftables  # pylint: disable=import-outside-toplevel
    host.run("nft add table ip cnmb && nft add set ip cnmb ports '{ type inet_service; }'")
    host.run("iptables-nft -t nat -N CNMB")
    out = {"nft_delete_element": [], "nft_list_table": [], "iptables_restore_delete": [],
           "iptables_restore_noop": [], "libnftables_kept_context": []}
    with in_netns(host.path):
        ctx = Nftables()   # its netlink socket belongs to the namespace it is made in
    for i in range(repeat):
        host.run("nft add element ip cnmb ports '{ %d }'" % (1000 + i))
        out["nft_delete_element"].append(
            timed(host, "nft delete element ip cnmb ports '{ %d }'" % (1000 + i)))
        out["nft_list_table"].append(timed(host, "nft list table ip cnmb >/dev/null"))
        rule = "-A CNMB -p tcp --dport %d -j DNAT --to-destination 10.70.0.10:80" % (2000 + i)
        host.run(["iptables-nft-restore", "--noflush"], input="*nat\n%s\nCOMMIT\n" % rule)
        out["iptables_restore_delete"].append(timed(
            host, ["iptables-nft-restore", "--noflush"],
            "*nat\n%s\nCOMMIT\n" % rule.replace("-A", "-D", 1)))
        out["iptables_restore_noop"].append(timed(
            host, ["iptables-nft-restore", "--noflush"], "*nat\nCOMMIT\n"))
        host.run("nft add element ip cnmb ports '{ %d }'" % (3000 + i))
        with in_netns(host.path):
            start = time.perf_counter()
            rc, dummy, err = ctx.cmd("delete element ip cnmb ports { %d }" % (3000 + i))
            out["libnftables_kept_context"].append(time.perf_counter() - start)
        assert rc == 0, err
    return {k: median_ms(v) for k, v in out.items()}


def entries(host):
    proc = host.run(["conntrack", "-L", "-p", "tcp", "--dport", "8080"], check=False)
    return len([line for line in proc.stdout.splitlines() if "dport=8080" in line])


def conntrack_flush(host, repeat):
    host.run("nft add table ip cnmct && nft add chain ip cnmct pre "
             "'{ type nat hook prerouting priority -100; }'")   # conntrack on in this netns
    out = {"kernel_filter": [], "dump_and_delete": [], "conntrack_tool": []}
    for dummy in range(repeat):
        for way in out:
            host.run(["conntrack", "-I"] + CT_ENTRY)
            assert entries(host) == 1
            with in_netns(host.path):
                conntrack._KERNEL_FILTER["supported"] = way == "kernel_filter"
                start = time.perf_counter()
                if way == "conntrack_tool":
                    subprocess.run(["conntrack", "-D", "-f", "ipv4", "-p", "tcp",
                                    "--orig-port-dst", "8080", "--reply-src", "10.70.0.10",
                                    "--reply-port-src", "80"], check=True,
                                   capture_output=True)
                else:
                    conntrack._flush_netlink([MAPPING])
                out[way].append(time.perf_counter() - start)
            assert entries(host) == 0, way
    conntrack._KERNEL_FILTER["supported"] = True
    with open("/proc/sys/net/netfilter/nf_conntrack_buckets", encoding="ascii") as src:
        buckets = int(src.read())
    return dict({k: median_ms(v) for k, v in out.items()}, hash_buckets=buckets)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--keep", action="store_true", help="save under bench/results-kept/")
    args = ap.parse_args()
    if skipped("bench_peers_kernel"):
        return 0
    out = {"loadavg_before": loadavg(), "kernel": os.uname().release, "repeat": args.repeat,
           "packages": ensure_debian("conntrack", "nftables", "iptables", "iproute2")}
    host = SimHost("bkf")
    try:
        with in_netns(host.path):
            out["links_ms"] = links(host, args.repeat)
        out["netfilter_ms"] = netfilter_close(host, args.repeat)
        out["conntrack_ms"] = conntrack_flush(host, args.repeat)
    finally:
        host.close()
    lk, nf, ct = out["links_ms"], out["netfilter_ms"], out["conntrack_ms"]
    rows = [
        ("delete a veth pair", lk["veth_rtnl"], "%s (ip link del)" % lk["veth_ip"],
         "ip link show lo: %s" % lk["ip_exec"]),
        ("delete a bridge", lk["bridge_rtnl"], "", ""),
        ("withdraw 1 set element", nf["libnftables_kept_context"],
         "%s (nft delete element)" % nf["nft_delete_element"],
         "nft list table: %s" % nf["nft_list_table"]),
        ("withdraw 1 DNAT rule (iptables-nft)", "",
         "%s (iptables-nft-restore -D)" % nf["iptables_restore_delete"],
         "empty restore: %s" % nf["iptables_restore_noop"]),
        ("flush conntrack of 1 mapping", "%s (kernel filter)" % ct["kernel_filter"],
         "%s (conntrack -D)" % ct["conntrack_tool"],
         "ours by dump: %s (%d buckets)" % (ct["dump_and_delete"], ct["hash_buckets"])),
    ]
    report("bench_peers_kernel", out, rows, args.keep,
           header=("median ms", "ours (in-process)", "tool", "reference"))


if __name__ == "__main__":
    sys.exit(main())
