"""The resolver's answers on the wire (no sockets): fast path, policy, odd messages."""
import ast
import os
import sys

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from ansible_collections.cnm.core.plugins.module_utils.dns import resolver
from ansible_collections.cnm.core.plugins.module_utils.dns.resolver import (
    config, forwarder, wire,
)

wire.import_dnspython()

CONFIG = {
    "version": 1, "ttl": 600, "upstreams": [],
    "sandboxes": {
        "web": {"netns": "/x/web", "networks": ["app"], "forward": True},
        "secret": {"netns": "/x/secret", "networks": ["intnet"], "forward": False},
        "both": {"netns": "/x/both", "networks": ["app", "intnet"], "forward": True},
    },
    "networks": {
        "app": {"endpoints": [
            {"sandbox": "web", "names": ["web", "web-host", "api"], "ipv4": "172.18.0.2",
             "ipv6": None},
            {"sandbox": "db", "names": ["db", "api"], "ipv4": "172.18.0.3/16",
             "ipv6": "fd00::3"},
            {"sandbox": "cache", "names": ["cache", "api"], "ipv4": "172.18.0.4",
             "ipv6": None},
        ]},
        "intnet": {"endpoints": [
            {"sandbox": "secret", "names": ["secret"], "ipv4": "10.9.0.2", "ipv6": None},
        ]},
    },
    "unknown_future_key": {"ignored": True},
}


@pytest.fixture(scope="module")
def views():
    return {name: view for name, (_netns, view) in config.build_views(CONFIG).items()}


def ask(view, name, rdtype="A", tcp=False, **kw):
    q = dns.message.make_query(name, rdtype, **kw)
    query = q.to_wire()
    out = wire.respond(query, view, tcp)
    if out is None or out is wire.FORWARD:
        return q, out
    return q, dns.message.from_wire(out)


def addresses(resp):
    return [rd.to_text() for rrset in resp.answer for rd in rrset]


def test_sandbox_name_alias_and_name_dot_network_answer_from_the_fast_path(views):
    for name in ("web", "web-host", "web.app", "WEB.App", "web-host.app."):
        q, r = ask(views["web"], name, use_edns=False)
        assert r.id == q.id and r.rcode() == dns.rcode.NOERROR
        assert addresses(r) == ["172.18.0.2"], name
        assert r.answer[0].ttl == 600
        assert r.question[0].name.to_text().rstrip(".") == name.rstrip(".")  # case echoed
        assert r.flags & dns.flags.QR and r.flags & dns.flags.RD and r.flags & dns.flags.RA


def test_prefix_in_config_address_is_ignored_and_ipv6_is_answered(views):
    assert addresses(ask(views["web"], "db")[1]) == ["172.18.0.3"]
    assert addresses(ask(views["web"], "db", "AAAA")[1]) == ["fd00::3"]


def test_known_name_without_address_of_that_family_is_noerror_without_answer(views):
    _q, r = ask(views["web"], "web", "AAAA")
    assert r.rcode() == dns.rcode.NOERROR and r.answer == []


def test_other_types_of_a_local_name_are_noerror_without_answer(views):
    _q, r = ask(views["web"], "web", "MX")
    assert r.rcode() == dns.rcode.NOERROR and r.answer == []


def test_several_endpoints_under_one_name_return_all_shuffled(views):
    orders = set()
    for _round in range(60):
        got = addresses(ask(views["web"], "api")[1])
        assert sorted(got) == ["172.18.0.2", "172.18.0.3", "172.18.0.4"]
        orders.add(tuple(got))
    assert len(orders) > 1


def test_ptr_answers_sandbox_dot_network(views):
    _q, r = ask(views["web"], "3.0.18.172.in-addr.arpa", "PTR")
    assert addresses(r) == ["db.app."]
    _q, r = ask(views["web"], "3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f"
                ".ip6.arpa", "PTR")
    assert addresses(r) == ["db.app."]


def test_names_of_networks_the_sandbox_is_not_on_are_not_answered_locally(views):
    _q, out = ask(views["web"], "secret")
    assert out is wire.FORWARD
    _q, out = ask(views["web"], "2.0.9.10.in-addr.arpa", "PTR")
    assert out is wire.FORWARD
    assert addresses(ask(views["both"], "secret")[1]) == ["10.9.0.2"]


def test_internal_only_sandbox_gets_servfail_for_other_names_like_docker(views):
    _q, r = ask(views["secret"], "example.com")
    assert r.rcode() == dns.rcode.SERVFAIL
    assert addresses(ask(views["secret"], "secret")[1]) == ["10.9.0.2"]


def test_query_with_edns_gets_opt_back_and_without_gets_none(views):
    _q, r = ask(views["web"], "web", use_edns=0, payload=4096)
    assert r.edns == 0 and r.payload == wire.EDNS_PAYLOAD
    _q, r = ask(views["web"], "web", use_edns=False)
    assert r.edns == -1


def test_dig_style_query_with_cookie_option_is_answered_by_the_fast_path(views):
    import dns.edns
    q = dns.message.make_query("web", "A", use_edns=0,
                               options=[dns.edns.GenericOption(10, b"\x01" * 8)])
    r = dns.message.from_wire(wire.respond(q.to_wire(), views["web"], False))
    assert addresses(r) == ["172.18.0.2"] and r.edns == 0


