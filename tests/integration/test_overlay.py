"""Overlay networks across simulated hosts: VXLAN between hosts, a cluster store on etcd.

A fleet here: a LAN (a bridge in a namespace of its own), a 3-member etcd cluster on
it, and three hosts (``SimHost`` namespaces with an address on the LAN), each running
the engine in its own namespace with its own state. Everything is observed as a user
would: ping and TCP between sandboxes on different hosts, ``dig @127.0.0.11``,
``getent hosts``, ``ip -j``/``bridge -j``, the keys in etcd.
"""
import json
import os

import pytest

from cluster_harness import EtcdCluster
from engine_helpers import HostEngine
from harness import eventually, in_netns, suffix, tcp_answer, tcp_greeter, wait_listening

from ansible_collections.cnm.core.plugins.module_utils.cluster import agent_service
from ansible_collections.cnm.core.plugins.module_utils.errors import CnmError


@pytest.fixture(scope="module")
def fleet():
    with EtcdCluster(members=3, extra_hosts=3) as cluster:
        cluster.root = "/cnmt-%s" % suffix()
        try:
            yield cluster
        finally:
            for host in cluster.hosts:
                agent_service.stop_agent(host.run_dir)


def _engine(fleet, host, check_mode=False, **cluster):
    opts = {"cluster_store": list(fleet.endpoints), "advertise_address": _lan_ip(host)}
    opts.update(cluster)
    return ClusterEngine(host, opts, check_mode=check_mode)


class ClusterEngine(HostEngine):
    """HostEngine with the cluster options of this fleet."""

    def __init__(self, host, cluster, check_mode=False, firewall_backend="nftables"):
        super().__init__(host, check_mode=check_mode, firewall_backend=firewall_backend)
        self.cluster = cluster

    def __getattr__(self, verb):
        from ansible_collections.cnm.core.plugins.module_utils.controller import Engine

        def call(params=None, **kw):
            params = dict(params or {}, **kw)
            engine = Engine(state_dir=self.host.state_dir, run_dir=self.host.run_dir,
                            netns_dir=self.host.netns_dir, check_mode=self.check_mode,
                            firewall_backend=self.firewall_backend, cluster=self.cluster)
            with in_netns(self.host.path):
                return getattr(engine, verb)(params)
        return call


def _lan_ip(host):
    addrs = host.ip_json("addr show dev lan0")
    return [a["local"] for a in addrs[0]["addr_info"] if a["family"] == "inet"][0]


def _getent(host, sandbox, name):
    """``getent hosts name`` in ``sandbox`` with its resolv.conf over /etc/resolv.conf (a
    private mount namespace: nothing outside sees the bind mount)."""
    resolv = os.path.join(host.run_dir, "sandboxes", sandbox, "resolv.conf")
    return host.sandbox_run(sandbox, [
        "unshare", "--mount", "sh", "-c",
        "mount --bind %s /etc/resolv.conf && getent hosts %s" % (resolv, name)],
        check=False, timeout=20).stdout.split()


def _addr(result):
    return result.data["endpoint"]["IPAddress"]


@pytest.fixture
def net(fleet):
    """A fresh overlay network name; removed from every host afterwards."""
    name = "ov-%s" % suffix()
    yield name
    for host in fleet.hosts:
        try:
            _engine(fleet, host).network(name=name, state="absent", force=True)
        except CnmError:
            pass


