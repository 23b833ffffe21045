#!/usr/bin/env python
"""Ours against Podman's network stacks (netavark + aardvark-dns, CNI), in the same run.

Backs the README's peer column: attach, attach + 1 published port and its detach
(netavark; the CNI plugins Podman 3 chained), and the DNS figures (aardvark-dns: dnsperf
qps, one query at a time). netavark, aardvark-dns and containernetworking-plugins are
installed with apt when missing (Debian 12: 1.4.0, 1.4.0, 1.1.1).

Each side works inside its own throwaway simulated host:

- attach: ours is one engine call (``endpoint``: namespace, veth, address, route, the
  resolver told and listening); netavark's is the namespace made by the engine's own
  namespace code (Podman makes it, not netavark) plus one ``netavark setup`` with DNS on
  (it starts aardvark-dns with the first container);
- attach + 1 published port: ours ``endpoint`` + ``port_mapping`` (nftables and iptables
  backends); netavark ``setup`` with one port mapping (its iptables firewall driver, the
  only one 1.4 has); detach: ours ``port_mapping`` absent + ``endpoint`` absent,
  netavark ``teardown`` plus the namespace's removal; the same through CNI's bridge,
  portmap, firewall and tuning plugins (ADD, then DEL), without DNS;
- DNS: 21 sandboxes (containers) with names and aliases, then ``dnsperf -l SECONDS``
  and one query at a time from one of them, against our resolver (127.0.0.11) and
  against aardvark-dns (the network's gateway), with the same names.

Ours are in-engine (no Python start-up, as the README's other figures); netavark's
include its process start (it is a binary run once per container). Run as root:
``.venv/bin/python bench/bench_peers_netavark.py [--runs 20] [--seconds 10] [--keep]``.
Prints one JSON object, then a table.
"""
import json
import os
import signal
import subprocess
import sys
import time

from peerlib import dns_arguments, ensure_debian, loadavg, median_ms, report, skipped

from harness import SimHost, in_netns, kill_processes_in

from bench_dns_engine import build, run_dnsperf, run_sequential  # noqa: E402
from bench_ports import Bench  # noqa: E402
from ansible_collections.cnm.core.plugins.module_utils.netns.namespace import (  # noqa: E402
    create_netns, delete_netns)

NETAVARK = "/usr/lib/podman/netavark"
AARDVARK = "/usr/lib/podman/aardvark-dns"
CNI_PATH = "/usr/lib/cni"
NET_ID = "5d1f" * 16
WARM = 250          # the warm-up container (10.88.1.252); measured ones are 0..runs-1


