"""Lifecycle stories on a simulated host: subnets, removal, drift, crashes."""
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from engine_helpers import HostEngine
from harness import eventually
from snapshot import kernel_state, snapshot, store_rows
from ansible_collections.cnm.core.plugins.module_utils.errors import CnmError

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def test_twenty_networks_get_distinct_subnets_avoiding_host_routes(host):
    host.run("ip link add hostlan type veth peer name hostlan1 && ip link set hostlan up")
    host.run("ip route add 172.19.0.0/16 dev hostlan")
    host.run("ip addr add 172.21.5.1/24 dev hostlan")
    eng = HostEngine(host)
    subnets = []
    for i in range(20):
        net = eng.network(name="n%d" % i).data["network"]
        subnets.append(ipaddress.ip_network(net["IPAM"]["Config"][0]["Subnet"]))
    assert len(set(subnets)) == 20
    for a in subnets:
        assert not a.overlaps(ipaddress.ip_network("172.19.0.0/16"))
        assert not a.overlaps(ipaddress.ip_network("172.21.5.0/24"))
        for b in subnets:
            assert a == b or not a.overlaps(b)
    # an allocator-chosen subnet is not a difference on the next run
    assert not eng.network(name="n0").changed
    assert not eng.network(name="n0", ipam={"config": []}).changed


def test_remove_network_with_endpoints_needs_force_and_leaves_nothing(host):
    eng = HostEngine(host)
    eng.network(name="app", ipam={"config": [{"subnet": "10.80.0.0/24"}]})
    eng.endpoint(network="app", sandbox="web")
    eng.endpoint(network="app", sandbox="db")
    with pytest.raises(CnmError) as err:
        eng.network(name="app", state="absent")
    assert "db" in str(err.value) and "web" in str(err.value)
    assert eng.network(name="app", state="absent", force=True).changed
    # namespaces of removed sandboxes take their veths along, asynchronously
    assert eventually(lambda: [l["ifname"] for l in host.ip_json("link")] == ["lo"])
    assert host.sandboxes() == []
    rows = store_rows(host)
    assert rows["endpoints"] == [] and rows["allocations"] == [] and rows["sandboxes"] == []
    assert sorted(r[1] for r in rows["networks"]) == ["host", "none"]


def _host_veth_of(host, sandbox):
    """The host side of the veth whose peer is ``sandbox``'s eth0."""
    [eth0] = host.ip_json("link show dev eth0", sandbox=sandbox)
    [veth] = [link["ifname"] for link in host.ip_json("link")
              if link["ifindex"] == eth0["link_index"]]
    return veth


def _drift_cases(host):
    return {
        "host veth": lambda: host.run("ip link del %s" % _host_veth_of(host, "a")),
        "bridge": lambda: host.run("ip link del br-drift"),
        "address": lambda: host.sandbox_run("a", "ip addr flush dev eth0"),
        "namespace": lambda: _delete_namespace(host, "a"),
    }


def _veths(host):
    return [l["ifname"] for l in host.ip_json("link") if l["ifname"].startswith("veth")]


def _delete_namespace(host, sandbox):
    """Remove a sandbox namespace by hand; the kernel destroys its veth asynchronously."""
    count = len(_veths(host))
    subprocess.run(["umount", "-l", host.sandbox_path(sandbox)], check=True)
    os.unlink(host.sandbox_path(sandbox))
    deadline = time.time() + 10
    while len(_veths(host)) == count and time.time() < deadline:
        time.sleep(0.05)


# (network, endpoint a, endpoint b) changed in check mode, then in the real run, after
# each drift of sandbox a's endpoint or of the bridge. Check mode changes nothing, so
# with the bridge gone each endpoint reports its own detachment; in the real run the
# network's repair re-attaches every endpoint.
DRIFT_REPORTS = {
    "host veth": ([False, True, False], [False, True, False]),
    "bridge": ([True, True, True], [True, False, False]),
    "address": ([False, True, False], [False, True, False]),
    "namespace": ([False, True, False], [False, True, False]),
}