def big_view(n):
    cfg = {"sandboxes": {"s": {"netns": "/x", "networks": ["n"]}},
           "networks": {"n": {"endpoints": [
               {"sandbox": "m%d" % i, "names": ["many"],
                "ipv4": "10.0.%d.%d" % (i // 200, i % 200 + 1)} for i in range(n)]}}}
    return config.build_views(cfg)["s"][1]


def test_forty_addresses_are_truncated_over_udp_and_complete_over_tcp():
    view = big_view(40)
    _q, r = ask(view, "many", use_edns=False)
    assert r.flags & dns.flags.TC
    assert 0 < len(addresses(r)) < 40
    assert len(wire.respond(dns.message.make_query("many", "A").to_wire(), view, False)) <= 1232
    _q, r = ask(view, "many", use_edns=False, tcp=True)
    assert not r.flags & dns.flags.TC and len(addresses(r)) == 40
    _q, r = ask(view, "many", use_edns=0, payload=4096)       # fits in 1232
    assert not r.flags & dns.flags.TC and len(addresses(r)) == 40


def test_opcode_other_than_query_gets_notimp(views):
    q = dns.message.make_query("web", "A")
    q.set_opcode(dns.opcode.STATUS)
    r = dns.message.from_wire(wire.respond(q.to_wire(), views["web"], False))
    assert r.rcode() == dns.rcode.NOTIMP


def test_edns_version_1_gets_badvers(views):
    _q, r = ask(views["web"], "web", use_edns=1)
    assert r.rcode() == dns.rcode.BADVERS


def test_garbage_gets_formerr_and_responses_are_never_answered(views):
    query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07trunc"
    r = wire.respond(query, views["web"], False)
    assert r[:2] == b"\x12\x34" and r[3] & 0x0F == dns.rcode.FORMERR
    resp = dns.message.make_response(dns.message.make_query("web", "A")).to_wire()
    assert wire.respond(resp, views["web"], False) is None
    assert wire.respond(b"\x00\x01", views["web"], False) is None


def test_query_with_extra_records_is_answered_like_the_plain_query(views):
    q = dns.message.make_query("web", "A")
    q.additional.append(dns.rrset.from_text("web.", 60, "IN", "A", "10.0.0.1"))
    r = dns.message.from_wire(wire.respond(q.to_wire(), views["web"], False))
    assert r.id == q.id and addresses(r) == ["172.18.0.2"]


def test_views_are_shared_between_sandboxes_on_the_same_networks():
    cfg = dict(CONFIG, sandboxes={"a": {"netns": "/a", "networks": ["app"]},
                                  "b": {"netns": "/b", "networks": ["app"]}})
    v = config.build_views(cfg)
    assert v["a"][1][0] is v["b"][1][0]


def test_ttl_is_configurable():
    cfg = dict(CONFIG, ttl=5)
    view = config.build_views(cfg)["web"][1]
    assert ask(view, "web")[1].answer[0].ttl == 5


def test_error_reply_keeps_id_question_and_opt():
    q = dns.message.make_query("nowhere.example", "A", use_edns=0)
    r = dns.message.from_wire(wire.error_reply(q.to_wire(), wire.RCODE_SERVFAIL))
    assert r.id == q.id and r.rcode() == dns.rcode.SERVFAIL and r.question == q.question
    assert r.edns == 0


@pytest.mark.parametrize("text,label", [
    ("10.0.0.1", "10.0.0.1:53"), ("10.0.0.1:5353", "10.0.0.1:5353"),
    ("[fd00::1]:5300", "[fd00::1]:5300"), ("fd00::1", "[fd00::1]:53"),
])
def test_upstream_parsing(text, label):
    assert forwarder.parse_upstream(text)[2] == label


def test_resolver_is_self_contained_stdlib_plus_dnspython():
    """The package is copied alone to the host: it must not import the engine, only
    the standard library, dnspython and its own modules (relative, one level)."""
    pkg = os.path.dirname(resolver.__file__)
    files = sorted(f for f in os.listdir(pkg) if f.endswith(".py"))
    siblings = {f[:-3] for f in files}
    for name in files:
        tree = ast.parse(open(os.path.join(pkg, name)).read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1, "import from outside the package in %s" % name
                assert node.module in siblings, (name, node.module)
                continue
            if isinstance(node, ast.ImportFrom):
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                assert top == "dns" or top in sys.stdlib_module_names, (name, module)
    assert os.path.basename(pkg) == "resolver" and "__init__.py" in files


def test_per_sandbox_upstreams_replace_the_global_list():
    cfg = dict(CONFIG, sandboxes={"web": {"netns": "/x", "networks": ["app"],
                                          "upstreams": ["10.0.0.53", "[fd00::53]:5353"]}})
    view = config.build_views(cfg)["web"][1]
    assert view[3] == ("10.0.0.53", "[fd00::53]:5353")
    fwd = forwarder.Forwarder()
    assert [u[2] for u in fwd.upstreams_for(view)] == ["10.0.0.53:53", "[fd00::53]:5353"]


def test_failed_upstreams_are_tried_last_until_they_answer_again():
    fwd = forwarder.Forwarder()
    ups = forwarder.parse_upstreams(["10.0.0.1", "10.0.0.2", "10.0.0.3"])
    fwd.mark_failed("10.0.0.1:53", "timeout")
    assert [u[2] for u in fwd.ordered(ups)] == ["10.0.0.2:53", "10.0.0.3:53", "10.0.0.1:53"]
    fwd.mark_ok("10.0.0.1:53")
    assert [u[2] for u in fwd.ordered(ups)][0] == "10.0.0.1:53"
