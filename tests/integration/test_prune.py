"""cnm_prune on a real kernel: unused networks and implicit sandboxes left empty go,
everything in use (and every sandbox made by cnm_sandbox) stays.

Networks are aged by editing their stored ``created`` through sqlite (the engine reads
the store's row; the kernel does not know when a bridge was made).
"""
import datetime
import os
import signal
import sqlite3

import pytest

from engine_helpers import HostEngine
from harness import eventually
from snapshot import snapshot
from test_crash_points import run_killed_at

from ansible_collections.cnm.core.plugins.module_utils.errors import ValidationError


def bridge(name):
    """A bridge name of our own, so ``ip -j link`` tells the networks apart."""
    return {"com.docker.network.bridge.name": "cnmp-%s" % name}


def make_network(eng, name, subnet, labels=None):
    return eng.network(name=name, labels=labels or {}, driver_options=bridge(name),
                       ipam={"config": [{"subnet": subnet}]})


def bridges(host):
    return sorted(link["ifname"][len("cnmp-"):] for link in host.ip_json("link")
                  if link["ifname"].startswith("cnmp-"))


def network_names(eng):
    return sorted(n["Name"] for n in eng.network_info().data["networks"]
                  if n["Name"] not in ("host", "none"))


def stored_sandboxes(eng):
    return sorted(s["Name"] for s in eng.sandbox_info().data["sandboxes"])


def age(host, table, name, hours):
    """Set the stored creation time of ``name`` to ``hours`` ago."""
    when = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=hours)
    created = when.isoformat(timespec="microseconds").replace("+00:00", "Z")
    conn = sqlite3.connect(os.path.join(host.state_dir, "cnm.db"))
    try:
        with conn:
            updated = conn.execute("UPDATE %s SET doc = json_set(doc, '$.created', ?) "
                                   "WHERE name = ?" % table, (created, name)).rowcount
    finally:
        conn.close()
    assert updated == 1


@pytest.fixture
def site(host):
    """test-a, test-b (env=test, unused), prod-a (env=prod, unused), test-used (env=test,
    with sandbox web on it), plain (no labels, unused)."""
    eng = HostEngine(host)
    make_network(eng, "test-a", "10.94.1.0/24", {"env": "test"})
    make_network(eng, "test-b", "10.94.2.0/24", {"env": "test"})
    make_network(eng, "prod-a", "10.94.3.0/24", {"env": "prod"})
    make_network(eng, "test-used", "10.94.4.0/24", {"env": "test"})
    make_network(eng, "plain", "10.94.5.0/24")
    eng.endpoint(network="test-used", sandbox="web")
    assert bridges(host) == ["plain", "prod-a", "test-a", "test-b", "test-used"]
    return host, eng


def test_a_label_filter_removes_exactly_the_unused_matching_networks(site):
    host, eng = site
    result = eng.prune(networks=True, networks_filters={"label": "env=test"})
    assert result.changed
    assert result.data == {"networks": ["test-a", "test-b"], "sandboxes": []}
    assert result.actions == ["remove network test-a", "remove network test-b"]
    assert bridges(host) == ["plain", "prod-a", "test-used"]
    assert network_names(eng) == ["plain", "prod-a", "test-used"]
    assert host.ping("10.94.4.1", sandbox="web")  # the network in use still works
    again = eng.prune(networks=True, networks_filters={"label": "env=test"})
    assert not again.changed and again.data == {"networks": [], "sandboxes": []}


def test_without_filters_every_unused_network_goes_and_predefined_ones_stay(site):
    host, eng = site
    result = eng.prune(networks=True)
    assert result.data["networks"] == ["plain", "prod-a", "test-a", "test-b"]
    assert bridges(host) == ["test-used"]
    all_names = sorted(n["Name"] for n in eng.network_info().data["networks"])
    assert all_names == ["host", "none", "test-used"]
    assert not eng.prune(networks=True).changed