@pytest.mark.parametrize("what", ["host veth", "bridge", "address", "namespace"])
def test_drift_is_reported_by_check_and_repaired_by_a_run(host, what):
    eng = HostEngine(host)
    chk = HostEngine(host, check_mode=True)
    net = {"name": "app", "ipam": {"config": [{"subnet": "10.81.0.0/24"}]},
           "driver_options": {"com.docker.network.bridge.name": "br-drift"}}
    eng.network(net)
    eng.endpoint(network="app", sandbox="a")
    eng.endpoint(network="app", sandbox="b")
    assert host.ping("10.81.0.3", sandbox="a")
    _drift_cases(host)[what]()
    before = snapshot(host)
    changed = [chk.network(net).changed, chk.endpoint(network="app", sandbox="a").changed,
               chk.endpoint(network="app", sandbox="b").changed]
    predicted, repaired = DRIFT_REPORTS[what]
    assert changed == predicted, what
    assert snapshot(host) == before, "check mode changed something"
    changed = [eng.network(net).changed, eng.endpoint(network="app", sandbox="a").changed,
               eng.endpoint(network="app", sandbox="b").changed]
    assert changed == repaired, what
    assert host.ping("10.81.0.3", sandbox="a"), what
    assert host.ping("10.81.0.2", sandbox="b"), what
    # and now everything is in sync
    assert not any([chk.network(net).changed, chk.endpoint(network="app", sandbox="a").changed,
                    chk.endpoint(network="app", sandbox="b").changed])


def test_gw_priority_picks_the_default_route(host):
    eng = HostEngine(host)
    eng.network(name="one", ipam={"config": [{"subnet": "10.82.1.0/24"}]})
    eng.network(name="two", ipam={"config": [{"subnet": "10.82.2.0/24"}]})
    eng.endpoint(network="one", sandbox="s")
    eng.endpoint(network="two", sandbox="s", gw_priority=10)
    routes = host.ip_json("route show default", sandbox="s")
    assert routes[0]["gateway"] == "10.82.2.1" and routes[0]["dev"] == "eth1"
    eng.endpoint(network="two", sandbox="s", state="absent")
    routes = host.ip_json("route show default", sandbox="s")
    assert routes[0]["gateway"] == "10.82.1.1" and routes[0]["dev"] == "eth0"


def test_addresses_walk_forward_without_immediate_reuse(host):
    eng = HostEngine(host)
    eng.network(name="app", ipam={"config": [{"subnet": "10.83.0.0/24"}]})
    assert eng.endpoint(network="app", sandbox="a").data["endpoint"]["IPAddress"] == "10.83.0.2"
    eng.endpoint(network="app", sandbox="a", state="absent")
    assert eng.endpoint(network="app", sandbox="b").data["endpoint"]["IPAddress"] == "10.83.0.3"


CRASH_SCRIPT = r"""
import sys
sys.path.insert(0, %(tests)r)
import conftest  # noqa: F401 (collection path)
from harness import in_netns
from ansible_collections.cnm.core.plugins.module_utils.controller import Engine
e = Engine(state_dir=%(state)r, run_dir=%(run)r, netns_dir=%(netns)r, firewall_backend="none")
with in_netns(%(path)r):
    e.endpoint({"network": "app", "sandbox": "victim"})
"""


