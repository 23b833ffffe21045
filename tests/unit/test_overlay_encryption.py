"""An encrypted overlay's plan as data: the key document lives beside the definition
(never in it), a rotation goes through its three steps in order, acknowledgements and
changes carry no secret, the mark chains are one batch of the xfrm layer's own table."""
import json

from ansible_collections.cnm.core.plugins.module_utils.cluster.agent import Agent
from ansible_collections.cnm.core.plugins.module_utils.cluster.keys import KeyLayout
from ansible_collections.cnm.core.plugins.module_utils.cluster.networks import (
    ClusterNetworks)
from ansible_collections.cnm.core.plugins.module_utils.controller.overlay import (
    Overlay, encrypted_options)
from ansible_collections.cnm.core.plugins.module_utils.netns import esp_marks, xfrm


def _definition(options):
    return {"name": "secure", "id": "ab" * 32, "driver": "overlay", "scope": "global",
            "pools": [{"subnet": "10.0.9.0/24", "gateway": "10.0.9.1"}], "vnis": [4242],
            "options": options}


def _puts(ops):
    import base64
    out = {}
    for op in ops:
        body = op.get("request_put")
        if body:
            out[base64.b64decode(body["key"]).decode()] = json.loads(
                base64.b64decode(body["value"]))
    return out


def test_creating_an_encrypted_network_puts_its_keys_beside_the_definition():
    networks = ClusterNetworks(client=None, layout=KeyLayout("/t"))
    definition = _definition({"encrypted": "true"})
    dummy, success = networks._create_ops(definition, "10.77.0.21", 5)  # noqa: SLF001
    puts = _puts(success)
    doc = puts["/t/keys/" + definition["id"]]
    assert doc["primary"] == 0 and len(doc["keys"]) == 1
    secret = doc["keys"][0]["secret"]
    assert secret not in json.dumps(puts["/t/networks/secure"])


def test_an_unencrypted_network_has_no_key_document():
    networks = ClusterNetworks(client=None, layout=KeyLayout("/t"))
    definition = _definition({"encrypted": "false"})
    dummy, success = networks._create_ops(definition, "10.77.0.21", 5)  # noqa: SLF001
    assert not [k for k in _puts(success) if k.startswith("/t/keys/")]


def test_removing_a_network_deletes_its_keys_and_acks():
    networks = ClusterNetworks(client=None, layout=KeyLayout("/t"))
    import base64
    keys = [base64.b64decode(op["request_delete_range"]["key"]).decode()
            for op in networks._remove_ops(_definition({}))]  # noqa: SLF001
    assert "/t/keys/" + "ab" * 32 in keys and "/t/keys/" + "ab" * 32 + "/" in keys


def test_a_rotation_adds_then_switches_then_drops():
    doc = xfrm.new_key_document()
    states = []
    for dummy in range(5):
        step = xfrm.rotation_step(doc, 3)
        if step is None:
            break
        states.append(xfrm.key_state(step))
        doc = step
    assert states == [{"generations": [0, 3], "primary": 0},
                      {"generations": [0, 3], "primary": 3},
                      {"generations": [3], "primary": 3}]
    assert xfrm.rotation_step(doc, 3) is None and xfrm.rotation_step(doc, 2) is None


def test_a_half_done_rotation_is_finished_before_a_newer_one():
    doc = xfrm.rotation_step(xfrm.new_key_document(), 1)
    step = xfrm.rotation_step(doc, 5)
    assert xfrm.key_state(step) == {"generations": [0, 1], "primary": 1}


def test_a_key_state_holds_no_secret():
    doc = xfrm.new_key_document()
    assert doc["keys"][0]["secret"] not in json.dumps(xfrm.key_state(doc))


def test_encrypted_is_docker_s_flag():
    assert encrypted_options({"encrypted": ""}) and encrypted_options({"encrypted": "true"})
    assert not encrypted_options({"encrypted": "false"}) and not encrypted_options({})


def test_an_encrypted_overlay_loses_90_bytes_of_mtu():
    definition = dict(_definition({"encrypted": "true"}), created="")
    net = Overlay._overlay_network(None, definition, "10.77.0.21", "lan0", 1500)  # noqa
    assert net.mtu == 1410
    plain = Overlay._overlay_network(None, dict(definition, options={}), "10.77.0.21",  # noqa
                                     "lan0", 1500)
    assert plain.mtu == 1450


def test_the_mark_chains_are_one_batch_of_the_esp_table():
    text = esp_marks.render_add(4242)
    assert text.startswith("add table inet cnm-esp\n")
    assert "add chain inet cnm-esp out-4242 { type route hook output priority mangle;" in text
    assert "add chain inet cnm-esp in-4242 { type filter hook input priority filter;" in text
    assert "meta mark set 0xce001092" in text and "meta ipsec missing drop" in text
    assert text.count("add rule") == 2


def test_the_agent_follows_key_documents_but_not_acknowledgements():
    agent = Agent("/nonexistent")
    agent.keys = KeyLayout("/t")
    assert agent.network_of("/t/keys/abc") == "abc"
    assert agent.network_of("/t/keys/abc/acks/10.0.0.1") is None
    assert agent.network_of("/t/endpoints/abc/e1") == "abc"
