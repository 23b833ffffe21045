"""Wire format: DNS messages as bytes, and the fast path that answers a query from them.

Local answers are prebuilt as wire bytes keyed by the lower-cased question (qname +
qtype + qclass); a query is answered by copying its ID, RD/CD flags and question and
appending the prebuilt records (plus an OPT record when the query had one). Several
addresses under one name are shuffled on every answer. dnspython is only used to build
names and for unusual messages (``import_dnspython`` loads it when the daemon starts,
so importing this file stays cheap).
"""
import functools
import random
import struct
import sys

EDNS_PAYLOAD = 1232          # our advertised UDP payload size (DNS flag day 2020)

TYPE_A, TYPE_PTR, TYPE_AAAA, TYPE_OPT = 1, 12, 28, 41
CLASS_IN = 1
RCODE_NOERROR, RCODE_FORMERR, RCODE_SERVFAIL, RCODE_NXDOMAIN = 0, 1, 2, 3
RCODE_NOTIMP, RCODE_REFUSED = 4, 5

# question suffixes (qtype + qclass): a table key is the owner name's wire form + one
QA = struct.pack("!HH", TYPE_A, CLASS_IN)
QAAAA = struct.pack("!HH", TYPE_AAAA, CLASS_IN)
QPTR = struct.pack("!HH", TYPE_PTR, CLASS_IN)

# dnspython, imported by import_dnspython() so that importing this file stays cheap
dns = None


def import_dnspython():
    """Load dnspython (raises ImportError without it); called once at start."""
    global dns
    import dns.message  # noqa: F401  (binds the package name ``dns``)
    import dns.name  # noqa: F401
    import dns.opcode  # noqa: F401
    import dns.rcode  # noqa: F401
    dns = sys.modules["dns"]


_QD1 = b"\x00\x01\x00\x00\x00\x00\x00\x00"        # QD=1 AN=0 NS=0 AR=0
_QD1_AR1 = b"\x00\x01\x00\x00\x00\x00\x00\x01"    # ... AR=1 (the OPT record)
_OPT = b"\x00\x00\x29" + struct.pack("!H", EDNS_PAYLOAD) + b"\x00\x00\x00\x00\x00\x00"
_OPT_LEN = len(_OPT)


def _flag_table(rcode, tc=False):
    """Response flag bytes indexed by ``(query[2] & 0x01) | (query[3] & 0x10)``.

    QR and RA are set, RD and CD are copied from the query (as Docker's resolver does,
    AA is not set), TC on request.
    """
    table = []
    for idx in range(0x12):
        b2 = 0x80 | (idx & 0x01) | (0x02 if tc else 0)
        b3 = 0x80 | (idx & 0x10) | rcode
        table.append(bytes((b2, b3)))
    return table


_FLAGS = dict((rc, _flag_table(rc)) for rc in (
    RCODE_NOERROR, RCODE_SERVFAIL, RCODE_NXDOMAIN, RCODE_REFUSED, RCODE_FORMERR, RCODE_NOTIMP))
_FLAGS_OK = _FLAGS[RCODE_NOERROR]
_FLAGS_TC = _flag_table(RCODE_NOERROR, tc=True)
_CNT_EMPTY = _QD1
_CNT_EMPTY_EDNS = _QD1_AR1
_NAME_END_MAX = 12 + 254     # offset of the root label of a 255-octet question name


class _Forward:
    """Marker returned by ``respond``: the query must go to the upstreams."""

    __slots__ = ()

    def __repr__(self):
        return "FORWARD"


FORWARD = _Forward()


def _counts(ancount, edns):
    return b"\x00\x01" + struct.pack("!H", ancount) + b"\x00\x00" + (
        b"\x00\x01" if edns else b"\x00\x00")


def make_entry(rrs):
    """Prebuilt answer for one question: a tuple read by ``respond``.

    ``rrs`` is a list of resource records in wire format whose owner name is the
    compression pointer to the question (0xC00C). Up to four records all permutations
    are prebuilt (a shuffle is then one random index); more are shuffled per answer.
    """
    rrs = tuple(rrs)
    n = len(rrs)
    single = perms = None
    if n <= 1:
        single = rrs[0] if rrs else b""
    elif n <= 4:
        import itertools
        perms = tuple(b"".join(p) for p in itertools.permutations(rrs))
    sizes = {len(r) for r in rrs}
    rrsize = sizes.pop() if len(sizes) == 1 else 0
    anslen = sum(len(r) for r in rrs)
    return (_counts(n, False), _counts(n, True), single, rrs, perms, anslen, rrsize)