@pytest.mark.parametrize("point", ["endpoint-intent-recorded", "endpoint-interface-made"])
def test_kill_9_in_the_middle_of_an_attach_leaks_nothing(host, point):
    eng = HostEngine(host)
    eng.network(name="app", ipam={"config": [{"subnet": "10.84.0.0/24"}]})
    eng.endpoint(network="app", sandbox="keeper")
    marker = os.path.join(host.root, "marker")
    env = dict(os.environ, CNM_FAULT_PAUSE=point, CNM_FAULT_MARKER=marker)
    script = CRASH_SCRIPT % {"tests": os.path.dirname(HERE), "state": host.state_dir,
                             "run": host.run_dir, "netns": host.netns_dir, "path": host.path}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.time() + 30
        while not os.path.exists(marker) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert os.path.exists(marker), "the run never reached %s" % point
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    # the next run converges: the dead run's endpoint is rolled back, then made again
    res = eng.endpoint(network="app", sandbox="other")
    assert res.changed
    rows = store_rows(host)
    owners = {r[2] for r in rows["allocations"]}
    assert len(rows["endpoints"]) == 2 and len(owners) == 2
    assert "victim" not in host.sandboxes()
    assert eventually(lambda: len(_veths(host)) == 2)
    assert eng.endpoint(network="app", sandbox="victim").changed
    assert host.ping(eng.endpoint(network="app", sandbox="victim").data["endpoint"]
                     ["IPAddress"], sandbox="keeper")
    # the kernel holds exactly the three endpoints the store describes, nothing of the
    # dead run: one eth0 with its one address per sandbox (besides the kernel's
    # link-local one), one veth each on the bridge
    state = kernel_state(host)
    bridge = "br-" + eng.network(name="app").data["network"]["Id"][:12]
    expected = {}
    for sandbox in ("keeper", "other", "victim"):
        ep = eng.endpoint(network="app", sandbox=sandbox).data["endpoint"]
        expected[sandbox] = ["%s/%d" % (ep["IPAddress"], ep["IPPrefixLen"])]
    assert {sb: {link["ifname"]: [a for a in link["addr"] if not a.startswith("fe80:")]
                 for link in links["addr"] if link["ifname"] != "lo"}
            for sb, links in state["sandboxes"].items()} == {
        sb: {"eth0": addr} for sb, addr in expected.items()}
    assert sorted((link["ifname"][:4], link["master"] or "")
                  for link in state["host"]["addr"] if link["ifname"] != "lo") == [
        (bridge[:4], "")] + [("veth", bridge)] * 3


def test_subnet_change_needs_force_then_rebuilds_and_reattaches(host):
    eng = HostEngine(host)
    eng.network(name="app", ipam={"config": [{"subnet": "10.86.0.0/24"}]})
    eng.endpoint(network="app", sandbox="a", aliases=["alpha"], mac_address="02:00:00:00:00:0a")
    eng.endpoint(network="app", sandbox="b")
    with pytest.raises(CnmError, match="force"):
        eng.network(name="app", ipam={"config": [{"subnet": "10.87.0.0/24"}]})
    res = eng.network(name="app", ipam={"config": [{"subnet": "10.87.0.0/24"}]}, force=True)
    assert res.changed
    containers = res.data["network"]["Containers"].values()
    addresses = sorted(c["IPv4Address"].split("/")[0] for c in containers)
    assert addresses == ["10.87.0.2", "10.87.0.3"]
    a = eng.endpoint(network="app", sandbox="a")
    assert not a.changed
    assert a.data["endpoint"]["Aliases"] == ["alpha"]
    assert a.data["endpoint"]["MacAddress"] == "02:00:00:00:00:0a"
    b_ip = eng.endpoint(network="app", sandbox="b").data["endpoint"]["IPAddress"]
    assert host.ping(b_ip, sandbox="a")


def test_mtu_changes_in_place(host):
    eng = HostEngine(host)
    eng.network(name="app", ipam={"config": [{"subnet": "10.88.0.0/24"}]})
    eng.endpoint(network="app", sandbox="a")
    res = eng.network(name="app", driver_options={"com.docker.network.driver.mtu": 1400})
    assert res.changed
    bridge = "br-" + res.data["network"]["Id"][:12]
    assert host.ip_json("link show dev %s" % bridge)[0]["mtu"] == 1400
    assert host.ip_json("link show dev eth0", sandbox="a")[0]["mtu"] == 1400
    assert not eng.network(name="app",
                           driver_options={"com.docker.network.driver.mtu": "1400"}).changed


