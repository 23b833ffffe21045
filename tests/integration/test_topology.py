"""Engine.topology on a real kernel: a failure part-way leaves every object as it was or
as asked; shared namespaces are made owner first; per-sandbox and host DNS settings are
applied; the default bridge is never purged; errors name the object and the field."""
import os

import pytest

from engine_helpers import HostEngine
from harness import eventually

from ansible_collections.cnm.core.plugins.module_utils.errors import CnmError

NET = {"name": "app", "ipam": {"config": [{"subnet": "10.72.0.0/24"}]},
       "driver_options": {"com.docker.network.bridge.name": "cnmi-app"}}


def resolve(host, sandbox, name):
    out = host.sandbox_run(sandbox, ["dig", "+short", "+time=1", "+tries=3", "@127.0.0.11",
                                     name], check=False)
    return out.stdout.split() if out.returncode == 0 else None


def test_a_failure_part_way_leaves_each_object_as_it_was_or_as_asked(host, monkeypatch):
    eng = HostEngine(host, firewall_backend="nftables")
    topo = {"networks": [NET], "sandboxes": [
        {"name": "one", "endpoints": [{"network": "app", "ipv4_address": "10.72.0.11"}]}]}
    eng.topology(topo)
    topo["sandboxes"].append({"name": "two", "endpoints": [{"network": "app"}]})
    monkeypatch.setenv("CNM_FAULT_RAISE", "endpoint-interface-made")
    with pytest.raises(CnmError) as err:
        eng.topology(topo)
    monkeypatch.delenv("CNM_FAULT_RAISE")
    assert str(err.value).startswith("sandboxes[two].endpoints[0]: fault injected")
    # one: as asked before; two: made (its own step succeeded), its endpoint undone
    assert sorted(host.sandboxes()) == ["one", "two"]
    assert [link["ifname"] for link in host.ip_json("link", sandbox="two")] == ["lo"]
    veths = [link["ifname"] for link in host.ip_json("link")
             if link["ifname"].startswith("veth")]
    assert len(veths) == 1
    result = eng.topology(topo)
    assert result.changed
    assert result.data["objects"]["sandboxes[one].endpoints[0]"]["changed"] is False
    assert host.ping("10.72.0.11", sandbox="two", count=3)
    assert resolve(host, "two", "one") == ["10.72.0.11"]


def test_shared_namespaces_come_after_their_owner_and_dns_settings_apply(host):
    eng = HostEngine(host, firewall_backend="nftables")
    topo = {"networks": [NET], "sandboxes": [
        {"name": "sidecar", "network_mode": "container:main"},
        {"name": "main", "hostname": "main-host",
         "endpoints": [{"network": "app", "aliases": ["m"]}],
         "dns": {"search": ["example.internal"], "options": ["ndots:2"]}}],
        "dns": {"ttl": 30}}
    result = eng.topology(topo)
    paths = list(result.data["objects"])
    assert paths.index("sandboxes[main]") < paths.index("sandboxes[sidecar]")
    resolv = os.path.join(host.run_dir, "sandboxes", "main", "resolv.conf")
    text = open(resolv).read()
    assert "search example.internal" in text and "ndots:2" in text
    assert result.data["objects"]["dns"]["changed"]
    # the sidecar shares main's namespace: it sees main's eth0
    assert "eth0" in [link["ifname"] for link in host.ip_json("link", sandbox="sidecar")]
    again = eng.topology(topo)
    assert not again.changed, again.actions


def test_purge_never_removes_the_default_bridge_and_check_mode_predicts_it(host):
    eng = HostEngine(host, firewall_backend="nftables")
    eng.topology({"networks": [NET], "sandboxes": [
        {"name": "a", "endpoints": [{"network": "bridge"}]},
        {"name": "b", "endpoints": [{"network": "app"}]}]})
    topo = {"networks": [], "sandboxes": [], "purge": True}
    predicted = HostEngine(host, check_mode=True, firewall_backend="nftables").topology(topo)
    assert predicted.data["purged"]["networks"] == ["app"]
    assert sorted(predicted.data["purged"]["sandboxes"]) == ["a", "b"]
    assert sorted(host.sandboxes()) == ["a", "b"]
    done = eng.topology(topo)
    assert done.data["purged"] == predicted.data["purged"]
    assert eventually(lambda: host.sandboxes() == [])
    names = [link["ifname"] for link in host.ip_json("link")]
    assert "cnm0" in names and "cnmi-app" not in names
    assert not eng.topology(topo).changed


@pytest.mark.parametrize("topo, field", [
    ({"networks": [NET, NET]}, "networks[app].name"),
    ({"sandboxes": [{"name": "x", "endpoints": [{"network": "app"}, {"network": "app"}]}],
      "networks": [NET]}, "sandboxes[x].endpoints[1].network"),
    ({"sandboxes": [{"name": "x", "colour": "red"}]}, "sandboxes[x]"),
    ({"sandboxes": [{"name": "x", "network_mode": "container:y"},
                    {"name": "y", "network_mode": "container:x"}]},
     "sandboxes[x].network_mode"),
    ({"networks": [NET], "sandboxes": [
        {"name": "x", "endpoints": [{"network": "app", "ipv4_address": "10.72.0.5"}]},
        {"name": "y", "endpoints": [{"network": "app", "ipv4_address": "10.72.0.5"}]}]},
     "sandboxes[y].endpoints[0].ipv4_address"),
    ({"networks": [dict(NET, driver="nosuch")]}, "networks[app].driver"),
    ({"sandboxes": [{"name": "x", "dns": {"nameservers": ["not an ip"]}}]},
     "sandboxes[x].dns.nameservers"),
])
def test_bad_input_names_the_object_and_field_and_touches_nothing(host, topo, field):
    with pytest.raises(CnmError) as err:
        HostEngine(host, firewall_backend="nftables").topology(topo)
    assert str(err.value).startswith(field), str(err.value)
    assert host.sandboxes() == []
    assert not [link for link in host.ip_json("link") if link["ifname"] != "lo"]
