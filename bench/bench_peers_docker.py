#!/usr/bin/env python
"""Network create/delete: ours against Docker 20.10 (Debian's docker.io), same run.

Backs the README's "Docker 20.10: 82-103 ms" per ``docker network create``. docker.io
is installed with apt when missing (``--no-install-recommends``: docker.io, containerd,
runc, tini; its system service is not started). This script starts its own dockerd
(which starts its own containerd) inside a throwaway simulated host, in a private mount
namespace, with every directory under the host's temporary root; it is stopped by its
PID at the end, and the namespace with it. The real host's network is never touched.

Measured: ``--runs`` networks, each with an explicit /24 (Docker's default pools hold
only 30 user networks), created and then deleted through Docker's API (a POST/DELETE on
its unix socket: the daemon's own work) and through the ``docker`` CLI (what a user
types: the CLI's start-up included); ours are engine calls in-process, per firewall
backend (the README's in-engine figures). Then Docker's embedded DNS: 21 containers
(an image of busybox-static's one binary, ``docker import``-ed, running ``sleep``) with
names and aliases on one network, ``dnsperf -l SECONDS`` and one query at a time from
the first one against 127.0.0.11, and the same against our resolver
(``bench_peers_netavark.our_dns``).

Run as root: ``.venv/bin/python bench/bench_peers_docker.py [--runs 20] [--seconds 10]
[--keep]``.
Prints one JSON object, then a table.
"""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time

from peerlib import dns_arguments, ensure_debian, loadavg, median_ms, report, skipped

from harness import SimHost

from bench_dns_engine import run_dnsperf, run_sequential  # noqa: E402
from bench_engine import create_delete  # noqa: E402
from bench_peers_netavark import our_dns, qps  # noqa: E402


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=60)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