def test_sandboxes_on_three_hosts_ping_each_other_by_address_and_name(fleet, net):
    a, b, c = fleet.hosts
    results = {}
    for host, sb in ((a, "web"), (b, "db"), (c, "cache")):
        eng = _engine(fleet, host)
        res = eng.network(name=net, driver="overlay")
        assert res.changed
        results[sb] = eng.endpoint(sandbox=sb, network=net, aliases=["%s-alias" % sb])
    ips = {sb: _addr(r) for sb, r in results.items()}
    assert len(set(ips.values())) == 3
    assert a.ping(ips["db"], sandbox="web", timeout=3)
    assert b.ping(ips["cache"], sandbox="db", timeout=3)
    assert c.ping(ips["web"], sandbox="cache", timeout=3)
    # names of sandboxes on other hosts, through each host's resolver
    answers = _dig
    assert eventually(lambda: answers(a, "web", "db") == [ips["db"]], timeout=3)
    assert eventually(lambda: answers(c, "cache", "web-alias") == [ips["web"]], timeout=3)
    assert eventually(lambda: answers(b, "db", "cache.%s" % net) == [ips["cache"]], timeout=3)
    assert _getent(a, "web", "db")[:2] == [ips["db"], "db"]
    # PTR of a sandbox on another host
    ptr = a.sandbox_run("web", "dig +short +time=1 +tries=1 @127.0.0.11 -x %s" % ips["cache"],
                        check=False).stdout.split()
    assert ptr and ptr[0].rstrip(".").split(".")[0] in ("cache", "cache-alias")
    # MTU 1450 inside: 1422 bytes of ICMP payload cross, 1423 do not
    link = a.ip_json("link show eth0", sandbox="web")[0]
    assert link["mtu"] == 1450
    assert a.sandbox_run("web", "ping -c1 -W2 -M do -s 1422 %s" % ips["db"],
                         check=False).returncode == 0
    assert a.sandbox_run("web", "ping -c1 -W2 -M do -s 1423 %s" % ips["db"],
                         check=False).returncode != 0


def test_a_second_run_changes_nothing_and_the_store_has_one_definition(fleet, net):
    a, b, dummy = fleet.hosts
    for host in (a, b):
        _engine(fleet, host).network(name=net, driver="overlay")
        _engine(fleet, host).endpoint(sandbox="s1", network=net)
    for host in (a, b):
        assert not _engine(fleet, host).network(name=net, driver="overlay").changed
        assert not _engine(fleet, host).endpoint(sandbox="s1", network=net).changed
    vx = [link for link in a.ip_json("-d link show type vxlan")
          if link["ifname"].startswith("vx-")]
    assert vx and vx[0]["linkinfo"]["info_data"]["port"] == 4789


def _dig(host, sb, name):
    return host.sandbox_run(sb, "dig +short +time=1 +tries=1 @127.0.0.11 %s" % name,
                            check=False).stdout.split()


def _fdb_macs(host, net_id):
    entries = json.loads(host.run("bridge -j fdb show dev vx-%s" % net_id[:12]).stdout or "[]")
    return {e["mac"] for e in entries if e.get("dst")}


def test_a_detach_on_one_host_is_gone_on_the_others_within_a_second(fleet, net):
    a, b, c = fleet.hosts
    for host, sb in ((a, "leaver"), (b, "stayer"), (c, "third")):
        _engine(fleet, host).network(name=net, driver="overlay")
        res = _engine(fleet, host).endpoint(sandbox=sb, network=net)
    net_id = res.data["endpoint"]["NetworkID"]
    leaver = _engine(fleet, a).endpoint(sandbox="leaver", network=net).data["endpoint"]
    assert eventually(lambda: _dig(b, "stayer", "leaver") == [leaver["IPAddress"]])
    assert leaver["MacAddress"] in _fdb_macs(c, net_id)
    _engine(fleet, a).endpoint(sandbox="leaver", network=net, state="absent")
    # no module run on b or c: their agents saw the change in etcd
    assert eventually(lambda: _dig(b, "stayer", "leaver") == [], timeout=1.0)
    assert eventually(lambda: _dig(c, "third", "leaver") == [], timeout=1.0)
    assert eventually(lambda: leaver["MacAddress"] not in _fdb_macs(b, net_id), timeout=1.0)
    assert eventually(lambda: leaver["MacAddress"] not in _fdb_macs(c, net_id), timeout=1.0)