def test_a_removed_sandbox_held_open_leaves_the_bridge_at_once(host):
    """A sandbox's namespace may outlive its removal (the resolver closes its sockets
    there a moment later; here the test holds it open): its veth must leave the bridge
    at once, so a sandbox made again with the same address is the only one answering."""
    eng = HostEngine(host)
    res = eng.network(name="app", ipam={"config": [{"subnet": "10.89.0.0/24"}]})
    bridge = "br-" + res.data["network"]["Id"][:12]
    eng.endpoint(network="app", sandbox="web", ipv4_address="10.89.0.10")
    eng.endpoint(network="app", sandbox="client", ipv4_address="10.89.0.20")
    held = os.open(host.sandbox_path("client"), os.O_RDONLY)
    try:
        eng.endpoint(network="app", sandbox="client", state="absent")
        assert len(host.ip_json("link show master %s" % bridge)) == 1
        eng.endpoint(network="app", sandbox="client", ipv4_address="10.89.0.20")
        ports = host.ip_json("link show master %s" % bridge)
        assert len(ports) == 2, ports
        assert host.ping("10.89.0.20", sandbox="web")
        # the old veth, still alive with its namespace, is down and on no bridge
        stale = [l for l in host.ip_json("link") if l["ifname"].startswith("veth")
                 and l["ifname"] not in {p["ifname"] for p in ports}]
        assert len(stale) == 1 and "master" not in stale[0], stale
        assert "UP" not in stale[0]["flags"], stale
    finally:
        os.close(held)
    assert eventually(lambda: len(_veths(host)) == 2, timeout=10)


def test_the_resolver_lets_go_of_a_removed_sandbox_at_once(host):
    """The resolver's sockets in a sandbox keep its namespace, and the host end of its
    veth, alive. When the sandbox is removed the resolver closes them (``_close``, before
    it answers the engine): the veth goes then, not at the end of the fd-number grace."""
    import threading
    from ansible_collections.cnm.core.plugins.module_utils.dns.resolver import listeners
    from ansible_collections.cnm.core.plugins.module_utils.netns import namespace
    eng = HostEngine(host)
    eng.network(name="app", ipam={"config": [{"subnet": "10.89.1.0/24"}]})
    eng.endpoint(network="app", sandbox="web", ipv4_address="10.89.1.10")
    with namespace.entered(host.sandbox_path("web")):
        udp = listeners.socket.socket(listeners.socket.AF_INET, listeners.socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
    eng.endpoint(network="app", sandbox="web", state="absent")
    assert len(_veths(host)) == 1  # the socket holds the namespace, like the resolver's
    server = listeners.Listeners(forwarder=None, stop=threading.Event())
    sb = listeners.Sandbox("web", host.sandbox_path("web"))
    sb.udp = udp
    fd = udp.fileno()
    server._close(sb)
    assert os.readlink("/proc/self/fd/%d" % fd) == os.devnull  # the number stays taken
    assert eventually(lambda: _veths(host) == [], timeout=10), _veths(host)
    server.reap(time.monotonic() + listeners.SOCKET_CLOSE_GRACE + 1)
    assert udp.fileno() == -1 and server.graveyard == []


def _without_cursor(doc):
    doc = json.loads(doc)
    doc.pop("ipam_last", None)
    return doc


def test_a_full_bridge_fails_clearly_and_leaves_nothing(host):
    """A Linux bridge takes at most 1,023 ports: the attach past that fails with the
    limit named, and leaves no sandbox, veth, address or row behind."""
    eng = HostEngine(host)
    res = eng.network(name="app", ipam={"config": [{"subnet": "10.89.8.0/22"}]})
    bridge = "br-" + res.data["network"]["Id"][:12]
    batch = "".join("link add fill%d master %s type veth peer name fillp%d\n" % (i, bridge, i)
                    for i in range(1023))
    host.run(["ip", "-batch", "-"], input=batch)
    before = snapshot(host)
    with pytest.raises(CnmError) as err:
        eng.endpoint(network="app", sandbox="late")
    assert "1023 ports" in str(err.value) and "BR_MAX_PORTS" in str(err.value), err.value
    after = snapshot(host)
    # the allocator's cursor moved on, as Docker's does (an address given back is not
    # the next one handed out); every other row and the kernel are as they were
    for snap in (before, after):
        snap["store"]["networks"] = [row[:2] + (_without_cursor(row[2]),)
                                     for row in snap["store"]["networks"]]
    assert after == before
    assert host.sandboxes() == []
