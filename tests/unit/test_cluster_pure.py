"""The cluster store's pure parts: options, key layout, VNI and subnet choice, requests.

Everything that talks to etcd is tested against a real cluster in
``tests/integration/test_cluster_store.py``.
"""
import base64

import pytest

from ansible_collections.cnm.core.plugins.module_utils.cluster.client import (
    compare, op_get, parse_store_options, prefix_end)
from ansible_collections.cnm.core.plugins.module_utils.cluster.ipam import (
    VXLANID_FIELD, choose_global_pools, choose_vnis, parse_vxlanid_list)
from ansible_collections.cnm.core.plugins.module_utils.cluster.keys import KeyLayout
from ansible_collections.cnm.core.plugins.module_utils.cluster.networks import (
    VXLANID_OPTION, _differs, network_request)
from ansible_collections.cnm.core.plugins.module_utils.errors import (
    ConflictError, ValidationError)
from ansible_collections.cnm.core.plugins.module_utils.ipam.config import parse_ipam_config


def test_endpoints_are_normalised_and_a_comma_string_is_a_list():
    config = parse_store_options("http://10.0.0.5:2379, https://[fd00::5]")
    assert config.endpoints == ["http://10.0.0.5:2379", "https://[fd00::5]:2379"]


@pytest.mark.parametrize("raw, field", [
    (["ftp://10.0.0.5:2379"], "cluster_store[0]"),
    (["http://10.0.0.5:2379", "http://10.0.0.6:2379/v3"], "cluster_store[1]"),
    (["http://10.0.0.5:notaport"], "cluster_store[0]"),
    ("", "cluster_store"),
])
def test_bad_endpoints_are_refused_naming_the_entry(raw, field):
    with pytest.raises(ValidationError) as err:
        parse_store_options(raw)
    assert err.value.field == field


def test_unknown_tls_and_auth_keys_are_refused():
    with pytest.raises(ValidationError) as err:
        parse_store_options(["https://a:2379"], {"cacert": "/x"})
    assert err.value.field == "cluster_store_tls"
    with pytest.raises(ValidationError) as err:
        parse_store_options(["http://a:2379"], None, {"user": "u", "password": "p"})
    assert err.value.field == "cluster_store_auth"


def test_a_prefix_range_ends_after_its_last_key():
    assert prefix_end("/cnm/v1/") == b"/cnm/v10"
    assert prefix_end(b"a\xff") == b"b"
    body = op_get("/cnm/", prefix=True)["request_range"]
    assert base64.b64decode(body["range_end"]) == b"/cnm0"
    assert compare("/k", "CREATE", "==", 0) == {
        "key": base64.b64encode(b"/k").decode(), "target": "CREATE", "result": "EQUAL",
        "create_revision": "0"}


def test_every_key_lives_under_the_root():
    keys = KeyLayout("/cnm/v1")
    assert keys.network("web") == "/cnm/v1/networks/web"
    assert keys.vni(4096) == "/cnm/v1/vnis/4096"
    assert keys.subnet("10.0.3.0/24") == "/cnm/v1/subnets/10.0.3.0/24"
    assert keys.address("abc", "10.0.3.2") == "/cnm/v1/ipam/abc/addr/10.0.3.2"
    assert keys.cursor("abc", "10.0.3.0/24") == "/cnm/v1/ipam/abc/last/10.0.3.0/24"
    assert keys.address("abc", "x").startswith(keys.ipam("abc"))
    assert keys.endpoint("abc", "ep") == "/cnm/v1/endpoints/abc/ep"
    assert keys.member("abc", "h1") == "/cnm/v1/members/abc/h1"
    assert keys.host("h1") == "/cnm/v1/hosts/h1"
    for bad in ("a/b", "", ".."):
        with pytest.raises(ValueError):
            keys.network(bad)
    with pytest.raises(ValueError):
        KeyLayout("cnm/v1/")


@pytest.mark.parametrize("raw, expected", [
    ("4097,4098", [4097, 4098]), ([1, "16777214"], [1, 16777214]), (5000, [5000]),
    (None, []), ("", [])])
