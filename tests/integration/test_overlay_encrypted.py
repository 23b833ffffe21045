"""Encrypted overlay networks (``encrypted: true``) across simulated hosts.

The fleet of ``test_overlay.py`` (a LAN switch, 3 etcd members, 3 hosts): the user asks for
an overlay network with ``driver_options: {encrypted: true}``. On a kernel without ESP or
AES-GCM (this CI machine: XFRM is built in, ESP and GCM are not) the request fails naming
``driver_options.encrypted`` and nothing is made, neither a link nor a key in etcd. On a
kernel with them (the QEMU VM, ``scripts/vm/boot.sh``) sandboxes ping across hosts, a
capture on the LAN switch shows ESP and no cleartext VXLAN, a ``key_rotation`` under a
fast ping loses no run of pings as long as 1 s, keys appear in no result and no agent
log, and removing the network everywhere leaves no xfrm object and no mark chain.
"""
import json
import os
import re
import signal
import subprocess
import time

import pytest

from cluster_harness import EtcdCluster
from engine_helpers import HostEngine
from harness import in_netns, suffix

from ansible_collections.cnm.core.plugins.module_utils.cluster import agent_service
from ansible_collections.cnm.core.plugins.module_utils.errors import CnmError
from ansible_collections.cnm.core.plugins.module_utils.netns import xfrm

ENCRYPTED = {"driver_options": {"encrypted": True}}
PING_INTERVAL = 0.05


@pytest.fixture(scope="module")
def fleet():
    # In the TCG VM a 3-member etcd cannot elect a leader in time: run it there with
    # CNM_TEST_ETCD_MEMBERS=1 CNM_TEST_ETCD_SLOW=1 (the cluster store's behaviour is
    # test_overlay.py's subject; here only the data plane matters).
    slow = os.environ.get("CNM_TEST_ETCD_SLOW") == "1"
    with EtcdCluster(members=int(os.environ.get("CNM_TEST_ETCD_MEMBERS", "3")),
                     extra_hosts=3, heartbeat_ms=500 if slow else 50,
                     election_ms=5000 if slow else 500) as cluster:
        try:
            yield cluster
        finally:
            for host in cluster.hosts:
                agent_service.stop_agent(host.run_dir)


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


def _engine(fleet, host, check_mode=False):
    return ClusterEngine(host, {"cluster_store": list(fleet.endpoints),
                                "advertise_address": _lan_ip(host)}, check_mode=check_mode)


def _etcd(fleet, prefix, keys_only=True):
    with in_netns(fleet.client.path):
        from ansible_collections.cnm.core.plugins.module_utils.cluster.client import (
            EtcdClient, StoreConfig)
        client = EtcdClient(StoreConfig(list(fleet.endpoints)))
        try:
            kvs, dummy = client.range(prefix, prefix=True, keys_only=keys_only)
        finally:
            client.close()
    return kvs


def _cnm_links(host):
    return [link["ifname"] for link in host.ip_json("link show")
            if link["ifname"].startswith(("ov-", "vx-"))]


def _esp_missing(host):
    """Why ``host``'s kernel cannot run ESP with AES-GCM, or None (the engine's probe)."""
    return xfrm.esp_unsupported(netns=host.path)


@pytest.fixture
def net(fleet):
    """A fresh overlay network name; removed from every host afterwards."""
    name = "ove-%s" % suffix()
    yield name
    for host in fleet.hosts:
        try:
            _engine(fleet, host).network(name=name, state="absent", force=True)
        except CnmError:
            pass


@pytest.fixture
def esp(fleet):
    """Skip unless the hosts' kernel runs ESP with AES-GCM."""
    reason = _esp_missing(fleet.hosts[0])
    if reason:
        pytest.skip("kernel without IPsec ESP/AES-GCM (%s): run in the VM "
                    "(scripts/vm/boot.sh)" % reason)


# --- a kernel without ESP ---------------------------------------------------------------
def test_encrypted_on_a_kernel_without_esp_fails_naming_the_option_and_makes_nothing(
        fleet, net):
    a = fleet.hosts[0]
    if _esp_missing(a) is None:
        pytest.skip("this kernel runs ESP: the refusal cannot be seen here")
    before = _cnm_links(a)
    for check_mode in (True, False):
        with pytest.raises(CnmError) as err:
            _engine(fleet, a, check_mode=check_mode).network(name=net, driver="overlay",
                                                             **ENCRYPTED)
        assert err.value.field == "driver_options.encrypted"
        assert "cannot run IPsec ESP with AES-GCM" in str(err.value)
        assert "CONFIG_INET_ESP" in str(err.value)
    assert _cnm_links(a) == before
    assert [kv.key for kv in _etcd(fleet, "/cnm/v1/networks/%s" % net)] == []
    assert a.run("ip xfrm state").stdout.strip() == ""
    assert a.run("nft list table inet cnm-esp", check=False).returncode != 0


