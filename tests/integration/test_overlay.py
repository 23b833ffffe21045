"""Overlay networks across simulated hosts: VXLAN between hosts, a cluster store on etcd.

A fleet here: a LAN (a bridge in a namespace of its own), a 3-member etcd cluster on
it, and three hosts (``SimHost`` namespaces with an address on the LAN), each running
the engine in its own namespace with its own state. Everything is observed as a user
would: ping and TCP between sandboxes on different hosts, ``dig @127.0.0.11``,
``getent hosts``, ``ip -j``/``bridge -j``, the keys in etcd.
"""
import json
import os
import subprocess
import uuid

import pytest

from cluster_harness import EtcdCluster
from engine_helpers import HostEngine
from harness import eventually, in_netns, suffix

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
    def answers(host, sb, name):
        out = host.sandbox_run(sb, "dig +short +time=1 +tries=1 @127.0.0.11 %s" % name,
                               check=False).stdout.split()
        return out
    assert eventually(lambda: answers(a, "web", "db") == [ips["db"]], timeout=3)
    assert eventually(lambda: answers(c, "cache", "web-alias") == [ips["web"]], timeout=3)
    assert eventually(lambda: answers(b, "db", "cache.%s" % net) == [ips["cache"]], timeout=3)
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
    vx = [l for l in a.ip_json("-d link show type vxlan")
          if l["ifname"].startswith("vx-")]
    assert vx and vx[0]["linkinfo"]["info_data"]["port"] == 4789