def test_label_not_keeps_the_networks_carrying_the_label(site):
    host, eng = site
    result = eng.prune(networks=True, networks_filters={"label!": "env=test"})
    assert result.data["networks"] == ["plain", "prod-a"]
    assert bridges(host) == ["test-a", "test-b", "test-used"]
    result = eng.prune(networks=True, networks_filters={"label!": "env"})
    assert not result.changed  # every network left carries env


def test_until_removes_only_networks_created_before_it(site):
    host, eng = site
    assert not eng.prune(networks=True, networks_filters={"until": "1h"}).changed
    assert bridges(host) == ["plain", "prod-a", "test-a", "test-b", "test-used"]
    age(host, "networks", "test-b", hours=2)
    age(host, "networks", "test-used", hours=2)  # old, but in use
    result = eng.prune(networks=True, networks_filters={"until": "1h"})
    assert result.data["networks"] == ["test-b"]
    assert bridges(host) == ["plain", "prod-a", "test-a", "test-used"]
    # a timestamp in the future covers the networks just made
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=5)
    later = later.strftime("%Y-%m-%dT%H:%M:%SZ")
    result = eng.prune(networks=True, networks_filters={"until": later, "label": "env"})
    assert result.data["networks"] == ["prod-a", "test-a"]
    assert bridges(host) == ["plain", "test-used"]


def test_check_mode_lists_what_would_go_and_removes_nothing(site):
    host, eng = site
    before = snapshot(host)
    checked = HostEngine(host, check_mode=True).prune(
        networks=True, networks_filters={"label": "env=test"})
    assert checked.changed and checked.data["networks"] == ["test-a", "test-b"]
    assert checked.diff == {
        "before": {"networks": ["plain", "prod-a", "test-a", "test-b", "test-used"]},
        "after": {"networks": ["plain", "prod-a", "test-used"]}}
    assert snapshot(host) == before
    real = eng.prune(networks=True, networks_filters={"label": "env=test"})
    assert real.data == checked.data and real.diff == checked.diff


@pytest.mark.parametrize("params, field", [
    ({"networks": True, "networks_filters": {"until": "yesterday"}}, "networks_filters.until"),
    ({"networks": True, "networks_filters": {"name": "test-a"}}, "networks_filters.name"),
    ({"networks": True, "networks_filters": {"label": "=test"}}, "networks_filters.label"),
    ({"networks": True, "sandboxes": True, "sandboxes_filters": {"until": "1d"}},
     "sandboxes_filters.until"),
    ({"sandboxes_filters": {"until": "1h"}, "networks": True}, "sandboxes_filters"),
])
def test_bad_filters_fail_naming_the_field_and_remove_nothing(site, params, field):
    host, eng = site
    before = snapshot(host)
    with pytest.raises(ValidationError) as err:
        eng.prune(params)
    assert err.value.field == field
    assert str(err.value).startswith(field)
    assert snapshot(host) == before


# -- sandboxes ----------------------------------------------------------------------

@pytest.fixture
def orphan(host):
    """Sandbox ``victim``, made implicitly by cnm_endpoint, left without endpoints by a
    run killed (SIGKILL) while detaching its last endpoint: the endpoint row is gone,
    the sandbox row and namespace are not. Also ``client`` (implicit, on ``app``) and
    ``keeper`` (made by cnm_sandbox, no endpoints)."""
    eng = HostEngine(host, firewall_backend="nftables")
    eng.network(name="app", ipam={"config": [{"subnet": "10.94.9.0/24"}]})
    eng.endpoint(network="app", sandbox="client")
    eng.endpoint(network="app", sandbox="victim")
    eng.port_mapping(sandbox="victim", ports=[{"container_port": 80, "host_port": 8094}])
    eng.sandbox(name="keeper")
    run_killed_at(host, "nftables", "detach-before-firewall", "endpoint",
                  {"network": "app", "sandbox": "victim", "state": "absent"})
    sandboxes = {s["Name"]: s for s in eng.sandbox_info().data["sandboxes"]}
    assert sandboxes["victim"]["Networks"] == {}
    assert "victim" in host.sandboxes()
    return host, eng