def test_vxlanid_list_forms(raw, expected):
    assert parse_vxlanid_list(raw) == expected


@pytest.mark.parametrize("raw", ["0", "16777215", "-1", "x", "4097,4097", [True]])
def test_bad_vxlanid_lists_are_refused(raw):
    with pytest.raises(ValidationError) as err:
        parse_vxlanid_list(raw)
    assert err.value.field == VXLANID_FIELD


def test_automatic_vnis_start_at_4096_and_skip_taken_ones():
    assert choose_vnis({4096: "a", 4098: "b"}, 3) == [4097, 4099, 4100]
    assert choose_vnis({}, 1, requested=[7]) == [7]
    with pytest.raises(ConflictError) as err:
        choose_vnis({7: "a"}, 1, requested=[7])
    assert "network a" in str(err.value)
    with pytest.raises(ValidationError):
        choose_vnis({}, 2, requested=[7])


def test_global_subnets_come_from_10_0_0_0_8_and_skip_used_ones():
    existing = [("a", "10.0.0.0/24"), ("b", "10.0.1.0/24"), ("c", "10.0.2.0/23")]
    pools = choose_global_pools([], existing)
    assert [str(p.subnet) for p in pools] == ["10.0.4.0/24"]
    both = choose_global_pools([], existing, enable_ipv6=True)
    assert [str(p.subnet) for p in both] == ["10.0.4.0/24", "fd63:6e6f::/64"]
    requested = parse_ipam_config([{"subnet": "10.0.1.128/25"}], False)
    with pytest.raises(ConflictError) as err:
        choose_global_pools(requested, existing)
    assert err.value.field == "ipam.config[0].subnet" and "network b" in str(err.value)


def test_a_request_compares_only_what_it_gives():
    stored = {"name": "web", "driver": "overlay", "vnis": [4096], "labels": {"a": "1"},
              "options": {"o": "1"}, "enable_ipv4": True, "enable_ipv6": False,
              "internal": False, "attachable": False,
              "pools": [{"subnet": "10.0.0.0/24", "gateway": "10.0.0.1"}]}
    assert _differs(stored, network_request({"name": "web"})) is None
    same = network_request({"name": "web", "ipam": {"config": [{"subnet": "10.0.0.0/24"}]},
                            "driver_options": {VXLANID_OPTION: "4096", "o": "1"}})
    assert _differs(stored, same) is None
    gateway = network_request({"name": "web", "ipam": {"config": [
        {"subnet": "10.0.0.0/24", "gateway": "10.0.0.254"}]}})
    assert _differs(stored, gateway)[0] == "ipam.config[0].gateway"
    assert _differs(stored, network_request({"name": "web", "attachable": True}))[0] == \
        "attachable"


def test_a_network_request_is_checked_before_the_cluster_is_touched():
    with pytest.raises(ValidationError) as err:
        network_request({"name": "a/b"})
    assert err.value.field == "name"
    with pytest.raises(ValidationError) as err:
        network_request({"name": "v6", "enable_ipv4": False,
                         "ipam": {"config": [{"subnet": "10.0.0.0/24"}]}})
    assert err.value.field == "ipam.config"


def test_the_cluster_package_talks_to_etcd_only():
    """It never imports the local store or the controller (the controller is the only
    writer of the store), nor anything outside the standard library and the engine."""
    import ast
    import os
    import sys
    from ansible_collections.cnm.core.plugins.module_utils import cluster
    directory = os.path.dirname(cluster.__file__)
    stdlib = set(sys.stdlib_module_names)
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(directory, name)).read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                # ``from ..store import x`` or ``from .. import store``
                names = {(node.module or "").split(".")[0]} | {a.name for a in node.names}
                assert not names & {"store", "controller"}, (name, node.module)
            elif isinstance(node, ast.ImportFrom):
                assert node.module.split(".")[0] in stdlib, (name, node.module)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] in stdlib, (name, alias.name)
