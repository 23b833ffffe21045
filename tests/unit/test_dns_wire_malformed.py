"""Malformed question names get FORMERR from the resolver itself, never FORWARD.

A name over 255 octets, a label over 63 (a reserved label type) and a compression
pointer in a query's question (it can only point into the header) are refused at once,
on the fast path and on the slow one (messages with extra records), over UDP and TCP.
"""
import struct

import dns.message
import dns.rcode
import dns.rrset
import pytest

from ansible_collections.cnm.core.plugins.module_utils.dns.resolver import config, wire

wire.import_dnspython()

CONFIG = {
    "version": 1, "ttl": 600, "upstreams": [],
    "sandboxes": {"web": {"netns": "/x/web", "networks": ["app"], "forward": True}},
    "networks": {"app": {"endpoints": [
        {"sandbox": "web", "names": ["web"], "ipv4": "172.18.0.2", "ipv6": None}]}},
}


@pytest.fixture(scope="module")
def view():
    return config.build_views(CONFIG)["web"][1]


def name_wire(labels):
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


def query(qname_wire, qid=0x4242, edns=False, extra=b"", arcount=0):
    msg = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, arcount + (1 if edns else 0))
    msg += qname_wire + struct.pack("!HH", 1, 1) + extra
    if edns:
        msg += b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
    return msg


MALFORMED = {
    "256 octets": name_wire([b"a" * 63] * 3 + [b"b" * 62]),
    "418 octets": name_wire([b"b" * 63] * 6 + [b"c" * 32]),
    "label of 64": name_wire([b"x" * 64, b"test"]),
    "pointer into the header": b"\x03www\xc0\x04",
    "pointer to itself": b"\xc0\x0c",
    "pointer past the end": b"\xc0\xff",
    "reserved label type 0x40": b"\x41" + b"a" * 1 + b"\x00",
    "reserved label type 0x80": b"\x81abc\x00",
}


@pytest.mark.parametrize("what", sorted(MALFORMED))
@pytest.mark.parametrize("edns", [False, True])
@pytest.mark.parametrize("tcp", [False, True])
def test_malformed_name_gets_formerr_not_forward(view, what, edns, tcp):
    msg = query(MALFORMED[what], edns=edns)
    r = wire.respond(msg, view, tcp)
    assert r is not wire.FORWARD and r is not None
    assert r[:2] == msg[:2] and r[2] & 0x80 and r[2] & 0x01      # ID, QR, RD copied
    assert r[3] & 0x0F == dns.rcode.FORMERR
    assert wire.question_end(msg) == -1


def test_malformed_name_with_extra_records_gets_formerr_on_the_slow_path(view):
    extra = b"\x00\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x0a\x00\x00\x01"  # . A
    for what in ("pointer into the header", "256 octets"):
        r = wire.respond(query(MALFORMED[what], extra=extra, arcount=1), view, False)
        assert r is not wire.FORWARD and r[3] & 0x0F == dns.rcode.FORMERR, what


def test_longest_valid_name_is_still_forwarded_and_local_names_answered(view):
    longest = name_wire([b"a" * 63] * 3 + [b"b" * 61])
    assert len(longest) == 255
    assert wire.respond(query(longest), view, False) is wire.FORWARD
    assert wire.question_end(query(longest)) == 12 + 255 + 4
    r = dns.message.from_wire(wire.respond(query(name_wire([b"web"])), view, False))
    assert [rd.to_text() for rrset in r.answer for rd in rrset] == ["172.18.0.2"]


def test_a_plain_query_with_extra_records_is_still_answered(view):
    q = dns.message.make_query("web", "A")
    q.additional.append(dns.rrset.from_text("web.", 60, "IN", "A", "10.0.0.1"))
    r = dns.message.from_wire(wire.respond(q.to_wire(), view, False))
    assert r.rcode() == dns.rcode.NOERROR and len(r.answer) == 1