class Netavark:
    """Containers on one netavark bridge network inside ``host`` (caller inside it)."""

    def __init__(self, host, subnet="10.88.1"):
        self.host, self.subnet = host, subnet
        self.config = os.path.join(host.root, "netavark")
        os.makedirs(self.config, exist_ok=True)

    def options(self, n, port=None):
        ports = ([{"host_ip": "", "container_port": 80, "host_port": port, "range": 1,
                   "protocol": "tcp"}] if port else [])
        return json.dumps({
            "container_id": "%064x" % (n + 1), "container_name": "c%d" % n,
            "networks": {"bench": {"interface_name": "eth0",
                                   "static_ips": ["%s.%d" % (self.subnet, n + 2)],
                                   "aliases": ["c%d" % n, "c%d-svc" % n]}},
            "network_info": {"bench": {
                "name": "bench", "id": NET_ID, "driver": "bridge",
                "network_interface": "nvbr0", "ipv6_enabled": False, "internal": False,
                "dns_enabled": True, "ipam_options": {"driver": "host-local"},
                "subnets": [{"subnet": "%s.0/24" % self.subnet,
                             "gateway": "%s.1" % self.subnet}]}},
            "port_mappings": ports})

    def _run(self, verb, n, port):
        proc = subprocess.run([NETAVARK, "--config", self.config, "--aardvark-binary",
                               AARDVARK, verb, self.host.sandbox_path("c%d" % n)],
                              input=self.options(n, port), text=True, capture_output=True,
                              check=False, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError("netavark %s c%d: %s" % (verb, n, proc.stderr.strip()))

    def attach(self, n, port=None):
        """Seconds for the namespace + ``netavark setup``."""
        start = time.perf_counter()
        create_netns(self.host.sandbox_path("c%d" % n))
        self._run("setup", n, port)
        return time.perf_counter() - start

    def detach(self, n, port=None):
        """Seconds for ``netavark teardown`` + removing the namespace."""
        start = time.perf_counter()
        self._run("teardown", n, port)
        delete_netns(self.host.sandbox_path("c%d" % n))
        return time.perf_counter() - start

    def stop_aardvark(self):
        """aardvark-dns daemonizes: stop it by the pid in its pidfile, if still there."""
        pidfile = os.path.join(self.config, "aardvark-dns", "aardvark.pid")
        try:
            with open(pidfile, encoding="ascii") as src:
                os.kill(int(src.read().strip()), signal.SIGTERM)
        except (OSError, ValueError):
            pass


class Cni(Netavark):
    """The CNI plugins Podman 3 chained (bridge with host-local IPAM, portmap, firewall,
    tuning), each run as libcni runs it: ADD in order, each given the previous result;
    DEL in reverse order."""

    PLUGINS = ("bridge", "portmap", "firewall", "tuning")

    def __init__(self, host, subnet="10.88.2"):
        super().__init__(host, subnet)
        self.results = {}

    def _conf(self, kind, port, prev):
        conf = {"cniVersion": "0.4.0", "name": "bench", "type": kind}
        if kind == "bridge":
            conf.update(bridge="cnibr0", isGateway=True, ipMasq=True, hairpinMode=True,
                        ipam={"type": "host-local", "dataDir": os.path.join(self.config, "ipam"),
                              "routes": [{"dst": "0.0.0.0/0"}],
                              "ranges": [[{"subnet": "%s.0/24" % self.subnet,
                                           "gateway": "%s.1" % self.subnet}]]})
        elif kind == "portmap":
            conf.update(capabilities={"portMappings": True}, runtimeConfig={"portMappings": [
                {"hostPort": port, "containerPort": 80, "protocol": "tcp"}] if port else []})
        elif kind == "firewall":
            conf.update(backend="iptables")
        if prev is not None:
            conf["prevResult"] = prev
        return json.dumps(conf)

    def _run(self, verb, n, port):
        env = dict(os.environ, CNI_COMMAND="ADD" if verb == "setup" else "DEL",
                   CNI_CONTAINERID="%064x" % (n + 1), CNI_IFNAME="eth0",
                   CNI_NETNS=self.host.sandbox_path("c%d" % n), CNI_PATH=CNI_PATH)
        prev = self.results.pop(n, None)
        plugins = self.PLUGINS if verb == "setup" else self.PLUGINS[::-1]
        for kind in plugins:
            proc = subprocess.run([os.path.join(CNI_PATH, kind)], env=env, text=True,
                                  input=self._conf(kind, port, prev), capture_output=True,
                                  check=False, timeout=60)
            if proc.returncode != 0:
                raise RuntimeError("CNI %s %s c%d: %s" % (kind, verb, n, proc.stdout.strip()))
            if verb == "setup":
                prev = json.loads(proc.stdout)
        if verb == "setup":
            self.results[n] = prev

    def stop_aardvark(self):
        pass


def attach_detach(runs):
    out = {"ours": {}, "netavark": {}, "cni": {}}
    for port in (None, 8080):
        key = "with_port" if port else "no_port"
        backends = ["nftables", "iptables"] if port else ["nftables"]
        for backend in backends:
            host = SimHost("bnvo", tmpfs_runtime=True)
            try:
                with in_netns(host.path):
                    b = Bench(host, backend)
                    b.call("network", name="app", ipam={"config": [{"subnet": "10.89.0.0/16"}]})
                    b.call("endpoint", network="app", sandbox="warm")
                    if port:
                        att = [b.attach("s%d" % i, port + i) for i in range(runs)]
                        det = [b.detach("s%d" % i) for i in range(runs)]
                    else:
                        att = [b.call("endpoint", network="app", sandbox="s%d" % i)
                               for i in range(runs)]
                        det = [b.call("endpoint", network="app", sandbox="s%d" % i,
                                      state="absent") for i in range(runs)]
                out["ours"]["%s_%s" % (key, backend)] = {"attach": median_ms(att),
                                                         "detach": median_ms(det)}
            finally:
                host.close()
        for name, peer in (("netavark", Netavark), ("cni", Cni)):
            host = SimHost("bnvn", tmpfs_runtime=True)
            nv = peer(host)
            try:
                with in_netns(host.path):
                    nv.attach(WARM)                   # the bridge (and aardvark-dns) start here
                    att = [nv.attach(i, port and port + i) for i in range(runs)]
                    det = [nv.detach(i, port and port + i) for i in range(runs)]
                    nv.detach(WARM)
                out[name][key] = {"attach": median_ms(att), "detach": median_ms(det)}
            finally:
                nv.stop_aardvark()
                host.close()
    return out


def our_dns(seconds, queries):
    """dnsperf and one query at a time against our resolver (bench_dns_engine's setup)."""
    host = SimHost("bnvd")
    try:
        names = build(host)[0]
        return {"dnsperf": run_dnsperf(host, names, seconds),
                "sequential": run_sequential(host, names, queries)}
    finally:
        host.close()


def dns(seconds, queries):
    out = {"ours": our_dns(seconds, queries)}
    host = SimHost("bnva")
    nv = Netavark(host)
    try:
        with in_netns(host.path):
            for i in range(21):
                nv.attach(i)
        names = ["c%d" % i for i in range(1, 21)] + ["c%d-svc" % i for i in range(1, 21)]
        server = "%s.1" % nv.subnet
        out["aardvark"] = {"dnsperf": run_dnsperf(host, names, seconds, server, "c0"),
                           "sequential": run_sequential(host, names, queries, server, "c0")}
    finally:
        nv.stop_aardvark()
        kill_processes_in([host.path])
        host.close()
    return out


def qps(side):
    return "%.0f (%d)" % (side["dnsperf"]["qps"] or 0, side["dnsperf"]["lost"])


def main():
    ap = dns_arguments(__doc__)
    args = ap.parse_args()
    if skipped("bench_peers_netavark"):
        return 0
    if not 1 <= args.runs < WARM:
        ap.error("--runs: 1 to %d" % (WARM - 1))
    out = {"loadavg_before": loadavg(), "runs": args.runs,
           "packages": ensure_debian("netavark", "aardvark-dns", "containernetworking-plugins",
                                     "dnsperf")}
    if not all(out["packages"].values()):
        print(json.dumps(out, indent=2))
        print("netavark, aardvark-dns, the CNI plugins or dnsperf could not be installed: "
              "no comparison")
        return 1
    out["attach_detach_ms"] = attach_detach(args.runs)
    out["dns"] = dns(args.seconds, args.queries)
    ours, nv = out["attach_detach_ms"]["ours"], out["attach_detach_ms"]["netavark"]
    ver = "netavark %s" % out["packages"]["netavark"]
    dver = "aardvark-dns %s" % out["packages"]["aardvark-dns"]
    cni = out["attach_detach_ms"]["cni"]
    cver = "CNI plugins %s (bridge, portmap, firewall, tuning)" % out["packages"][
        "containernetworking-plugins"]
    d = out["dns"]
    rows = [
        ("attach (namespace, veth, IP, route, DNS)", ours["no_port_nftables"]["attach"],
         nv["no_port"]["attach"], ver),
        ("detach (namespace removed)", ours["no_port_nftables"]["detach"],
         nv["no_port"]["detach"], ver),
        ("attach + 1 port, nftables / iptables", "%s / %s" % (
            ours["with_port_nftables"]["attach"], ours["with_port_iptables"]["attach"]),
         nv["with_port"]["attach"], ver + " (iptables)"),
        ("detach of that, nftables / iptables", "%s / %s" % (
            ours["with_port_nftables"]["detach"], ours["with_port_iptables"]["detach"]),
         nv["with_port"]["detach"], ver + " (iptables)"),
        ("attach + 1 port (CNI)", "", cni["with_port"]["attach"], cver),
        ("detach of that (CNI)", "", cni["with_port"]["detach"], cver),
        ("attach, no port (CNI)", "", cni["no_port"]["attach"], cver),
        ("DNS: dnsperf qps (lost)", qps(d["ours"]), qps(d["aardvark"]), dver),
        ("DNS: one query at a time, median us", d["ours"]["sequential"]["median_us"],
         d["aardvark"]["sequential"]["median_us"], dver),
    ]
    report("bench_peers_netavark", out, rows, args.keep,
           header=("median (ms unless said)", "ours", "peer", "peer is"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