def test_a_killed_agent_is_restarted_by_the_next_module_run_and_catches_up(fleet, net):
    a, b, dummy = fleet.hosts
    for host, sb in ((a, "x1"), (b, "y1")):
        _engine(fleet, host).network(name=net, driver="overlay")
        _engine(fleet, host).endpoint(sandbox=sb, network=net)
    pid = agent_service.agent_status(b.run_dir)["pid"]
    assert agent_service.agent_status(b.run_dir)["running"]
    os.kill(pid, 9)
    assert eventually(lambda: not agent_service.agent_status(b.run_dir)["running"])
    late = _engine(fleet, a).endpoint(sandbox="x2", network=net).data["endpoint"]
    assert eventually(lambda: _dig(b, "y1", "x2") == [], timeout=1.0)  # nobody listens
    res = _engine(fleet, b).sandbox(name="unrelated-%s" % suffix())  # any module run
    assert any("host agent" in a for a in res.actions)
    assert agent_service.agent_status(b.run_dir)["running"]
    assert eventually(lambda: _dig(b, "y1", "x2") == [late["IPAddress"]], timeout=2.0)
    assert b.ping(late["IPAddress"], sandbox="y1", timeout=3)


def test_two_overlay_networks_are_isolated_on_every_host(fleet, net):
    a, b, dummy = fleet.hosts
    other = net + "b"
    try:
        for host, n, sb in ((a, net, "p1"), (b, net, "p2"), (a, other, "q1"), (b, other, "q2")):
            _engine(fleet, host).network(name=n, driver="overlay")
            _engine(fleet, host).endpoint(sandbox=sb, network=n)
        ip = {sb: _engine(fleet, h).endpoint(sandbox=sb, network=n).data["endpoint"][
            "IPAddress"] for h, n, sb in ((a, net, "p1"), (b, net, "p2"),
                                          (a, other, "q1"), (b, other, "q2"))}
        assert a.ping(ip["p2"], sandbox="p1", timeout=3)
        assert a.ping(ip["q2"], sandbox="q1", timeout=3)
        for src_host, src, dst in ((a, "q1", "p2"), (b, "q2", "p1"), (a, "q1", "p1"),
                                   (a, "p1", "q2")):
            assert not src_host.ping(ip[dst], sandbox=src, timeout=1), (src, dst)
    finally:
        for host in (a, b):
            _engine(fleet, host).network(name=other, state="absent", force=True)


def test_an_overlay_sandbox_reaches_the_lan_as_its_host_and_publishes_ports(fleet, net):
    a, dummy, dummy = fleet.hosts
    lan = fleet.client
    _engine(fleet, a).network(name=net, driver="overlay")
    _engine(fleet, a).endpoint(sandbox="web", network=net)
    server = lan.popen(tcp_greeter(7001, "lan", idle=30, with_client=True))
    try:
        wait_listening(lan, 7001)
        seen = tcp_answer(a, "10.77.0.2", 7001, sandbox="web", timeout=3)
        assert seen == "hello from lan %s" % _lan_ip(a)
    finally:
        server.kill()
        server.wait()
    _engine(fleet, a).port_mapping(sandbox="web", network=net,
                                   ports=[{"host_port": 8088, "container_port": 80}])
    server = a.popen(tcp_greeter(80, "web", idle=30), sandbox="web")
    try:
        wait_listening(a, 80, sandbox="web")
        assert tcp_answer(lan, _lan_ip(a), 8088, timeout=3) == "hello from web"
    finally:
        server.kill()
        server.wait()


def _etcd_keys(fleet, prefix):
    with in_netns(fleet.client.path):
        from ansible_collections.cnm.core.plugins.module_utils.cluster.client import (
            EtcdClient, StoreConfig)
        client = EtcdClient(StoreConfig(list(fleet.endpoints)))
        try:
            kvs, dummy = client.range(prefix, prefix=True, keys_only=True)
        finally:
            client.close()
    return [kv.key for kv in kvs]


