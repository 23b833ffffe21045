"""The overlay's IPsec plan as data: both hosts derive the same SAs, networks and key
generations differ, SPIs are valid, and key bytes never show in a repr or a message."""
import pytest

from ansible_collections.cnm.core.plugins.module_utils.errors import ValidationError
from ansible_collections.cnm.core.plugins.module_utils.netns import xfrm

A, B, C = "192.168.50.1", "192.168.50.2", "192.168.50.3"


def key(gen=0, fill=b"k"):
    return xfrm.NetworkKey(gen, xfrm.Secret(fill * 32))


def test_both_hosts_derive_the_same_sa_for_each_direction():
    net = key()
    at_a = xfrm.render(42, A, [B], [net], primary=0)
    at_b = xfrm.render(42, B, [A], [net], primary=0)
    out_a = [sa for sa in at_a.sas if sa.direction == "out"][0]
    in_b = [sa for sa in at_b.sas if sa.direction == "in"][0]
    assert (out_a.src, out_a.dst, out_a.spi, out_a.reqid) == (in_b.src, in_b.dst, in_b.spi,
                                                              in_b.reqid)
    assert out_a.key == in_b.key
    out_b = [sa for sa in at_b.sas if sa.direction == "out"][0]
    in_a = [sa for sa in at_a.sas if sa.direction == "in"][0]
    assert (out_b.spi, out_b.key) == (in_a.spi, in_a.key)
    assert out_a.spi != out_b.spi and out_a.key != out_b.key


def test_key_material_is_aes_gcm_sized():
    for bits, size in ((128, 20), (256, 36)):
        spi, material = xfrm.derive_sa(key(), 42, A, B, key_bits=bits)
        assert len(material) == size
    with pytest.raises(ValidationError, match="key_bits"):
        xfrm.derive_sa(key(), 42, A, B, key_bits=192)


def test_spis_are_valid_and_spread():
    spis = set()
    for vni in range(1, 200):
        for gen in range(3):
            spi, material = xfrm.derive_sa(key(gen), vni, A, B)
            assert 256 <= spi <= 0xFFFFFFFF
            spis.add(spi)
    assert len(spis) == 199 * 3


def test_different_networks_secrets_and_generations_differ():
    base = xfrm.derive_sa(key(), 42, A, B)
    assert xfrm.derive_sa(key(), 43, A, B) != base
    assert xfrm.derive_sa(key(fill=b"x"), 42, A, B) != base
    assert xfrm.derive_sa(key(gen=1), 42, A, B) != base
    assert xfrm.derive_sa(key(), 42, B, A) != base
    assert xfrm.derive_sa(key(), 42, A, C) != base


def test_render_one_host_three_remotes_with_a_previous_generation():
    old, new = key(0, b"o"), key(1, b"n")
    plan = xfrm.render(7, A, [B, C, A, B], [old, new], primary=1)
    tag = xfrm.network_tag(7)
    assert plan.tag == tag == 0xCE000007
    outs = [sa for sa in plan.sas if sa.direction == "out"]
    ins = [sa for sa in plan.sas if sa.direction == "in"]
    assert sorted(sa.dst for sa in outs) == [B, C]
    assert {sa.generation for sa in outs} == {1}          # primary only outbound
    assert sorted((sa.src, sa.generation) for sa in ins) == [(B, 0), (B, 1), (C, 0), (C, 1)]
    assert all(sa.dst == A and sa.set_mark == tag for sa in ins)
    assert all(sa.reqid == tag for sa in plan.sas)
    dirs = sorted((p.direction, p.src, p.dst) for p in plan.policies)
    assert dirs == [("in", B, A), ("in", C, A), ("out", A, B), ("out", A, C)]
    assert all(p.mark == tag and p.reqid == tag for p in plan.policies)


def test_render_is_deterministic():
    assert xfrm.render(9, A, [B], [key()], 0) == xfrm.render(9, A, [B], [key()], 0)


def test_secret_never_shows():
    material = b"\x01\x02supersecret-bytes-here\xff" * 2
    secret = xfrm.Secret(material)
    net = xfrm.NetworkKey(3, secret)
    plan = xfrm.render(42, A, [B], [net], primary=3)
    hexed = material.hex()
    for text in (repr(secret), str(secret), "%s" % secret, "{}".format(secret), repr(net),
                 str(net), repr(plan), str(plan), repr(plan.sas), str(plan.sas[0])):
        assert "supersecret" not in text and hexed not in text and "hidden" in text
    for sa in plan.sas:
        raw = sa.key.reveal()
        for text in (repr(sa), str(sa), xfrm.describe(sa)):
            assert raw.hex() not in text and repr(raw) not in text
    import pickle
    with pytest.raises(TypeError):
        pickle.dumps(secret)


def test_key_store_round_trip_and_bad_documents():
    fresh = xfrm.generate_key(5)
    assert len(fresh.secret) == 32 and fresh.generation == 5
    assert xfrm.NetworkKey.from_store(fresh.to_store()) == fresh
    assert xfrm.generate_key(5).secret != fresh.secret
    for bad in ({}, {"generation": 1}, {"generation": "1", "secret": "AAAA" * 8},
                {"generation": 1, "secret": "not base64!"}, {"generation": 1, "secret": "AAAA"}):
        with pytest.raises(ValidationError) as err:
            xfrm.NetworkKey.from_store(bad, field="options.keys[0]")
        assert str(err.value).startswith("options.keys[0]")
        assert "AAAA" not in str(err.value)


@pytest.mark.parametrize("args, field", [
    ((0, A, [B], "keys", 0), "vni"),
    ((1 << 24, A, [B], "keys", 0), "vni"),
    ((42, "nope", [B], "keys", 0), "local"),
    ((42, A, ["10.0.0.300"], "keys", 0), "remotes"),
    ((42, A, ["fd00::2"], "keys", 0), "remote"),
    ((42, A, [B], "keys", 9), "primary"),
])
def test_bad_input_names_the_field(args, field):
    vni, local, remotes, keys, primary = args
    keys = [key()]
    with pytest.raises(ValidationError) as err:
        xfrm.render(vni, local, remotes, keys, primary)
    assert str(err.value).startswith(field)


def test_duplicate_generation_and_non_keys_are_refused():
    with pytest.raises(ValidationError, match="twice"):
        xfrm.render(42, A, [B], [key(1), key(1, b"z")], 1)
    with pytest.raises(ValidationError, match="NetworkKey"):
        xfrm.render(42, A, [B], [(0, b"raw" * 11)], 0)


def test_ipv6_vteps():
    plan = xfrm.render(42, "fd00::1", ["fd00::2"], [key()], 0)
    assert {sa.dst for sa in plan.sas} == {"fd00::1", "fd00::2"}


def test_firewall_rules_match_the_vni_and_mark_the_tag():
    rules = xfrm.mark_rules_nft(42)
    assert rules["output"] == "udp dport 4789 @th,96,24 42 meta mark set 0xce00002a"
    assert rules["input"] == "udp dport 4789 @th,96,24 42 meta ipsec missing drop"
    ipt = xfrm.mark_rules_iptables(42)
    assert "--set-mark 0xce00002a" in ipt["output"] and "=42" in ipt["output"]
    assert "--pol none -j DROP" in ipt["input"]