def test_an_implicit_sandbox_left_without_endpoints_is_pruned(orphan):
    host, eng = orphan
    checked = HostEngine(host, check_mode=True, firewall_backend="nftables").prune(
        sandboxes=True)
    assert checked.data == {"networks": [], "sandboxes": ["victim"]}
    assert "victim" in host.sandboxes()
    result = eng.prune(sandboxes=True, networks=True)
    assert result.data == {"networks": [], "sandboxes": ["victim"]}  # app is in use
    assert "remove sandbox victim" in result.actions
    assert host.sandboxes() == ["client", "keeper"]  # victim's namespace file is gone
    assert stored_sandboxes(eng) == ["client", "keeper"]
    assert not os.path.exists(os.path.join(host.run_dir, "dns", "sandboxes", "victim.json"))
    second = eng.prune(sandboxes=True, networks=True)
    assert not second.changed, second.actions
    assert second.data == {"networks": [], "sandboxes": []}


def test_a_sandbox_with_a_process_inside_is_kept_until_it_exits(orphan):
    host, eng = orphan
    proc = host.popen(["sleep", "60"], sandbox="victim")
    try:
        assert eventually(lambda: os.path.exists("/proc/%d" % proc.pid))
        inode = os.stat(host.sandbox_path("victim")).st_ino
        assert eventually(lambda: os.stat("/proc/%d/ns/net" % proc.pid).st_ino == inode)
        assert eng.prune(sandboxes=True).data["sandboxes"] == []
        assert "victim" in host.sandboxes()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert eng.prune(sandboxes=True).data["sandboxes"] == ["victim"]


def test_sandbox_filters_until_and_labels(orphan):
    host, eng = orphan
    assert eng.prune(sandboxes=True, sandboxes_filters={"until": "1h"}).data[
        "sandboxes"] == []
    assert eng.prune(sandboxes=True, sandboxes_filters={"label": "env"}).data[
        "sandboxes"] == []  # sandboxes carry no labels
    age(host, "sandboxes", "victim", hours=3)
    result = eng.prune(sandboxes=True, sandboxes_filters={"until": "2h", "label!": "env"})
    assert result.data["sandboxes"] == ["victim"]
    assert host.sandboxes() == ["client", "keeper"]


def test_explicit_sandboxes_and_networks_are_never_confused(host):
    """A sandbox made by cnm_sandbox with no endpoints stays; an implicit one that
    still has an endpoint stays; so does the network it is on."""
    eng = HostEngine(host)
    eng.sandbox(name="keeper")
    eng.network(name="n1", ipam={"config": [{"subnet": "10.94.10.0/24"}]})
    eng.endpoint(network="n1", sandbox="web")
    result = eng.prune(sandboxes=True, networks=True)
    assert not result.changed
    assert result.data == {"networks": [], "sandboxes": []}
    assert result.diff == {"before": {"networks": ["n1"], "sandboxes": ["web"]},
                           "after": {"networks": ["n1"], "sandboxes": ["web"]}}
    assert host.sandboxes() == ["keeper", "web"]
    # leaving the network removes the implicit sandbox; then the network is unused
    eng.endpoint(network="n1", sandbox="web", state="absent")
    assert eng.prune(sandboxes=True, networks=True).data == {"networks": ["n1"],
                                                             "sandboxes": []}
    assert host.sandboxes() == ["keeper"]


def test_nothing_asked_nothing_done(host):
    eng = HostEngine(host)
    eng.network(name="n1", ipam={"config": [{"subnet": "10.94.11.0/24"}]})
    result = eng.prune()
    assert not result.changed and result.data == {"networks": [], "sandboxes": []}
    assert result.diff == {"before": {}, "after": {}}
    assert HostEngine(host).network_info(name="n1").data["exists"]