def _cnm_links(host):
    return [link["ifname"] for link in host.ip_json("link show")
            if link["ifname"].startswith(("ov-", "vx-"))]


def test_check_mode_on_a_fresh_fleet_predicts_and_creates_nothing(fleet, net):
    for host in fleet.hosts:
        res = _engine(fleet, host, check_mode=True).network(name=net, driver="overlay")
        assert res.changed
        res = _engine(fleet, host, check_mode=True).endpoint(sandbox="c1", network=net)
        assert res.changed
    assert _etcd_keys(fleet, "/cnm/v1/networks/%s" % net) == []
    for host in fleet.hosts:
        assert not [link for link in _cnm_links(host) if net in link]
        assert "c1" not in host.sandboxes()


@pytest.mark.parametrize("params, field", [
    ({"driver_options": {"com.docker.network.driver.overlay.vxlanid_list": "0"}},
     "driver_options.com.docker.network.driver.overlay.vxlanid_list"),
    ({"driver_options": {"com.docker.network.driver.overlay.vxlanid_list": "16777215"}},
     "driver_options.com.docker.network.driver.overlay.vxlanid_list"),
])
def test_bad_vnis_are_refused_naming_the_field_and_nothing_is_made(fleet, net, params, field):
    a = fleet.hosts[0]
    before = _cnm_links(a)
    with pytest.raises(CnmError) as err:
        _engine(fleet, a).network(name=net, driver="overlay", **params)
    assert err.value.field == field
    assert _cnm_links(a) == before
    assert _etcd_keys(fleet, "/cnm/v1/networks/%s" % net) == []


def test_an_overlapping_subnet_is_refused_and_nothing_is_made(fleet, net):
    a, b, dummy = fleet.hosts
    _engine(fleet, a).network(name=net, driver="overlay",
                              ipam={"config": [{"subnet": "10.250.0.0/24"}]})
    before = _cnm_links(b)
    with pytest.raises(CnmError) as err:
        _engine(fleet, b).network(name=net + "x", driver="overlay",
                                  ipam={"config": [{"subnet": "10.250.0.128/25"}]})
    assert err.value.field.startswith("ipam.config[0]")
    assert _cnm_links(b) == before
    assert _etcd_keys(fleet, "/cnm/v1/networks/%sx" % net) == []


def test_overlay_without_a_cluster_store_is_refused(fleet, net):
    a = fleet.hosts[0]
    with pytest.raises(CnmError) as err:
        ClusterEngine(a, {}).network(name=net, driver="overlay")
    assert err.value.field == "cluster_store"
    assert not [link for link in _cnm_links(a) if net in link]


def test_an_unreachable_store_fails_naming_the_endpoints_tried(fleet, net):
    a = fleet.hosts[0]
    dead = ["http://10.77.0.250:2379", "http://10.77.0.251:2379"]
    with pytest.raises(CnmError) as err:
        ClusterEngine(a, {"cluster_store": dead, "advertise_address": _lan_ip(a)}).network(
            name=net, driver="overlay")
    assert "10.77.0.250" in str(err.value) and "10.77.0.251" in str(err.value)
    assert not [link for link in _cnm_links(a) if net in link]


def test_missing_tls_files_are_refused_naming_the_field(fleet, net, tmp_path):
    a = fleet.hosts[0]
    opts = {"cluster_store": ["https://10.77.0.11:2379"],
            "cluster_store_tls": {"ca": str(tmp_path / "nope.pem")}}
    with pytest.raises(CnmError) as err:
        ClusterEngine(a, opts).network(name=net, driver="overlay")
    assert err.value.field == "cluster_store_tls.ca"


