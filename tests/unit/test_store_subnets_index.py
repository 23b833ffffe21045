"""The store's index of network subnets answers overlap questions as a scan would."""
import ipaddress
import random

from test_store_ports_index import forget_index

from ansible_collections.cnm.core.plugins.module_utils.ipam.pools import find_overlap
from ansible_collections.cnm.core.plugins.module_utils.store import Store


def network(net_id, *subnets):
    return {"id": net_id, "pools": [{"subnet": s} for s in subnets]}


def put(store, doc):
    store.put("networks", doc, name="name-" + doc["id"])


def test_overlaps_in_both_directions_and_families(tmp_path):
    store = Store.open(str(tmp_path))
    try:
        put(store, network("a", "10.1.0.0/16", "fd00:1::/64"))
        put(store, network("b", "10.200.3.0/24"))
        assert store.overlapping_subnet("10.1.2.0/24") == ("name-a", "10.1.0.0/16")
        assert store.overlapping_subnet("10.0.0.0/8") == ("name-a", "10.1.0.0/16")
        assert store.overlapping_subnet("10.200.0.0/16") == ("name-b", "10.200.3.0/24")
        assert store.overlapping_subnet("fd00:1::/48") == ("name-a", "fd00:1::/64")
        assert store.overlapping_subnet("fd00:1:0:0:8000::/65") == ("name-a", "fd00:1::/64")
        assert store.overlapping_subnet("10.2.0.0/16") is None
        assert store.overlapping_subnet("0.0.0.0/0") == ("name-a", "10.1.0.0/16")
        assert store.overlapping_subnet("10.1.2.0/24", exclude_id="a") is None
        assert store.overlapping_subnet("not a subnet") is None
        put(store, network("a", "10.9.0.0/16"))                 # INSERT OR REPLACE
        assert store.overlapping_subnet("10.1.2.0/24") is None
        assert store.overlapping_subnet("10.9.9.0/24") == ("name-a", "10.9.0.0/16")
        store.delete("networks", "a")
        assert store.overlapping_subnet("10.9.9.0/24") is None
        with store.transaction():
            put(store, network("c", "10.50.0.0/16"))
        assert store.overlapping_subnet("10.50.1.0/24") == ("name-c", "10.50.0.0/16")
    finally:
        store.close()


def test_answers_as_the_scan_did_on_random_subnets(tmp_path):
    rng = random.Random(7)
    store = Store.open(str(tmp_path))
    existing = []
    try:
        for i in range(60):
            length = rng.randint(12, 28)
            subnet = ipaddress.ip_network("10.%d.%d.0/%d" % (rng.randint(0, 255),
                                                             rng.randint(0, 255), length),
                                          strict=False)
            if find_overlap(subnet, existing) is None:
                existing.append(("name-n%d" % i, str(subnet)))
                put(store, network("n%d" % i, str(subnet)))
        for dummy in range(400):
            length = rng.randint(8, 30)
            probe = ipaddress.ip_network("10.%d.%d.%d/%d" % (
                rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255), length),
                strict=False)
            scan = find_overlap(probe, existing)
            hit = store.overlapping_subnet(str(probe))
            assert (hit is None) == (scan is None), probe
            if hit:
                assert ipaddress.ip_network(hit[1]).overlaps(probe)
    finally:
        store.close()


def test_a_store_made_before_the_index_is_indexed_when_opened(tmp_path):
    store = Store.open(str(tmp_path))
    put(store, network("a", "10.1.0.0/16"))
    store.close()
    forget_index(tmp_path, "DROP TABLE subnets", "subnets_index")
    store = Store.open(str(tmp_path))
    try:
        assert store.overlapping_subnet("10.1.2.0/24") == ("name-a", "10.1.0.0/16")
    finally:
        store.close()
