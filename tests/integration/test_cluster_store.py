"""The cluster store against a real 3-member etcd cluster on a LAN of simulated hosts.

One cluster serves the whole module (``tests/cluster_harness.py``); each test works under
a key root of its own, so tests never see each other's keys. The test process reaches
the LAN only from inside the client host's namespace (``store`` enters it); concurrent
allocators are processes in four other hosts' namespaces (``tests/cluster_worker.py``).
"""
import collections
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.cnm.core.plugins.module_utils.cluster.client import (
    ClusterStoreError, ClusterUnavailableError, EtcdClient, parse_store_options)
from ansible_collections.cnm.core.plugins.module_utils.cluster.ipam import ClusterIpam
from ansible_collections.cnm.core.plugins.module_utils.cluster.keys import KeyLayout
from ansible_collections.cnm.core.plugins.module_utils.cluster.networks import (
    VXLANID_OPTION, ClusterNetworks, network_request)
from ansible_collections.cnm.core.plugins.module_utils.errors import (
    ConflictError, ValidationError)
from harness import in_netns, suffix

pytestmark = pytest.mark.integration

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(os.path.dirname(TESTS), "build", "collections")
WORKER = os.path.join(TESTS, "cluster_worker.py")
VXLANID_FIELD = "driver_options." + VXLANID_OPTION


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not installed (make deps installs Debian's etcd-server)")
    from cluster_harness import EtcdCluster
    with EtcdCluster(members=3, extra_hosts=4) as made:
        yield made


class Store:
    """What a test holds: a client, a key layout of its own, networks and IPAM."""

    def __init__(self, cluster, **timeouts):
        self.cluster = cluster
        self.root = "/cnmt-%s/v1" % suffix()
        self.keys = KeyLayout(self.root)
        self.client = EtcdClient(parse_store_options(cluster.endpoints, **timeouts))
        self.networks = ClusterNetworks(self.client, self.keys)
        self.ipam = ClusterIpam(self.client, self.keys)

    def create(self, host="h1", **params):
        return self.networks.create(network_request(params), host)


@pytest.fixture
def store(cluster):
    """A Store used from inside the client host's namespace (for the whole test)."""
    with in_netns(cluster.client.path):
        made = Store(cluster, timeout=2.0, retry_for=10.0)
        try:
            yield made
        finally:
            made.client.delete(made.root + "/", prefix=True)
            made.client.close()


def _vxlan(vnis):
    return {VXLANID_OPTION: vnis}


# --- definitions ----------------------------------------------------------------------
def test_a_network_is_defined_once_and_joined_by_other_hosts(store):
    first, created = store.create("h1", name="web", labels={"tier": "front"})
    again, created_again = store.create("h2", name="web")
    assert created and not created_again
    assert again["id"] == first["id"] and again["scope"] == "global"
    assert store.networks.members(first) == ["h1", "h2"]


@pytest.mark.parametrize("params, field", [
    ({"internal": True}, "internal"),
    ({"labels": {"tier": "back"}}, "labels"),
    ({"ipam": {"config": [{"subnet": "10.200.0.0/24"}]}}, "ipam.config[0].subnet"),
    ({"driver_options": {"com.docker.network.driver.mtu": "1400"}},
     "driver_options.com.docker.network.driver.mtu"),
    ({"driver_options": _vxlan("7000")}, VXLANID_FIELD),
])
def test_a_different_definition_of_the_same_name_is_refused_naming_the_field(
        store, params, field):
    store.create("h1", name="web", labels={"tier": "front"})
    with pytest.raises(ConflictError) as err:
        store.create("h2", name="web", **params)
    assert err.value.field == field
    assert str(err.value).startswith(field) and "web" in str(err.value)
    assert store.networks.members(store.networks.get("web")) == ["h1"]


def test_the_last_host_out_removes_the_network_and_force_removes_it_at_once(store):
    web, dummy = store.create("h1", name="web")
    store.create("h2", name="web")
    store.ipam.allocate(web, "ep1", "h1")
    assert store.networks.leave("web", "h1") == {"left": True, "removed": False}
    assert store.networks.get("web") is not None
    assert store.networks.leave("web", "h2") == {"left": True, "removed": True}
    assert store.networks.get("web") is None
    kvs, dummy = store.client.range(store.root + "/", prefix=True, keys_only=True)
    assert kvs == []   # VNI, subnet, member and address keys went with it

    db, dummy = store.create("h1", name="db")
    store.create("h2", name="db")
    assert store.networks.leave("db", "h1", force=True)["removed"]
    assert store.networks.get("db") is None


# --- VNIs and subnets -----------------------------------------------------------------
@pytest.mark.parametrize("vni", ["0", "16777215", "abc"])
def test_vnis_outside_1_to_16777214_are_refused(store, vni):
    with pytest.raises(ValidationError) as err:
        store.create(name="bad", driver_options=_vxlan(vni))
    assert err.value.field == VXLANID_FIELD


def test_a_taken_vni_is_refused_and_automatic_vnis_are_distinct(store):
    first, dummy = store.create(name="a", driver_options=_vxlan("16777214"))
    assert first["vnis"] == [16777214]
    with pytest.raises(ConflictError) as err:
        store.create(name="b", driver_options=_vxlan("16777214"))
    assert err.value.field == VXLANID_FIELD and "taken by network a" in str(err.value)
    automatic = [store.create(name="auto%d" % i)[0]["vnis"][0] for i in range(4)]
    assert len(set(automatic)) == 4 and 16777214 not in automatic
    assert automatic == sorted(automatic) and automatic[0] == 4096


def test_subnets_are_chosen_from_10_0_0_0_8_and_never_overlap(store):
    a, dummy = store.create(name="a")
    b, dummy = store.create(name="b")
    assert [n["pools"][0]["subnet"] for n in (a, b)] == ["10.0.0.0/24", "10.0.1.0/24"]
    with pytest.raises(ConflictError) as err:
        store.create(name="c", ipam={"config": [{"subnet": "10.0.0.0/16"}]})
    assert err.value.field == "ipam.config[0].subnet" and "network a" in str(err.value)
    c, dummy = store.create(name="c", ipam={"config": [{"subnet": "10.0.2.0/23"}]})
    d, dummy = store.create(name="d")
    assert d["pools"][0]["subnet"] == "10.0.4.0/24"


# --- addresses ------------------------------------------------------------------------
def test_addresses_walk_forward_and_a_released_one_is_free_again(store):
    net, dummy = store.create(name="web", ipam={"config": [{"subnet": "10.9.0.0/29"}]})
    got = [str(store.ipam.allocate(net, "ep%d" % i, "h1")) for i in range(3)]
    assert got == ["10.9.0.2", "10.9.0.3", "10.9.0.4"]
    assert store.ipam.release(net, "10.9.0.3", owner="ep1")
    assert "10.9.0.3" not in store.ipam.addresses(net)
    assert not store.ipam.release(net, "10.9.0.3")                    # idempotent
    assert str(store.ipam.allocate(net, "ep3", "h1")) == "10.9.0.5"   # no immediate reuse
    assert str(store.ipam.allocate(net, "ep4", "h1")) == "10.9.0.6"
    assert str(store.ipam.allocate(net, "ep5", "h1")) == "10.9.0.3"   # wrapped round
    assert str(store.ipam.allocate(net, "ep0", "h1")) == "10.9.0.2"   # owner holds one
    with pytest.raises(ConflictError) as err:
        store.ipam.allocate(net, "ep6", "h2", address="10.9.0.4")
    assert err.value.field == "ipv4_address" and "ep2" in str(err.value)
    assert store.ipam.release(net, "10.9.0.4")
    assert str(store.ipam.allocate(net, "ep6", "h2", address="10.9.0.4")) == "10.9.0.4"


def _run_workers(store, network, hosts, per_host, count, prefix):
    """Start ``per_host`` worker processes on each host, all allocating ``count``
    addresses from the same moment; returns (lines, summed stats, that moment)."""
    start_at = time.time() + 1.0
    env = dict(os.environ, PYTHONPATH=COLLECTIONS)
    procs = []
    for h, host in enumerate(hosts):
        for p in range(per_host):
            argv = ["nsenter", "--net=%s" % host.path, sys.executable, WORKER,
                    ",".join(store.cluster.endpoints), store.root, network, host.name,
                    "%s-h%dp%d" % (prefix, h, p), str(count), str(start_at)]
            procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env))
    lines, stats = [], collections.Counter()
    try:
        for proc in procs:
            out, dummy = proc.communicate(timeout=90)
            for raw in out.splitlines():
                line = json.loads(raw)
                if "stats" in line:
                    stats.update(line["stats"])
                else:
                    lines.append(line)
    finally:
        for proc in procs:   # only after a failure: each is stopped by its own PID
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    return lines, stats, start_at