def test_removing_the_network_everywhere_leaves_nothing(fleet, net):
    hosts = fleet.hosts
    for host in hosts:
        _engine(fleet, host).network(name=net, driver="overlay")
        res = _engine(fleet, host).endpoint(sandbox="z", network=net)
    net_id = res.data["endpoint"]["NetworkID"]
    assert _etcd_keys(fleet, "/cnm/v1/")
    for host in hosts:
        _engine(fleet, host).network(name=net, state="absent", force=True)
    for host in hosts:
        assert not [link for link in _cnm_links(host) if net_id[:12] in link]
        fdb = json.loads(host.run("bridge -j fdb show").stdout or "[]")
        assert not [e for e in fdb if net_id[:12] in e.get("ifname", "")]
        assert host.run("ip xfrm state").stdout.strip() == ""
    keys = _etcd_keys(fleet, "/cnm/v1/")
    assert not [k for k in keys if net_id in k or k.endswith("/networks/%s" % net)]


def test_removing_a_host_from_the_cluster_frees_its_addresses(fleet, net):
    a, b, dummy = fleet.hosts
    for host, sb in ((a, "keep"), (b, "gone")):
        _engine(fleet, host).network(name=net, driver="overlay")
        _engine(fleet, host).endpoint(sandbox=sb, network=net)
    gone = _engine(fleet, b).endpoint(sandbox="gone", network=net).data["endpoint"]
    assert eventually(lambda: _dig(a, "keep", "gone") == [gone["IPAddress"]])
    # b dies for good: its namespace goes without any cnm run
    with pytest.raises(CnmError) as err:
        _engine(fleet, b).cluster_host(host=_lan_ip(b))
    assert err.value.field == "host"
    predicted = _engine(fleet, a, check_mode=True).cluster_host(host=_lan_ip(b))
    assert predicted.changed and predicted.data["removed"]["endpoints"] == ["gone"]
    res = _engine(fleet, a).cluster_host(host=_lan_ip(b))
    assert res.data["removed"]["addresses"] == [gone["IPAddress"]]
    assert res.data["removed"]["networks"] == [net]
    assert eventually(lambda: _dig(a, "keep", "gone") == [], timeout=1.0)
    assert not _engine(fleet, a).cluster_host(host=_lan_ip(b)).changed
    keys = _etcd_keys(fleet, "/cnm/v1/ipam/%s/addr/" % gone["NetworkID"])
    assert not [k for k in keys if k.endswith("/" + gone["IPAddress"])]
    # b's local instance is stale now; clean it up as the test's own housekeeping
    agent_service.stop_agent(b.run_dir)


def test_with_the_store_down_a_run_checks_the_local_copy_and_says_so(fleet, net):
    a = fleet.hosts[0]
    _engine(fleet, a).network(name=net, driver="overlay")
    _engine(fleet, a).endpoint(sandbox="solo", network=net)
    for member in fleet.members:
        fleet.kill(member)
    try:
        res = _engine(fleet, a).network(name=net, driver="overlay")
        assert not res.changed
        assert any("cluster store unreachable" in w for w in res.warnings), res.warnings
        assert res.data["network"]["Scope"] == "global"
        assert a.ping(_engine(fleet, a).endpoint(sandbox="solo", network=net).data[
            "endpoint"]["Gateway"], sandbox="solo")
    finally:
        for member in fleet.members:
            if not member.running:
                fleet._start(member, "existing")  # pylint: disable=protected-access
        fleet.wait_healthy()


def test_prune_removes_an_unused_overlay_instance_only_with_a_cluster_store(fleet, net):
    a = fleet.hosts[0]
    _engine(fleet, a).network(name=net, driver="overlay")
    kept = ClusterEngine(a, {}).prune(networks=True)
    assert net not in kept.data["networks"] and any(net in w for w in kept.warnings)
    res = _engine(fleet, a).prune(networks=True)
    assert net in res.data["networks"]
    assert _etcd_keys(fleet, "/cnm/v1/networks/%s" % net) == []