@functools.lru_cache(maxsize=65536)
def answer_entry(rtype, ttl, rdatas):
    """make_entry for records of one type (memoised: entries are immutable tuples)."""
    return make_entry([_rr(rtype, ttl, rdata) for rdata in rdatas])


def _rr(rtype, ttl, rdata):
    return b"\xc0\x0c" + struct.pack("!HHIH", rtype, CLASS_IN, ttl, len(rdata)) + rdata


_EMPTY_ENTRY = make_entry([])


def respond(d, view, tcp):
    """Answer one query ``d`` (wire bytes) for a sandbox whose records are ``view``.

    Returns the response bytes, ``FORWARD`` when the query must go upstream, or None
    when nothing must be sent (a response, or garbage too short to answer).
    ``view`` is ``(table, names, forward, upstreams)``. Never raises on bad input.
    """
    n = len(d)
    if n < 17:
        return _respond_odd(d, view, tcp)
    h = d[4:12]
    if h == _QD1:
        edns = False
    elif h == _QD1_AR1:
        edns = True
    else:
        return _respond_odd(d, view, tcp)
    if d[2] & 0xF8:                     # QR set or opcode != QUERY
        return _respond_odd(d, view, tcp)
    i = 12
    try:
        ln = d[12]
        while ln:
            if ln > 63:                 # compression pointer or reserved label type
                return formerr(d)
            i += ln + 1
            ln = d[i]
    except IndexError:
        return _respond_odd(d, view, tcp)
    if i > _NAME_END_MAX:
        return formerr(d)               # name over 255 octets: never forwarded
    qe = i + 5
    if qe > n:
        return _respond_odd(d, view, tcp)
    if edns:
        # the one additional record must be an OPT of EDNS version 0
        if n < qe + 11 or d[qe] or d[qe + 1] or d[qe + 2] != TYPE_OPT or d[qe + 6]:
            return _respond_odd(d, view, tcp)
        limit = (d[qe + 3] << 8) | d[qe + 4]
        if limit < 512:
            limit = 512
        elif limit > EDNS_PAYLOAD:
            limit = EDNS_PAYLOAD
    else:
        limit = 512
    if tcp:
        limit = 65535
    fi = (d[2] & 0x01) | (d[3] & 0x10)
    key = d[12:i].lower() + d[i:qe]
    ent = view[0].get(key)
    if ent is None:
        if key[:-4] in view[1]:
            # a local name without records of this type: NOERROR, no answer
            ent = _EMPTY_ENTRY
        elif not view[2]:
            return _empty_reply(d, qe, fi, RCODE_SERVFAIL, edns)
        else:
            return FORWARD
    cnt, cnt_edns, ans, rrs, perms, anslen, rrsize = ent
    if perms is not None:
        ans = perms[int(random.random() * len(perms))]
    elif ans is None:
        shuffled = list(rrs)
        random.shuffle(shuffled)
        ans = b"".join(shuffled)
    if edns:
        if qe + anslen + _OPT_LEN <= limit:
            return d[:2] + _FLAGS_OK[fi] + cnt_edns + d[12:qe] + ans + _OPT
    elif qe + anslen <= limit:
        return d[:2] + _FLAGS_OK[fi] + cnt + d[12:qe] + ans
    # Too big for UDP: TC set, as many whole records as fit (musl clients use them,
    # glibc and dig retry over TCP).
    room = limit - qe - (_OPT_LEN if edns else 0)
    k = room // rrsize if rrsize else 0
    opt = _OPT if edns else b""
    return d[:2] + _FLAGS_TC[fi] + _counts(k, edns) + d[12:qe] + ans[:k * rrsize] + opt


def _empty_reply(d, qe, fi, rcode, edns):
    counts = _CNT_EMPTY_EDNS if edns else _CNT_EMPTY
    return d[:2] + _FLAGS[rcode][fi] + counts + d[12:qe] + (_OPT if edns else b"")