def _check_store(store, net):
    """The taken addresses of ``net``, checked: no owner holds two."""
    taken = store.ipam.addresses(net)
    owners = collections.Counter(rec["owner"] for rec in taken.values())
    assert [o for o, n in owners.items() if n > 1] == []
    return taken


def test_concurrent_allocations_from_many_hosts_are_all_distinct(store):
    net, dummy = store.create(name="busy")
    hosts = store.cluster.hosts
    lines, stats, dummy = _run_workers(store, "busy", hosts, 2, 8, "c")
    assert len(lines) == 4 * 2 * 8
    assert [line for line in lines if "error" in line] == []
    addresses = [line["address"] for line in lines]
    assert len(set(addresses)) == len(addresses) == 64
    taken = _check_store(store, net)
    assert {a: r["owner"] for a, r in taken.items()} == {
        line["address"]: line["owner"] for line in lines}
    began = min(line["at"] - line["seconds"] for line in lines)
    span = max(line["at"] for line in lines) - began
    latency = sorted(line["seconds"] for line in lines)
    print("\nconcurrent: 64 allocations by 8 processes on 4 hosts in %.2f s (%.0f/s), "
          "latency median %.0f ms, max %.0f ms; %s" % (
              span, 64 / span, 1000 * latency[32], 1000 * latency[-1], dict(stats)))


def test_killing_the_leader_mid_run_gives_no_duplicates_and_a_rerun_converges(store):
    cluster = store.cluster
    net, dummy = store.create(name="survivor")
    hosts = cluster.hosts
    killed, killed_at = [], []

    def kill_soon():
        time.sleep(1.3)   # the workers start 1 s after launch
        killed.append(cluster.kill_leader())
        killed_at.append(time.time())

    killer = threading.Thread(target=kill_soon)
    killer.start()
    try:
        lines, stats, start_at = _run_workers(store, "survivor", hosts, 2, 12, "k")
    finally:
        killer.join()
        if killed:
            cluster.restart(killed[0])
    assert killed, "the leader was not killed"
    after = [line for line in lines if line["at"] > killed_at[0]]
    assert len(after) >= 8, "the run ended before the leader was killed"
    ok = [line for line in lines if "address" in line]
    failed = [line for line in lines if "error" in line]
    assert len(ok) + len(failed) == 4 * 2 * 12
    for line in failed:   # a clear error, naming the store
        assert "cluster_store" in line["error"], line
    assert len({line["address"] for line in ok}) == len(ok)
    taken = _check_store(store, net)
    for line in ok:       # what a worker was told it holds, it holds
        assert taken[line["address"]]["owner"] == line["owner"]

    # the same run again converges: every owner holds one address, the ones it was given
    again, dummy, dummy = _run_workers(store, "survivor", hosts, 2, 12, "k")
    assert [line for line in again if "error" in line] == []
    held = {line["owner"]: line["address"] for line in again}
    assert {line["owner"]: line["address"] for line in ok}.items() <= held.items()
    taken = _check_store(store, net)
    assert {a: r["owner"] for a, r in taken.items()} == {a: o for o, a in held.items()}
    assert len(taken) == 96
    print("\nleader %s killed %.2f s into the run, %d allocations ended after it: %d "
          "allocations ok, %d failed with a clear error, the re-run converged; %s; "
          "0 duplicates" % (killed[0].name, killed_at[0] - start_at, len(after), len(ok),
                            len(failed), dict(stats)))


@pytest.mark.parametrize("lost", ["reply", "request"])
def test_an_allocation_whose_answer_is_lost_holds_exactly_one_address(store, lost):
    """A txn whose answer is lost may have committed ("reply": it did; "request": it
    did not): the allocator reads again, finds its token or tries again; either way the
    owner ends up with one address."""
    from cluster_harness import LossyProxy
    net, dummy = store.create(name="lossy")
    member = store.cluster.members[0]
    with LossyProxy(("10.77.0.2", 23790), (member.address, 2379)) as proxy:
        setattr(proxy, {"reply": "drop_replies", "request": "drop_requests"}[lost], 1)
        client = EtcdClient(parse_store_options(["http://10.77.0.2:23790", member.endpoint],
                                                timeout=2.0))
        ipam = ClusterIpam(client, store.keys)
        address = ipam.allocate(net, "ep1", "h1")
        client.close()
    assert proxy.dropped == 1
    stats = ipam.stats.as_dict()
    assert stats["unknown"] == 1
    assert (stats["recovered"], stats["attempts"]) == ((1, 1) if lost == "reply" else (0, 2))
    taken = store.ipam.addresses(net)
    assert list(taken) == [str(address)] and taken[str(address)]["owner"] == "ep1"


def test_without_quorum_an_allocation_fails_clearly_and_the_rerun_converges(store):
    cluster = store.cluster
    net, dummy = store.create(name="quorum")
    store.ipam.allocate(net, "before", "h1")
    impatient = EtcdClient(parse_store_options(cluster.endpoints, timeout=1.0,
                                               retry_for=1.5))
    ipam = ClusterIpam(impatient, store.keys, deadline=2.0)
    down = cluster.members[1:]
    for member in down:
        cluster.kill(member)
    began = time.monotonic()
    try:
        with pytest.raises(ClusterUnavailableError) as err:
            ipam.allocate(net, "during", "h1")
        failed_after = time.monotonic() - began
    finally:
        for member in down:
            cluster.restart(member)
    assert err.value.field == "cluster_store" and failed_after < 10
    again = ipam.allocate(net, "during", "h1")
    assert ipam.allocate(net, "during", "h1") == again       # the owner holds one
    taken = _check_store(store, net)
    assert sorted(r["owner"] for r in taken.values()) == ["before", "during"]


# --- failures and watching ------------------------------------------------------------
def test_an_unreachable_store_fails_naming_the_endpoints_tried(cluster):
    endpoints = ["http://10.77.0.250:2379", "http://10.77.0.11:2399"]
    with in_netns(cluster.client.path):
        client = EtcdClient(parse_store_options(endpoints, connect_timeout=0.3,
                                                retry_for=1.0))
        began = time.monotonic()
        with pytest.raises(ClusterUnavailableError) as err:
            ClusterNetworks(client).get("web")
    assert time.monotonic() - began < 5
    assert err.value.field == "cluster_store"
    for endpoint in endpoints:
        assert endpoint in str(err.value)
    assert "connection refused" in str(err.value)


