"""The host CLI ``cnm`` (scripts/cnm) on a simulated host, run as a user runs it.

h1 plays the host (network ``app`` with sandbox ``web`` publishing 8080 -> 80), h2 a
machine on its LAN. Every command runs as a process inside h1 (nsenter), with h1's
engine directories from the environment, exactly as the modules' common options.
"""
import html
import json
import os
import struct
import sys

import pytest

from engine_helpers import HostEngine
from harness import (connect, eventually, kill_processes_in, tcp_answer, tcp_greeter,
                     wait_listening)

H1, H2 = "192.168.79.1", "192.168.79.2"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "scripts", "cnm")
FLEET = os.path.join(REPO, "tests", "integration", "fixtures_cli", "fleet")
DOCKER_INSPECT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                              "docker_network_inspect_20.10.json")


class Cli:
    """``cli("ls")`` runs ``cnm ls`` inside ``host`` with one firewall backend (and the
    common ``options`` given)."""

    def __init__(self, host, backend, options=()):
        self.host = host
        self.backend = backend
        self.options = list(options)

    def __call__(self, *args, env=None):
        argv = [sys.executable, SCRIPT, "--firewall-backend", self.backend] + self.options
        argv += list(args)
        if env:
            argv = ["env"] + ["%s=%s" % kv for kv in env.items()] + argv
        proc = self.host.run(argv, check=False, timeout=120)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    def json(self, *args):
        proc = self(*args, "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return json.loads(proc.stdout)


@pytest.fixture(params=["nftables", "iptables"])
def lab(request, make_host):
    h1, h2 = make_host("c1"), make_host("c2")
    connect(h1, h2, H1, H2)
    eng = HostEngine(h1, firewall_backend=request.param)
    eng.network(name="app", ipam={"config": [{"subnet": "10.71.0.0/24"}]})
    eng.endpoint(network="app", sandbox="web", ipv4_address="10.71.0.10")
    eng.port_mapping(sandbox="web", ports=[{"container_port": 80, "host_port": 8080}])
    server = h1.popen(tcp_greeter(80, "web", idle=120), sandbox="web")
    try:
        wait_listening(h1, 80, sandbox="web")
        yield h1, h2, eng, Cli(h1, request.param)
    finally:
        server.kill()
        server.wait()


# backend-independent tests run with nftables only; restore runs with both
nftables_only = pytest.mark.parametrize("lab", ["nftables"], indirect=True)


@nftables_only
def test_ls_prints_docker_like_tables_of_what_the_kernel_holds(lab):
    h1, dummy, dummy2, cli = lab
    proc = cli("ls")
    assert proc.returncode == 0, proc.stderr
    nets = cli.json("ls", "networks")["networks"]
    app = next(n for n in nets if n["NAME"] == "app")
    assert {n["NAME"] for n in nets} == {"app", "host", "none"}
    assert app["DRIVER"] == "bridge" and app["SCOPE"] == "local"
    # the short id is the one in the bridge's name (br-<id12>): that bridge exists
    bridge = h1.ip_json("link show dev br-%s" % app["NETWORK ID"])
    assert bridge and bridge[0]["operstate"] in ("UP", "UNKNOWN")
    lines = proc.stdout.splitlines()
    assert lines[0] == "NETWORKS:"
    assert lines[1] == "NETWORK ID     NAME      DRIVER    SCOPE"
    assert "%s   app       bridge    local" % app["NETWORK ID"] in lines
    eps = cli.json("ls", "endpoints")["endpoints"]
    assert [(e["SANDBOX"], e["NETWORK"], e["INTERFACE"], e["IPV4"]) for e in eps] == [
        ("web", "app", "eth0", "10.71.0.10/24")]
    # the interface and its address are really there, with the MAC the table shows
    inside = {i["ifname"]: i for i in h1.ip_json("addr show", sandbox="web")}
    assert inside["eth0"]["address"] == eps[0]["MAC"]
    assert any(a["local"] == "10.71.0.10" for a in inside["eth0"]["addr_info"])
    ports = cli.json("ls", "ports")["ports"]
    assert ports == [{"SANDBOX": "web", "NETWORK": "app", "CONTAINER": "80/tcp 10.71.0.10",
                      "HOST": "0.0.0.0:8080"}]
    sandboxes = cli("ls", "sandboxes")
    assert sandboxes.stdout.splitlines()[0].split()[:3] == ["SANDBOX", "ID", "NAME"]
    assert " web " in sandboxes.stdout


@nftables_only
def test_inspect_prints_docker_shaped_json_and_names_what_is_missing(lab):
    dummy, dummy2, dummy3, cli = lab
    proc = cli("inspect", "app")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    with open(DOCKER_INSPECT, encoding="utf-8") as fh:
        docker_keys = set(json.load(fh)[0])
    assert len(out) == 1 and docker_keys <= set(out[0])
    web = next(iter(out[0]["Containers"].values()))
    assert web["Name"] == "web" and web["IPv4Address"] == "10.71.0.10/24"
    by_id = json.loads(cli("inspect", out[0]["Id"][:12]).stdout)
    assert by_id[0]["Name"] == "app"
    sandbox = json.loads(cli("inspect", "--type", "sandbox", "web").stdout)
    assert sandbox[0]["NetworkSettings"]["Ports"] == {
        "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}
    missing = cli("inspect", "app", "nosuch")
    assert missing.returncode == 1
    assert json.loads(missing.stdout)[0]["Name"] == "app"
    assert "no such network or sandbox: nosuch" in missing.stderr


@nftables_only
def test_doctor_finds_a_veth_deleted_by_hand_and_fix_puts_it_back(lab):
    h1, h2, dummy, cli = lab
    clean = cli("doctor")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "ok:" in clean.stdout
    web = json.loads(cli("inspect", "web").stdout)[0]
    veth = web["Networks"]["app"]["HostInterfaceName"]
    h1.run("ip link del %s" % veth)
    assert not h1.ping("10.71.0.10")
    broken = cli("doctor")
    assert broken.returncode == 1
    assert "host veth %s is missing" % veth in broken.stdout
    assert "sandbox web" in broken.stdout
    report = json.loads(cli("doctor", "--json").stdout)
    assert not report["ok"]
    assert {p["repair"]["module"] for p in report["problems"]} == {"cnm_endpoint"}
    fixed = cli("doctor", "--fix")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "cnm_endpoint network=app sandbox=web" in fixed.stdout
    assert h1.ip_json("link show dev %s" % veth)
    # the host's neighbour entry for the sandbox went FAILED while the veth was gone: a
    # new resolution may take a retry when the machine is busy (seen once in the suite)
    assert h1.ping("10.71.0.10", count=3)
    assert tcp_answer(h2, H1, 8080) == "hello from web"
    assert cli("doctor").returncode == 0


@nftables_only
def test_doctor_names_a_leaked_link_on_a_bridge_and_leaves_it_to_the_user(lab):
    h1, dummy, dummy2, cli = lab
    app = cli.json("ls", "networks")["networks"]
    bridge = "br-%s" % next(n for n in app if n["NAME"] == "app")["NETWORK ID"]
    h1.run("ip link add vethleak0 type veth peer name vethleak1 && "
           "ip link set vethleak0 master %s" % bridge)
    proc = cli("doctor", "--fix")
    assert proc.returncode == 1
    assert "link vethleak0 on bridge %s (network app) belongs to no endpoint" % bridge \
        in proc.stdout
    assert "by hand: ip link del vethleak0" in proc.stdout
    assert h1.ip_json("link show dev vethleak0")  # --fix did not touch it


def test_restore_brings_a_published_port_back_after_nft_flush_ruleset(lab):
    h1, h2, dummy, cli = lab
    assert tcp_answer(h2, H1, 8080) == "hello from web"
    h1.run("nft flush ruleset")
    assert tcp_answer(h2, H1, 8080) is None
    drift = cli("doctor")
    assert drift.returncode == 1 and "firewall of network app" in drift.stdout
    check = cli("restore", "--check")
    assert check.returncode == 1 and "restore rules of app" in check.stdout
    proc = cli("restore")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "restore rules of app" in proc.stdout
    assert eventually(lambda: tcp_answer(h2, H1, 8080) == "hello from web", timeout=5)
    assert cli("doctor").returncode == 0
    again = cli.json("restore")
    assert again["changed"] is False and again["networks"] == ["app"]


@nftables_only
def test_restore_starts_a_resolver_that_was_killed(lab):
    h1, dummy, dummy2, cli = lab
    pidfile = os.path.join(h1.run_dir, "dns", "resolver.pid")
    with open(pidfile) as fh:
        pid = int(fh.read().strip())
    os.kill(pid, 9)
    assert eventually(lambda: not os.path.exists("/proc/%d/cmdline" % pid) or not open(
        "/proc/%d/cmdline" % pid).read(), timeout=5)
    down = cli("doctor")
    assert down.returncode == 1 and "resolver" in down.stdout
    proc = cli("restore")
    assert proc.returncode == 0, proc.stderr
    assert "resolver" in proc.stdout
    answer = h1.sandbox_run("web", ["dig", "+short", "+time=2", "+tries=2",
                                    "@127.0.0.11", "web"], check=False)
    assert answer.stdout.strip() == "10.71.0.10"
    assert cli("doctor").returncode == 0


@nftables_only
def test_doctor_fix_rebuilds_what_a_reboot_took(lab):
    """A reboot as the kernel sees it: processes gone, namespace files gone (/run is
    tmpfs), bridges and veths gone, the ruleset empty. doctor --fix makes it all again."""
    h1, h2, dummy, cli = lab
    bridge = "br-%s" % cli.json("ls", "networks")["networks"][0]["NETWORK ID"]
    pidfile = os.path.join(h1.run_dir, "dns", "resolver.pid")
    with open(pidfile) as fh:
        os.kill(int(fh.read().strip()), 9)
    kill_processes_in([h1.sandbox_path("web")])  # the greeter (the fixture's own)
    h1.run("umount %s && rm %s" % (h1.sandbox_path("web"), h1.sandbox_path("web")))
    h1.run("ip link del %s; nft flush ruleset" % bridge)
    assert eventually(lambda: not [l for l in h1.ip_json("link show")
                                   if l["ifname"].startswith("veth")])
    broken = cli("doctor")
    assert broken.returncode == 1
    for text in ("bridge %s is missing" % bridge, "namespace %s" % h1.sandbox_path("web"),
                 "resolver", "firewall of network app"):
        assert text in broken.stdout, broken.stdout
    fixed = cli("doctor", "--fix")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert h1.ping("10.71.0.10")
    server = h1.popen(tcp_greeter(80, "web", idle=60), sandbox="web")
    try:
        wait_listening(h1, 80, sandbox="web")
        assert tcp_answer(h2, H1, 8080) == "hello from web"
        answer = h1.sandbox_run("web", ["dig", "+short", "+time=2", "+tries=2",
                                        "@127.0.0.11", "web"], check=False)
        assert answer.stdout.strip() == "10.71.0.10"
    finally:
        server.kill()
        server.wait()


def _png_size(path):
    with open(path, "rb") as fh:
        head = fh.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@nftables_only
def test_graph_draws_every_network_and_sandbox_as_svg_and_png(lab, tmp_path):
    h1, dummy, eng, cli = lab
    eng.network(name="backend", internal=True)
    eng.endpoint(network="backend", sandbox="db")
    eng.endpoint(network="backend", sandbox="web")
    base = str(tmp_path / "topology")
    out = cli.json("graph", "-o", base, "--host", "h1")
    assert out["files"] == [base + ".svg", base + ".png"]
    svg = html.unescape(open(base + ".svg", encoding="utf-8").read())  # dot writes &#45;
    for name in ("network app", "network backend", "network host", "network none",
                 "sandbox web", "sandbox db", "host h1", "0.0.0.0:8080/tcp",
                 "eth0 10.71.0.10/24"):
        assert name in svg, name
    width, height = _png_size(base + ".png")
    assert width > 200 and height > 100


def test_graph_of_a_fleet_from_gathered_facts(tmp_path):
    base = str(tmp_path / "fleet")
    proc = Cli(_Local(), "none")("graph", "--facts", FLEET, "-o", base)
    assert proc.returncode == 0, proc.stderr
    svg = html.unescape(open(base + ".svg", encoding="utf-8").read())  # dot writes &#45;
    for text in ("host node1", "host node2", "network fleet", "hosts: node1, node2",
                 "sandbox web", "sandbox db", "sandbox db-metrics"):
        assert text in svg, text
    assert _png_size(base + ".png")[0] > 200


def test_graph_without_graphviz_names_the_package(tmp_path):
    proc = Cli(_Local(), "none")("graph", "--facts", FLEET, "-o", str(tmp_path / "x"),
                                 env={"PATH": str(tmp_path)})
    assert proc.returncode == 2
    assert "install the graphviz package" in proc.stderr
    assert list(tmp_path.iterdir()) == []


class _Local:
    """Runs a command here (no namespace): ``--facts`` reads files only."""

    @staticmethod
    def run(argv, check=False, timeout=60):
        import subprocess
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              check=check)


@pytest.fixture
def fleet():
    """A one-member etcd cluster and two hosts on its LAN (tests/cluster_harness.py)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from cluster_harness import EtcdCluster
    from ansible_collections.cnm.core.plugins.module_utils.cluster import agent_service
    with EtcdCluster(members=1, extra_hosts=2) as cluster:
        try:
            yield cluster
        finally:
            for host in cluster.hosts:
                agent_service.stop_agent(host.run_dir)


def _lan_ip(host):
    addrs = host.ip_json("addr show dev lan0")
    return [a["local"] for a in addrs[0]["addr_info"] if a["family"] == "inet"][0]


def test_doctor_checks_overlay_peers_and_names_stale_cluster_records(fleet):
    from harness import in_netns
    from ansible_collections.cnm.core.plugins.module_utils.cluster.client import (
        EtcdClient, StoreConfig)
    from ansible_collections.cnm.core.plugins.module_utils.cluster.networks import (
        ClusterNetworks)
    from ansible_collections.cnm.core.plugins.module_utils.controller.engine import Engine
    a, b = fleet.hosts
    store = ",".join(fleet.endpoints)
    cli = {h.name: Cli(h, "nftables", ["--cluster-store", store,
                                       "--advertise-address", _lan_ip(h)]) for h in (a, b)}
    net_id = None
    for host, sb in ((a, "x1"), (b, "y1")):
        cluster = {"cluster_store": list(fleet.endpoints), "advertise_address": _lan_ip(host)}
        engine = Engine(state_dir=host.state_dir, run_dir=host.run_dir,
                        netns_dir=host.netns_dir, firewall_backend="nftables",
                        cluster=cluster)
        with in_netns(host.path):
            engine.network({"name": "ovl", "driver": "overlay"})
            ep = engine.endpoint({"network": "ovl", "sandbox": sb}).data["endpoint"]
        net_id = ep["NetworkID"]
    y1 = ep
    for host in (a, b):
        clean = cli[host.name]("doctor")
        assert clean.returncode == 0, clean.stdout + clean.stderr
    assert eventually(lambda: a.ping(y1["IPAddress"], sandbox="x1", timeout=3))
    # a peer entry deleted by hand on a: named, and a module run's repair brings it back
    vxlan = "vx-%s" % net_id[:12]
    a.run("bridge fdb del %s dev %s dst %s" % (y1["MacAddress"], vxlan, _lan_ip(b)))
    drift = cli[a.name]("doctor")
    assert drift.returncode == 1
    assert "overlay network ovl" in drift.stdout and y1["MacAddress"] in drift.stdout
    fixed = cli[a.name]("doctor", "--fix")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "cnm_network driver=overlay name=ovl" in fixed.stdout
    assert a.ping(y1["IPAddress"], sandbox="x1", timeout=3)
    # a record a's address published for an endpoint a does not have: stale
    with in_netns(fleet.client.path):
        client = EtcdClient(StoreConfig(list(fleet.endpoints)))
        try:
            networks = ClusterNetworks(client)
            networks.publish_endpoint(networks.get("ovl"), "f" * 64, {
                "host": _lan_ip(a), "vtep": _lan_ip(a), "mac": "02:42:0a:00:00:99",
                "ipv4": "", "ipv6": "", "names": ["ghost"], "sandbox": "ghost"})
        finally:
            client.close()
    stale = cli[a.name]("doctor", "--json")
    assert stale.returncode == 1
    found = [p for p in json.loads(stale.stdout)["problems"] if p["kind"] == "cluster"]
    assert len(found) == 1 and found[0]["repair"] is None
    assert "stale cluster record of endpoint ffffffffffff (sandbox ghost)" in found[0][
        "message"]
    assert found[0]["hint"].startswith("etcdctl del ") and "f" * 64 in found[0]["hint"]
    assert cli[b.name]("doctor").returncode == 0  # b has no claim on it