def question_end(d):
    """Offset after the first question of ``d``, or -1 when it is not parseable or its
    name is malformed (compressed, a reserved label type, over 255 octets)."""
    if len(d) < 12 or d[4:6] == b"\x00\x00":
        return -1
    i = 12
    try:
        ln = d[12]
        while ln:
            if ln > 63:
                return -1
            i += ln + 1
            ln = d[i]
    except IndexError:
        return -1
    if i > _NAME_END_MAX:
        return -1
    return i + 5 if i + 5 <= len(d) else -1


def formerr(d):
    """FORMERR for query ``d`` (ID, opcode and RD copied; no sections), or None for a
    message too short to answer or a response."""
    if len(d) < 12 or d[2] & 0x80:
        return None
    return d[:2] + bytes((0x80 | (d[2] & 0x79), 0x80 | RCODE_FORMERR)) + b"\x00" * 8


def error_reply(d, rcode):
    """A reply with ``rcode`` echoing the query's first question (no EDNS games)."""
    if len(d) < 12:
        return None
    fi = (d[2] & 0x01) | (d[3] & 0x10)
    qe = question_end(d)
    if qe < 0:
        return d[:2] + _FLAGS[rcode][fi] + b"\x00" * 8
    edns = d[10:12] != b"\x00\x00"
    return _empty_reply(d, qe, fi, rcode, edns)


def _respond_odd(d, view, tcp):
    """Slow path with dnspython: malformed, unusual or non-QUERY messages."""
    if len(d) < 12 or d[2] & 0x80:
        return None                      # too short to answer, or a response
    try:
        q = dns.message.from_wire(d, ignore_trailing=True)
    except Exception:
        return formerr(d)
    try:
        if q.opcode() != dns.opcode.QUERY:
            r = dns.message.make_response(q)
            r.set_rcode(dns.rcode.NOTIMP)
            return r.to_wire()
        if q.edns > 0:
            r = dns.message.make_response(q)
            r.use_edns(0, payload=EDNS_PAYLOAD)
            r.set_rcode(dns.rcode.BADVERS)
            return r.to_wire()
        if len(q.question) != 1 or question_end(d) < 0:
            # several questions, or one whose name is compressed (a query's first name
            # can only point into its header): nothing worth forwarding
            r = dns.message.make_response(q)
            r.set_rcode(dns.rcode.FORMERR)
            return r.to_wire()
        # One question but extra sections (e.g. TSIG, several additional records):
        # answer as the plain query would be answered, forward the original unchanged.
        qrr = q.question[0]
        head = d[:4] + (_QD1_AR1 if q.edns == 0 else _QD1)
        canon = head + qrr.name.to_wire() + struct.pack("!HH", qrr.rdtype, qrr.rdclass)
        if q.edns == 0:
            payload = struct.pack("!H", max(512, q.payload))
            canon += b"\x00\x00\x29" + payload + b"\x00\x00\x00\x00\x00\x00"
        if canon == d:
            return error_reply(d, RCODE_FORMERR)
        return respond(canon, view, tcp)
    except Exception:
        return error_reply(d, RCODE_SERVFAIL)


# Reloads happen on every change of the host's endpoints: names are memoised across
# reloads so a reload costs dictionary lookups, not dnspython parsing, for every name
# that did not change (~100 us -> ~10 us per endpoint).
@functools.lru_cache(maxsize=65536)
def name_wire(text):
    """Lower-case wire form of a domain name, or None if it is not a valid name."""
    try:
        return dns.name.from_text(text.lower().rstrip(".") + ".").to_wire()
    except Exception:
        return None


@functools.lru_cache(maxsize=65536)
def reverse_wire(ip):
    """Wire form of the PTR owner name of address ``ip``."""
    return name_wire(ip.reverse_pointer)


# --- DNS over TCP: a two-byte length before each message ----------------------------------
def recv_message(sock):
    """The next length-prefixed message on stream socket ``sock``, or None at its end."""
    hdr = _recv_exact(sock, 2)
    return _recv_exact(sock, struct.unpack("!H", hdr)[0]) if hdr else None


def tcp_frame(msg):
    """``msg`` with its two-byte length, ready for ``sendall``."""
    return struct.pack("!H", len(msg)) + msg


def _recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf
