"""Bad input is refused before it reaches the kernel: a clear error naming the field,
and nothing made or changed (links, addresses, routes, namespaces, store, rules,
resolver files). One named case per defect found by feeding ~430 odd arguments to the
modules; ``test_property_bad_input.py`` generates the rest.
"""
import hashlib
import os

import pytest

from engine_helpers import HostEngine
from snapshot import snapshot
from ansible_collections.cnm.core.plugins.module_utils.errors import CnmError

BRIDGE = "com.docker.network.bridge.name"
MTU = "com.docker.network.driver.mtu"


def full_snapshot(host):
    """Everything a refused task must leave as it was: links, addresses, routes, the
    store's rows, every engine file with its content (resolver and name files), the
    nft ruleset."""
    files = []
    for top in (host.state_dir, host.run_dir):
        for dirpath, dummy, names in os.walk(top):
            for name in names:
                path = os.path.join(dirpath, name)
                if name.endswith(("-wal", "-shm", ".lock", ".log")):
                    continue
                content = None  # the store's file is compared as rows (snapshot)
                if os.path.isfile(path) and not name.endswith(".db"):
                    with open(path, "rb") as fh:
                        content = hashlib.sha256(fh.read()).hexdigest()
                files.append((os.path.relpath(path, top), content))
    rules = host.run(["nft", "list", "ruleset"]).stdout
    links = sorted(link["ifname"] for link in host.ip_json("link"))
    return {"snapshot": snapshot(host), "files": sorted(files), "rules": rules,
            "links": links}


@pytest.fixture
def site(host):
    eng = HostEngine(host, firewall_backend="nftables")
    eng.network(name="app", ipam={"config": [{"subnet": "10.94.0.0/24"}]})
    eng.endpoint(network="app", sandbox="web", mac_address="02:42:0a:5e:00:99")
    eng.port_mapping(sandbox="web", ports=[{"container_port": 80, "host_port": 8094}])
    return host, eng


CASES = [
    # crashes before: a Python error instead of a field error
    ("bridge name with %d", "network",
     {"name": "brp", "driver_options": {BRIDGE: "brp121%d"}}, "driver_options." + BRIDGE),
    ("superscript two as a port", "port_mapping",
     {"sandbox": "web", "ports": [{"container_port": "\u00b2"}]}, "ports[0].container_port"),
    ("superscript in a range", "port_mapping",
     {"sandbox": "web", "ports": [{"container_port": "7000-\u00b2"}]},
     "ports[0].container_port"),
    ("superscript host port", "port_mapping",
     {"sandbox": "web", "ports": [{"container_port": 81, "host_port": "\u00b2"}]},
     "ports[0].host_port"),
    # accepted before, though invalid
    ("trailing newline in a network name", "network", {"name": "endnl\n"}, "name"),
    ("trailing newline in a sandbox name", "sandbox", {"name": "sbnl\n"}, "name"),
    ("trailing newline in an endpoint's sandbox", "endpoint",
     {"network": "app", "sandbox": "sbnl\n"}, "sandbox"),
    ("trailing newline in an alias", "endpoint",
     {"network": "app", "sandbox": "web", "aliases": ["db\n"]}, "aliases[0]"),
    ("trailing newline in a hostname", "sandbox", {"name": "web", "hostname": "web\n"},
     "hostname"),
    ("trailing newline in a domain name", "dns", {"sandbox": "web", "domainname": "ex\n"},
     "domainname"),
    ("trailing newline in a resolver option", "dns",
     {"sandbox": "web", "options": ["ndots:2\n"]}, "options[0]"),
    ("loopback subnet", "network",
     {"name": "lo8", "ipam": {"config": [{"subnet": "127.0.0.0/8"}]}},
     "ipam.config[0].subnet"),
    ("multicast subnet", "network",
     {"name": "mc", "ipam": {"config": [{"subnet": "224.0.0.0/4"}]}},
     "ipam.config[0].subnet"),
    ("this-network subnet", "network",
     {"name": "zero", "ipam": {"config": [{"subnet": "0.0.0.0/8"}]}},
     "ipam.config[0].subnet"),
    ("static IPv6 on a network without IPv6", "endpoint",
     {"network": "app", "sandbox": "v6", "ipv6_address": "fd00::5"}, "ipv6_address"),
    ("NUL in an interface name", "endpoint",
     {"network": "app", "sandbox": "nul", "interface_name": "eth\x001"}, "interface_name"),
    ("a MAC another endpoint of the network has", "endpoint",
     {"network": "app", "sandbox": "twin", "mac_address": "02:42:0A:5E:00:99"},
     "mac_address"),
    ("Arabic-Indic digits as a port", "port_mapping",
     {"sandbox": "web", "ports": [{"container_port": "\u0667\u0660\u0660\u0662"}]},
     "ports[0].container_port"),
    ("Arabic-Indic digits as an MTU", "network",
     {"name": "mtu", "driver_options": {MTU: "\u0661\u0665\u0660\u0660"}},
     "driver_options." + MTU),
    ("unspecified upstream", "dns", {"upstreams": ["0.0.0.0"]}, "upstreams[0]"),
    ("multicast upstream", "dns", {"upstreams": ["224.0.0.1"]}, "upstreams[0]"),
    ("the resolver as its own upstream", "dns", {"upstreams": ["127.0.0.11"]},
     "upstreams[0]"),
    ("ambiguous IPv6 upstream with a port", "dns", {"upstreams": ["::1:53"]},
     "upstreams[0]"),
    ("TTL zero", "dns", {"ttl": 0}, "ttl"),
    ("gw_priority 2**70", "endpoint",
     {"network": "app", "sandbox": "big", "gw_priority": 2 ** 70}, "gw_priority"),
    ("gw_priority -2**70", "endpoint",
     {"network": "app", "sandbox": "big", "gw_priority": -2 ** 70}, "gw_priority"),
    ("NUL in a label", "network", {"name": "lab", "labels": {"k": "a\x00b"}}, "labels.k"),
    ("nested label value", "network", {"name": "lab", "labels": {"k": {"x": 1}}},
     "labels.k"),
    # kernel errors before, field errors now
    ("lo as the interface name", "endpoint",
     {"network": "app", "sandbox": "loop", "interface_name": "lo"}, "interface_name"),
    ("colon in a bridge name", "network",
     {"name": "colon", "driver_options": {BRIDGE: "br:0"}}, "driver_options." + BRIDGE),
    ("tab in a bridge name", "network",
     {"name": "tab", "driver_options": {BRIDGE: "br\t0"}}, "driver_options." + BRIDGE),
    ("bridge named all", "network", {"name": "all", "driver_options": {BRIDGE: "all"}},
     "driver_options." + BRIDGE),
    ("bridge named default", "network",
     {"name": "dflt", "driver_options": {BRIDGE: "default"}}, "driver_options." + BRIDGE),
    # slow before: a 30,000-port range took 50 s
    ("a 30,000-port range", "port_mapping",
     {"sandbox": "web", "ports": [{"container_port": "1-30000"}]}, "ports[0].container_port"),
]


@pytest.mark.parametrize("what, verb, params, field", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_naming_the_field_and_nothing_changes(
        site, what, verb, params, field):
    host, eng = site
    before = full_snapshot(host)
    with pytest.raises(CnmError) as err:
        getattr(eng, verb)(params)
    assert err.value.field == field, "%s: %s" % (what, err.value)
    assert field in str(err.value)
    assert full_snapshot(host) == before, what