class Dockerd:
    """One dockerd inside ``host`` (its network namespace, a private mount namespace)."""

    def __init__(self, host):
        self.root = os.path.join(host.root, "docker")
        os.makedirs(self.root)
        self.sock = os.path.join(self.root, "docker.sock")
        with open(os.path.join(self.root, "daemon.json"), "w", encoding="ascii") as out:
            out.write("{}\n")
        self.log = open(os.path.join(self.root, "dockerd.log"), "wb")  # noqa: SIM115
        # nsenter and unshare exec what follows: this PID is dockerd's
        self.proc = host.popen(["unshare", "-m", "--propagation", "private", "dockerd",
                                "--config-file", os.path.join(self.root, "daemon.json"),
                                "--data-root", os.path.join(self.root, "data"),
                                "--exec-root", os.path.join(self.root, "exec"),
                                "--pidfile", os.path.join(self.root, "docker.pid"),
                                "-H", "unix://" + self.sock, "--storage-driver", "vfs"],
                               stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while True:
            try:
                if self.api("GET", "/_ping")[0] == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("dockerd did not start; see %s" % self.log.name)
            time.sleep(0.2)
        self.version = self.api("GET", "/version")[1]["Version"]

    def api(self, method, path, body=None):
        conn = UnixHTTP(self.sock)
        try:
            conn.request(method, path, body=json.dumps(body) if body is not None else None,
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, (json.loads(data) if data.strip().startswith(b"{") else data)
        finally:
            conn.close()

    def cli(self, *args):
        subprocess.run(["docker", "-H", "unix://" + self.sock] + list(args), check=True,
                       capture_output=True, timeout=60)

    def stop(self):
        """Remove the containers, then SIGTERM dockerd by its PID (it stops its
        containerd), SIGKILL after 20 s."""
        if self.proc.poll() is None:
            ids = subprocess.run(["docker", "-H", "unix://" + self.sock, "ps", "-aq"],
                                 capture_output=True, text=True, check=False).stdout.split()
            if ids:
                subprocess.run(["docker", "-H", "unix://" + self.sock, "rm", "-f"] + ids,
                               capture_output=True, check=False, timeout=120)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


def timed(func, *args):
    start = time.perf_counter()
    func(*args)
    return time.perf_counter() - start


def docker_dns(host, dockerd, seconds, queries):
    """21 named containers on one network; DNS figures from the first one."""
    rootfs = os.path.join(host.root, "rootfs")
    os.makedirs(os.path.join(rootfs, "bin"))
    subprocess.run(["cp", "/bin/busybox", os.path.join(rootfs, "bin", "busybox")], check=True)
    os.symlink("busybox", os.path.join(rootfs, "bin", "sleep"))
    tarball = os.path.join(host.root, "rootfs.tar")
    subprocess.run(["tar", "-C", rootfs, "-cf", tarball, "."], check=True)
    dockerd.cli("import", tarball, "cnm-bench-sleep:1")
    dockerd.cli("network", "create", "--subnet", "10.213.0.0/24", "dns")
    for i in range(21):
        dockerd.cli("run", "-d", "--name", "c%d" % i, "--network", "dns", "--network-alias",
                    "c%d-svc" % i, "cnm-bench-sleep:1", "/bin/sleep", "3600")
    info = dockerd.api("GET", "/containers/c0/json")[1]
    path = host.sandbox_path("c0")
    open(path, "w").close()
    subprocess.run(["mount", "--bind", "/proc/%d/ns/net" % info["State"]["Pid"], path],
                   check=True)
    names = ["c%d" % i for i in range(1, 21)] + ["c%d-svc" % i for i in range(1, 21)]
    return {"dnsperf": run_dnsperf(host, names, seconds, "127.0.0.11", "c0"),
            "sequential": run_sequential(host, names, queries, "127.0.0.11", "c0")}


def docker_side(runs, seconds, queries):
    host = SimHost("bdk")
    dockerd = None
    try:
        dockerd = Dockerd(host)

        def create(i):
            status, body = dockerd.api("POST", "/networks/create", {
                "Name": "a%d" % i, "CheckDuplicate": True,
                "IPAM": {"Config": [{"Subnet": "10.210.%d.0/24" % i}]}})
            assert status == 201, body
        out = {"version": dockerd.version}
        create(255)                                   # warm-up
        dockerd.api("DELETE", "/networks/a255")
        out["api_create"] = median_ms([timed(create, i) for i in range(runs)])
        out["api_delete"] = median_ms([timed(dockerd.api, "DELETE", "/networks/a%d" % i)
                                       for i in range(runs)])
        out["cli_create"] = median_ms([timed(dockerd.cli, "network", "create", "--subnet",
                                             "10.211.%d.0/24" % i, "c%d" % i)
                                       for i in range(runs)])
        out["cli_delete"] = median_ms([timed(dockerd.cli, "network", "rm", "c%d" % i)
                                       for i in range(runs)])
        out["dns"] = docker_dns(host, dockerd, seconds, queries)
        return out
    finally:
        if dockerd:
            dockerd.stop()
        host.close()


def our_side(runs, backend):
    res = create_delete(backend, runs)
    return {"create": res["network_create"]["median_ms"],
            "delete": res["network_delete"]["median_ms"]}


def main():
    ap = dns_arguments(__doc__)
    args = ap.parse_args()
    if skipped("bench_peers_docker"):
        return 0
    out = {"loadavg_before": loadavg(), "runs": args.runs,
           "packages": ensure_debian("docker.io", "busybox-static", "dnsperf")}
    if not all(out["packages"].values()):
        print(json.dumps(out, indent=2))
        print("docker.io, busybox-static or dnsperf could not be installed: no comparison")
        return 1
    out["ours"] = {b: our_side(args.runs, b) for b in ("none", "nftables", "iptables")}
    out["ours_dns"] = our_dns(args.seconds, args.queries)
    out["docker"] = docker_side(args.runs, args.seconds, args.queries)
    o, d = out["ours"], out["docker"]
    peer = "Docker %s" % d["version"]
    rows = [("network create, ours none / nftables / iptables",
             "%s / %s / %s" % (o["none"]["create"], o["nftables"]["create"],
                               o["iptables"]["create"]),
             "%s (API) / %s (CLI)" % (d["api_create"], d["cli_create"]), peer),
            ("network delete, ours none / nftables / iptables",
             "%s / %s / %s" % (o["none"]["delete"], o["nftables"]["delete"],
                               o["iptables"]["delete"]),
             "%s (API) / %s (CLI)" % (d["api_delete"], d["cli_delete"]), peer),
            ("DNS: dnsperf qps (lost)", qps(out["ours_dns"]), qps(d["dns"]), peer),
            ("DNS: one query at a time, median us", out["ours_dns"]["sequential"]["median_us"],
             d["dns"]["sequential"]["median_us"], peer)]
    report("bench_peers_docker", out, rows, args.keep,
           header=("median ms", "ours (in-engine)", "peer", "peer is"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