def test_missing_tls_files_and_bad_endpoints_are_refused_naming_the_field(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    cases = [
        ((["https://10.0.0.5:2379"], {"ca": str(tmp_path / "nope.pem")}),
         "cluster_store_tls.ca"),
        ((["https://10.0.0.5:2379"], {"ca": str(ca), "cert": str(tmp_path / "c.pem"),
                                      "key": str(ca)}), "cluster_store_tls.cert"),
        ((["https://10.0.0.5:2379"], {"ca": str(ca), "cert": str(ca)}),
         "cluster_store_tls.key"),
        ((["http://10.0.0.5:2379"], {"ca": str(ca)}), "cluster_store[0]"),
        ((["10.0.0.5:2379"],), "cluster_store[0]"),
        (([],), "cluster_store"),
    ]
    for args, field in cases:
        with pytest.raises(ValidationError) as err:
            parse_store_options(*args)
        assert err.value.field == field, args
    with pytest.raises(ValidationError) as err:
        parse_store_options(["http://a:2379"], cluster_store_auth={"username": "u"})
    assert err.value.field == "cluster_store_auth.password"


def test_tls_with_a_client_certificate_and_auth_reach_the_store(tmp_path):
    if os.geteuid() != 0 or shutil.which("etcd") is None or not shutil.which("openssl"):
        pytest.skip("needs root, etcd and openssl")
    from cluster_harness import EtcdCluster, make_certs
    certs = make_certs(tmp_path, "10.77.0.11")
    tls = {"ca": certs["ca"], "cert": certs["client_cert"], "key": certs["client_key"]}
    with EtcdCluster(members=1, certs=certs) as secure:
        secure.enable_auth("s3cret")
        with in_netns(secure.client.path):
            good = EtcdClient(parse_store_options(secure.endpoints, tls,
                                                  {"username": "root", "password": "s3cret"}))
            networks = ClusterNetworks(good, KeyLayout("/cnmt/v1"))
            made, created = networks.create(network_request({"name": "secure"}), "h1")
            assert created and networks.get("secure")["id"] == made["id"]
            wrong = EtcdClient(parse_store_options(secure.endpoints, tls,
                                                   {"username": "root", "password": "x"}))
            with pytest.raises(ClusterStoreError) as err:
                ClusterNetworks(wrong, KeyLayout("/cnmt/v1")).get("secure")
            assert err.value.field == "cluster_store_auth"
            no_cert = EtcdClient(parse_store_options(
                secure.endpoints, {"ca": certs["ca"]}, retry_for=0.5))
            with pytest.raises(ClusterUnavailableError) as err:
                ClusterNetworks(no_cert, KeyLayout("/cnmt/v1")).get("secure")
            assert secure.endpoints[0] in str(err.value)


def test_a_host_record_lives_as_long_as_its_lease(store):
    lease = store.networks.register_host("h1", {"advertise_address": "10.77.0.101"}, ttl=5)
    assert store.client.lease_keepalive(lease) > 0
    assert store.client.get(store.keys.host("h1")) is not None
    store.client.lease_revoke(lease)
    assert store.client.get(store.keys.host("h1")) is None


def test_a_watch_from_a_revision_sees_every_change_made_after_it(store):
    net, dummy = store.create("h1", name="web")
    store.create("h2", name="web")
    records, revision = store.networks.endpoints(net)
    assert records == {}
    store.networks.publish_endpoint(net, "ep1", {"host": "h2", "mac": "02:42:0a:00:00:02",
                                                 "ipv4": "10.0.0.2", "vtep": "10.77.0.102"})
    store.networks.withdraw_endpoint(net, "ep1")
    with pytest.raises(ConflictError):
        store.networks.publish_endpoint(net, "ep2", {"host": "h9"})
    events = list(store.client.watch(store.keys.endpoints(net["id"]), revision + 1,
                                     timeout=1.0))
    assert [(e.type, e.kv.key.rsplit("/", 1)[1]) for e in events] == [
        ("PUT", "ep1"), ("DELETE", "ep1")]
    assert json.loads(events[0].kv.value)["vtep"] == "10.77.0.102"
    assert events[0].revision > revision


def test_local_runs_never_import_the_cluster_store():
    code = ("import sys\n"
            "import ansible_collections.cnm.core.plugins.module_utils.controller.engine\n"
            "print(sorted(m for m in sys.modules if '.cluster' in m))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=COLLECTIONS), check=True)
    assert out.stdout.strip() == "[]"