def test_key_rotation_on_an_unencrypted_network_is_refused_naming_it(fleet, net):
    a = fleet.hosts[0]
    with pytest.raises(CnmError) as err:
        _engine(fleet, a).network(name=net, driver="overlay", key_rotation=1)
    assert err.value.field == "key_rotation"
    assert not [link for link in _cnm_links(a) if net in link]


# --- a kernel with ESP (the VM) ---------------------------------------------------------
def _up(fleet, net, hosts):
    results, ips = [], {}
    for i, host in enumerate(hosts):
        results.append(_engine(fleet, host).network(name=net, driver="overlay", **ENCRYPTED))
        res = _engine(fleet, host).endpoint(sandbox="e%d" % i, network=net)
        results.append(res)
        ips[i] = res.data["endpoint"]["IPAddress"]
    return results, ips, res.data["endpoint"]["NetworkID"]


def _secrets(fleet, net_id):
    kvs = _etcd(fleet, "/cnm/v1/keys/%s" % net_id, keys_only=False)
    docs = [json.loads(kv.value.decode()) for kv in kvs if "/acks/" not in kv.key]
    return [k["secret"] for d in docs for k in d.get("keys", [])]


def _leaks(secrets, results, hosts):
    text = json.dumps([r.__dict__ for r in results], default=str)
    for host in hosts:
        log = os.path.join(host.run_dir, "agent", "agent.log")
        if os.path.exists(log):
            with open(log) as f:
                text += f.read()
    return [s for s in secrets if s in text]


def test_encrypted_sandboxes_ping_across_hosts_over_esp_only(fleet, net, esp):
    a, b, dummy = fleet.hosts
    results, ips, net_id = _up(fleet, net, (a, b))
    link = a.ip_json("link show eth0", sandbox="e0")[0]
    assert link["mtu"] == 1500 - 90
    cap = fleet.lan.switch.popen(["tcpdump", "-n", "-l", "-i", "br0", "-c", "40",
                                  "esp or udp port 4789"], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(1)
        assert a.ping(ips[1], sandbox="e0", timeout=3)
        assert b.ping(ips[0], sandbox="e1", timeout=3)
    finally:
        time.sleep(0.5)
        cap.send_signal(signal.SIGINT)
        out = cap.communicate(timeout=10)[0]
    lines = (out if isinstance(out, str) else out.decode()).splitlines()
    assert [line for line in lines if "ESP" in line]
    assert not [line for line in lines if ".4789:" in line or "VXLAN" in line]
    secrets = _secrets(fleet, net_id)
    assert secrets and not _leaks(secrets, results, (a, b))


def _gaps(times):
    return max((y - x for x, y in zip(times, times[1:])), default=0)


def test_a_key_rotation_under_a_fast_ping_loses_no_second(fleet, net, esp):
    a, b, dummy = fleet.hosts
    results, ips, net_id = _up(fleet, net, (a, b))
    old = _secrets(fleet, net_id)
    ping = a.popen(["ping", "-n", "-D", "-i", str(PING_INTERVAL), ips[1]], sandbox="e0",
                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(1)
        res = _engine(fleet, a).network(name=net, driver="overlay", key_rotation=1,
                                        **ENCRYPTED)
        results.append(res)
        assert res.changed
        steps = [line for line in res.actions if line.startswith("keys of ")]
        assert [s.split(": ", 1)[1] for s in steps] == [
            "generations [0, 1], primary 0", "generations [0, 1], primary 1",
            "generations [1], primary 1"]
        time.sleep(1)
    finally:
        ping.send_signal(signal.SIGINT)
        out = ping.communicate(timeout=10)[0]
    text = out if isinstance(out, str) else out.decode()
    times = [float(t) for t in re.findall(r"^\[(\d+\.\d+)\].*icmp_seq", text, re.M)]
    assert len(times) > 20
    assert _gaps(times) <= 1.0, "a gap of %.2f s in the replies" % _gaps(times)
    new = _secrets(fleet, net_id)
    assert len(new) == 1 and new != old
    assert not _engine(fleet, a).network(name=net, driver="overlay", key_rotation=1,
                                         **ENCRYPTED).changed
    assert not _leaks(old + new, results, (a, b))


def test_removing_the_encrypted_network_everywhere_leaves_no_xfrm_state(fleet, net, esp):
    hosts = fleet.hosts
    dummy, dummy, net_id = _up(fleet, net, hosts)
    for host in hosts:
        assert host.run("ip xfrm state").stdout.strip()
    for host in hosts:
        _engine(fleet, host).network(name=net, state="absent", force=True)
    for host in hosts:
        assert host.run("ip xfrm state").stdout.strip() == ""
        assert host.run("ip xfrm policy").stdout.strip() == ""
        assert host.run("nft list table inet cnm-esp", check=False).returncode != 0
    assert [kv.key for kv in _etcd(fleet, "/cnm/v1/keys/%s" % net_id)] == []
