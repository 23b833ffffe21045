"""cnm embedded DNS resolver: one host process answering 127.0.0.11:53 in every sandbox.

This file is self-contained (stdlib + dnspython, nothing else from the engine): the
engine copies it to ``<state_dir>/resolver/cnm_resolver.py`` and runs it as

    python3 cnm_resolver.py --config <run_dir>/dns/config.json \
        --pidfile <run_dir>/dns/resolver.pid --log <run_dir>/dns/resolver.log [--daemonize]

How it works
- Sockets: for every sandbox in the config a short-lived helper thread setns()es into the
  sandbox's network namespace, creates a UDP and a TCP socket bound to 127.0.0.11:53 and
  leaves; the sockets stay in the sandbox (nothing listens on the host). Upstream sockets
  are created by threads that never setns, i.e. in the daemon's own (host) namespace, so a
  loopback upstream such as 127.0.0.53 works.
- Threads: the main thread polls the config file and the sandboxes directory
  (mtime+inode+size) every 200 ms, the host's resolv.conf and the sandboxes' namespace
  inodes, and reloads without closing the sockets of sandboxes that stay. A control
  thread serves the engine on ``control.sock`` (beside the config, mode 0600): an update
  names the sandboxes whose files changed; only those are re-read, only the answers of
  their names change, and the reply comes once their sockets listen. One thread serves
  UDP for all sandboxes (epoll). One thread forwards UDP queries to upstreams
  (non-blocking sockets, one per query, no cap on queries in flight). One thread accepts
  TCP; each TCP connection gets its own thread.
- Fast path: local answers are prebuilt as wire bytes keyed by the lower-cased question
  (qname + qtype + qclass); a query is answered by copying its ID, RD/CD flags and
  question and appending the prebuilt records (plus an OPT record when the query had
  one). Several addresses under one name are shuffled on every answer. dnspython is only
  used to build names and for unusual messages.
- Policy (as Docker's resolver): names of the networks the asking sandbox is attached to
  are answered locally (A/AAAA/PTR; other types of a local name get NOERROR without
  answers); everything else is forwarded, except for sandboxes without forwarding
  (internal networks only), which get SERVFAIL as Docker's resolver answers them.

Config (JSON, unknown keys ignored): ``version`` (1), ``ttl`` (600), ``upstreams``
(``["ip", "ip:port", "[v6]:port"]``; empty: the nameservers of ``host_resolv_conf``,
re-read when that file changes), ``host_resolv_conf`` (/etc/resolv.conf),
``upstream_timeout`` (seconds per upstream try, 1.0).
Sandboxes: one file each, ``sandboxes/<name>.json`` beside the config: ``{"netns":
path, "forward": bool, "upstreams": [...] (optional, replaces the global list for that
sandbox, like Docker's --dns on user-defined networks), "networks": {net: {"names":
[...], "ipv4", "ipv6", "seq"}}}`` (its records on each network it resolves; ``seq``
orders several addresses of one name, older first). The config may also hold the
older whole layout, ``sandboxes`` (``{name: {"netns", "networks": [net], "forward",
"upstreams"}}``) and ``networks`` (``{net: {"endpoints": [{"sandbox", "names", "ipv4",
"ipv6"}]}}``); a sandbox file wins over it.
Control requests (JSON, one SOCK_SEQPACKET message each way): ``{"op": "update",
"sandboxes": [names]}`` or ``{"op": "reload"}``; reply ``{"ok", "listening", "errors"}``.
Signals: SIGTERM/SIGINT stop (pidfile removed), SIGHUP reloads at once.
"""
import argparse
import ctypes
import errno
import functools
import heapq
import ipaddress
import json
import logging
import os
import random
import select
import signal
import socket
import struct
import sys
import threading
import time
from collections import deque

# Duplicated from the engine's constants.py on purpose: this file runs on its own.
LISTEN_ADDRESS = "127.0.0.11"
LISTEN_PORT = 53
DEFAULT_TTL = 600
DEFAULT_HOST_RESOLV_CONF = "/etc/resolv.conf"
DEFAULT_UPSTREAM_TIMEOUT = 1.0
SCRIPT_NAME = "cnm_resolver.py"

POLL_INTERVAL = 0.2          # config / resolv.conf stat interval (changes live within 1 s)
NETNS_CHECK_INTERVAL = 1.0   # namespace inode check and retry of missing namespaces
FORWARD_BUDGET = 4.0         # whole forwarding of one query, under the client's 5 s
UPSTREAM_FAIL_MEMORY = 30.0  # a failed upstream is tried last for this long
EDNS_PAYLOAD = 1232          # our advertised UDP payload size (DNS flag day 2020)
TCP_IDLE_TIMEOUT = 10.0
SOCKET_CLOSE_GRACE = 0.5     # closed sockets linger so a reused fd number is never misread
CONTROL_TIMEOUT = 5.0        # one control request, read and answered
FRAGMENTS_DIR = "sandboxes"  # beside the config: one <sandbox>.json per sandbox
CONTROL_SOCKET = "control.sock"
LOG_MAX_BYTES = 1 << 20

CLONE_NEWNET = 0x40000000
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)

TYPE_A, TYPE_PTR, TYPE_AAAA, TYPE_OPT = 1, 12, 28, 41
CLASS_IN = 1
RCODE_NOERROR, RCODE_FORMERR, RCODE_SERVFAIL, RCODE_NXDOMAIN = 0, 1, 2, 3
RCODE_NOTIMP, RCODE_REFUSED = 4, 5

log = logging.getLogger("cnm_resolver")

# dnspython, imported by _import_dnspython() so that importing this file stays cheap
dns = None

# --- wire format helpers ------------------------------------------------------------------
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
def _entry(rtype, ttl, rdatas):
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
            if ln > 63:
                return _respond_odd(d, view, tcp)
            i += ln + 1
            ln = d[i]
    except IndexError:
        return _respond_odd(d, view, tcp)
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
    return (d[:2] + _FLAGS_TC[fi] + _counts(k, edns) + d[12:qe] + ans[:k * rrsize]
            + (_OPT if edns else b""))


def _empty_reply(d, qe, fi, rcode, edns):
    return (d[:2] + _FLAGS[rcode][fi] + (_CNT_EMPTY_EDNS if edns else _CNT_EMPTY)
            + d[12:qe] + (_OPT if edns else b""))


def _question_end(d):
    """Offset after the first question of ``d``, or -1 when it is not parseable."""
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
    return i + 5 if i + 5 <= len(d) else -1


def error_reply(d, rcode):
    """A reply with ``rcode`` echoing the query's first question (no EDNS games)."""
    if len(d) < 12:
        return None
    fi = (d[2] & 0x01) | (d[3] & 0x10)
    qe = _question_end(d)
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
        return d[:2] + bytes((0x80 | (d[2] & 0x79), 0x80 | RCODE_FORMERR)) + b"\x00" * 8
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
        if len(q.question) != 1:
            r = dns.message.make_response(q)
            r.set_rcode(dns.rcode.FORMERR)
            return r.to_wire()
        # One question but extra sections (e.g. TSIG, several additional records):
        # answer as the plain query would be answered, forward the original unchanged.
        qrr = q.question[0]
        canon = (d[:4] + (_QD1_AR1 if q.edns == 0 else _QD1) + qrr.name.to_wire()
                 + struct.pack("!HH", qrr.rdtype, qrr.rdclass))
        if q.edns == 0:
            canon += (b"\x00\x00\x29" + struct.pack("!H", max(512, q.payload))
                      + b"\x00\x00\x00\x00\x00\x00")
        if canon == d:
            return error_reply(d, RCODE_FORMERR)
        return respond(canon, view, tcp)
    except Exception:
        return error_reply(d, RCODE_SERVFAIL)


# --- records ------------------------------------------------------------------------------
# Reloads happen on every change of the host's endpoints: the pieces of a table are
# memoised across reloads so a reload costs dictionary lookups, not dnspython parsing,
# for every name that did not change (~100 us -> ~10 us per endpoint).
@functools.lru_cache(maxsize=65536)
def _name_wire(text):
    """Lower-case wire form of a domain name, or None if it is not a valid name."""
    try:
        return dns.name.from_text(text.lower().rstrip(".") + ".").to_wire()
    except Exception:
        return None


@functools.lru_cache(maxsize=65536)
def _reverse_wire(ip):
    """Wire form of the PTR owner name of address ``ip``."""
    return _name_wire(ip.reverse_pointer)


@functools.lru_cache(maxsize=65536)
def _address(value):
    if not value:
        return None
    try:
        return ipaddress.ip_interface(str(value).strip()).ip
    except ValueError:
        return None


def _ttl(value):
    try:
        return max(0, min(int(value), 0x7FFFFFFF))
    except (TypeError, ValueError):
        return DEFAULT_TTL


_QA = struct.pack("!HH", TYPE_A, CLASS_IN)
_QAAAA = struct.pack("!HH", TYPE_AAAA, CLASS_IN)
_QPTR = struct.pack("!HH", TYPE_PTR, CLASS_IN)


class Spec:
    """What one sandbox brings: where it listens and its records on each network.

    ``netns`` is None for a sandbox that only has records (nothing listens for it);
    ``nets`` are the networks whose names it resolves; ``records`` maps a network to
    ``(names, ipv4, ipv6, seq)`` (``seq`` orders round-robin answers: older first).
    """

    __slots__ = ("netns", "nets", "forward", "upstreams", "records")

    def __init__(self, netns, nets, forward, upstreams, records):
        self.netns, self.nets, self.forward = netns, nets, forward
        self.upstreams, self.records = upstreams, records


def spec_from_fragment(doc):
    """A Spec from one sandbox file (``<config dir>/sandboxes/<name>.json``), or None
    when the document is not usable. Tolerant: unknown keys are ignored."""
    if not isinstance(doc, dict):
        return None
    records = {}
    nets = doc.get("networks")
    for net, rec in (nets.items() if isinstance(nets, dict) else ()):
        if not isinstance(rec, dict):
            continue
        names = [str(x) for x in (rec.get("names") or []) if x]
        try:
            seq = int(rec.get("seq") or 0)
        except (TypeError, ValueError):
            seq = 0
        records[str(net)] = (names, rec.get("ipv4"), rec.get("ipv6"), seq)
    ups = doc.get("upstreams")
    netns = doc.get("netns")
    return Spec(str(netns) if netns else None, tuple(sorted(records)),
                bool(doc.get("forward", True)), tuple(str(u) for u in ups) if ups else None,
                records)


def specs_from_config(cfg):
    """``{sandbox: Spec}`` from a whole config in the version 1 layout (``sandboxes`` and
    ``networks`` keys; a network's endpoint may belong to a sandbox without an entry)."""
    specs = {}
    seq = 0
    for net, ndata in (cfg.get("networks") or {}).items():
        if not isinstance(ndata, dict):
            continue
        for ep in ndata.get("endpoints") or []:
            if not isinstance(ep, dict):
                continue
            names = [str(x) for x in (ep.get("names") or []) if x]
            sandbox = str(ep.get("sandbox") or (names[0] if names else ""))
            if not sandbox:
                continue
            seq += 1
            spec = specs.get(sandbox)
            if spec is None:
                spec = specs[sandbox] = Spec(None, (), True, None, {})
            spec.records[str(net)] = (names, ep.get("ipv4"), ep.get("ipv6"), seq)
    for sb, sdata in (cfg.get("sandboxes") or {}).items():
        if not isinstance(sdata, dict):
            continue
        spec = specs.get(str(sb))
        if spec is None:
            spec = specs[str(sb)] = Spec(None, (), True, None, {})
        ups = sdata.get("upstreams")
        spec.netns = str(sdata["netns"]) if sdata.get("netns") else None
        spec.nets = tuple(sorted(str(n) for n in (sdata.get("networks") or [])))
        spec.forward = bool(sdata.get("forward", True))
        spec.upstreams = tuple(str(u) for u in ups) if ups else None
    for spec in specs.values():
        if spec.netns is None:
            spec.nets = tuple(sorted(spec.records))
    return specs


class Catalog:
    """Every sandbox's records and the answer tables built from them, kept up to date
    one sandbox at a time.

    Sandboxes attached to the same set of networks share one table (question key ->
    prebuilt entry) and one set of local name keys. ``set`` changes only the entries of
    the names and addresses the sandbox had or has, in place, so its cost does not
    depend on how many sandboxes exist. Tables are read by the serving threads while
    the control thread updates them: each change is one dict/set operation (atomic in
    CPython), and a query sees either the old or the new entry.
    """

    def __init__(self, ttl=DEFAULT_TTL):
        self.ttl = _ttl(ttl)
        self.specs = {}          # sandbox -> Spec
        self.addrs = {}          # net -> {name wire: {sandbox: (v4, v6)}}
        self.ptrs = {}           # net -> {reverse wire: {sandbox: target wire}}
        self.tables = {}         # nets -> [table, names, users]
        self.views = {}          # sandbox with netns -> (table, names, forward, upstreams)

    @classmethod
    def from_specs(cls, specs, ttl=DEFAULT_TTL):
        """A catalog holding ``specs`` ({sandbox: Spec}); older records first."""
        cat = cls(ttl)

        def age(name):
            return (min([r[3] for r in specs[name].records.values()] or [0]), name)
        for name in sorted(specs, key=age):
            cat.set(name, specs[name])
        return cat

    def desired(self):
        """``{sandbox: (netns, view)}`` of the sandboxes that listen."""
        return {name: (self.specs[name].netns, view) for name, view in self.views.items()}

    # -- contributions of one sandbox
    def _keys(self, name, net, rec):
        """(address keys, pointer keys with their target) of one record."""
        names, ipv4, ipv6, dummy = rec
        netl = net.lower()
        v4, v6 = _address(ipv4), _address(ipv6)
        v4 = v4 if v4 is not None and v4.version == 4 else None
        v6 = v6 if v6 is not None and v6.version == 6 else None
        wires = []
        for text in names:
            for full in (text, "%s.%s" % (text, netl)):
                w = _name_wire(full)
                if w is not None and w not in wires:
                    wires.append(w)
        ptrs = []
        target = _name_wire("%s.%s" % (name, netl))
        if target is not None:
            ptrs = [(_reverse_wire(ip), target) for ip in (v4, v6) if ip is not None]
        return wires, (v4, v6), ptrs

    def _withdraw(self, name, spec, touched):
        for net, rec in spec.records.items():
            wires, dummy, ptrs = self._keys(name, net, rec)
            for index, keys in ((self.addrs.get(net, {}), wires),
                                (self.ptrs.get(net, {}), [w for w, dummy in ptrs])):
                for w in keys:
                    holders = index.get(w)
                    if holders is not None:
                        holders.pop(name, None)
                        if not holders:
                            del index[w]
                    touched.setdefault(net, set()).add(w)

    def _contribute(self, name, spec, touched):
        for net, rec in spec.records.items():
            wires, ips, ptrs = self._keys(name, net, rec)
            addrs = self.addrs.setdefault(net, {})
            rev = self.ptrs.setdefault(net, {})
            for w in wires:
                addrs.setdefault(w, {})[name] = ips
                touched.setdefault(net, set()).add(w)
            for w, target in ptrs:
                rev.setdefault(w, {})[name] = target
                touched.setdefault(net, set()).add(w)

    # -- tables
    def _entries(self, nets, w):
        """(A entry, AAAA entry, PTR entry, is a local name) of name key ``w``."""
        four, six, targets = [], [], []
        named = False
        for net in nets:
            holders = self.addrs.get(net, {}).get(w)
            if holders:
                named = True
                for v4, v6 in holders.values():
                    if v4 is not None and v4 not in four:
                        four.append(v4)
                    if v6 is not None and v6 not in six:
                        six.append(v6)
            holders = self.ptrs.get(net, {}).get(w)
            if holders:
                for target in holders.values():
                    if target not in targets:
                        targets.append(target)
        ttl = self.ttl
        a = aaaa = None
        if named:
            a = _entry(TYPE_A, ttl, tuple(ip.packed for ip in four))
            aaaa = _entry(TYPE_AAAA, ttl, tuple(ip.packed for ip in six))
        ptr = _entry(TYPE_PTR, ttl, tuple(targets)) if targets else None
        return a, aaaa, ptr, named or bool(targets)

    def _refresh(self, tab, nets, w):
        table, names = tab[0], tab[1]
        a, aaaa, ptr, local = self._entries(nets, w)
        for key, ent in ((w + _QA, a), (w + _QAAAA, aaaa), (w + _QPTR, ptr)):
            if ent is None:
                table.pop(key, None)
            else:
                table[key] = ent
        if local:
            names.add(w)
        else:
            names.discard(w)

    def _build(self, nets):
        tab = [{}, set(), 0]
        keys = set()
        for net in nets:
            keys.update(self.addrs.get(net, ()))
            keys.update(self.ptrs.get(net, ()))
        for w in keys:
            self._refresh(tab, nets, w)
        return tab

    def set(self, name, spec):
        """Replace sandbox ``name``'s Spec (None: remove it). Returns True when its own
        view changed (it must be re-registered with the serving threads)."""
        old = self.specs.pop(name, None)
        touched = {}
        if old is not None:
            self._withdraw(name, old, touched)
        if spec is not None:
            self.specs[name] = spec
            self._contribute(name, spec, touched)
        fresh = None
        old_nets = old.nets if old is not None and old.netns else None
        new_nets = spec.nets if spec is not None and spec.netns else None
        if old_nets != new_nets:
            if new_nets is not None:
                if new_nets not in self.tables:
                    fresh = self.tables[new_nets] = self._build(new_nets)
                self.tables[new_nets][2] += 1
            if old_nets is not None:
                tab = self.tables[old_nets]
                tab[2] -= 1
                if tab[2] <= 0:
                    del self.tables[old_nets]
        for nets, tab in self.tables.items():
            if tab is fresh:
                continue
            keys = set()
            for net in nets:
                keys.update(touched.get(net, ()))
            for w in keys:
                self._refresh(tab, nets, w)
        before = self.views.get(name)
        if new_nets is None:
            self.views.pop(name, None)
        else:
            tab = self.tables[new_nets]
            self.views[name] = (tab[0], tab[1], spec.forward, spec.upstreams)
        return self.views.get(name) != before


def build_views(cfg):
    """Per-sandbox views from a whole config: ``{sandbox: (netns, view)}``.

    A view is ``(table, names, forward, upstreams)``: ``table`` maps the question key
    to a prebuilt entry, ``names`` is the set of local name keys (for NODATA), and
    sandboxes with the same networks share one table.
    """
    return Catalog.from_specs(specs_from_config(cfg), cfg.get("ttl", DEFAULT_TTL)).desired()


# --- upstreams ----------------------------------------------------------------------------
def parse_upstream(text, default_port=53):
    """``ip``, ``ip:port``, ``[v6]:port`` or ``v6%scope`` -> (family, sockaddr, label)."""
    text = str(text).strip()
    port = default_port
    host = text
    if text.startswith("["):
        host, _sep, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError("bad upstream %r" % text)
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _sep, p = text.partition(":")
        port = int(p)
    if not 0 < port < 65536:
        raise ValueError("bad port in upstream %r" % text)
    ip = ipaddress.ip_address(host.partition("%")[0])
    if ip.version == 4:
        return socket.AF_INET, (str(ip), port), "%s:%d" % (ip, port)
    info = socket.getaddrinfo(host, port, socket.AF_INET6, socket.SOCK_DGRAM, 0,
                              socket.AI_NUMERICHOST)
    return socket.AF_INET6, info[0][4], "[%s]:%d" % (host, port)


def read_resolv_conf_nameservers(path):
    out = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    out.append(parts[1])
    except OSError:
        pass
    return out


def _parse_upstreams(texts):
    ups = []
    for t in texts:
        try:
            ups.append(parse_upstream(t))
        except (ValueError, OSError, socket.gaierror):
            _log_once("upstream:%s" % t, logging.WARNING, "ignoring invalid upstream %r", t)
    return ups


_logged = {}


def _log_once(key, level, msg, *args, every=60.0):
    """Log ``msg`` at most once per ``every`` seconds per ``key`` (no log floods)."""
    now = time.monotonic()
    last = _logged.get(key)
    if last is not None and now - last < every:
        return
    _logged[key] = now
    log.log(level, msg, *args)


class _Pending:
    __slots__ = ("csock", "caddr", "query", "qkey", "ups", "idx", "sock", "sid", "label",
                 "deadline", "end", "best", "nx")


class Forwarder:
    """Forwards queries to upstreams from the host namespace.

    UDP: ``submit`` (any thread) queues a query; the forwarder thread sends it on a new
    non-blocking socket per attempt (random source port and ID), tries the upstreams in
    order of health with ``timeout`` each, within FORWARD_BUDGET overall, and answers
    the client directly. TCP: ``forward_tcp`` runs in the caller's thread.
    """

    def __init__(self, server):
        self.server = server
        self.timeout = DEFAULT_UPSTREAM_TIMEOUT
        self.upstreams = []              # [(family, sockaddr, label)], replaced whole
        self.failed = {}                 # label -> monotonic time of the last failure
        self.queue = deque()
        self.pending = {}                # fd -> _Pending
        self.heap = []
        self.seq = 0
        self.ep = select.epoll()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.ep.register(self.wake_r, select.EPOLLIN)

    # -- shared
    def ordered(self, ups):
        """Upstreams healthy first (configured order), then the failed ones, oldest
        failure first: failing upstreams are remembered but never given up on."""
        now = time.monotonic()
        failed = self.failed

        def key(item):
            t = failed.get(item[2])
            if t is None or now - t > UPSTREAM_FAIL_MEMORY:
                return (0, 0.0)
            return (1, t)
        return sorted(ups, key=key)

    def mark_failed(self, label, why):
        if label not in self.failed:
            log.warning("upstream %s failed (%s); trying it last for %ds", label, why,
                        UPSTREAM_FAIL_MEMORY)
        self.failed[label] = time.monotonic()

    def mark_ok(self, label):
        if self.failed.pop(label, None) is not None:
            log.info("upstream %s answers again", label)

    def upstreams_for(self, view):
        if view[3]:
            ups = self.server.sandbox_upstreams.get(view[3])
            if ups is None:
                ups = _parse_upstreams(view[3])
                self.server.sandbox_upstreams[view[3]] = ups
            return ups
        return self.upstreams

    # -- UDP
    def submit(self, csock, caddr, query, view):
        self.queue.append((csock, caddr, query, view))
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass

    def run(self):
        ep = self.ep
        while not self.server.stopping:
            timeout = 0.1
            if self.heap:
                timeout = max(0.0, min(timeout, self.heap[0][0] - time.monotonic()))
            try:
                events = ep.poll(timeout)
            except InterruptedError:
                continue
            for fd, _ev in events:
                if fd == self.wake_r:
                    try:
                        while os.read(self.wake_r, 4096):
                            pass
                    except OSError:
                        pass
                    continue
                p = self.pending.get(fd)
                if p is not None:
                    try:
                        self._readable(p)
                    except Exception:
                        log.exception("forwarder error")
            while self.queue:
                csock, caddr, query, view = self.queue.popleft()
                try:
                    self._start(csock, caddr, query, view)
                except Exception:
                    log.exception("forwarder error")
            now = time.monotonic()
            while self.heap and self.heap[0][0] <= now:
                _when, _seq, p, s = heapq.heappop(self.heap)
                if p.sock is s:
                    self.mark_failed(p.label, "timeout after %.2fs" % self.timeout)
                    self._drop_sock(p)
                    self._attempt(p, now)

    def _start(self, csock, caddr, query, view):
        qe = _question_end(query)
        p = _Pending()
        p.csock, p.caddr, p.query = csock, caddr, query
        p.qkey = query[12:qe].lower() if qe > 0 else b""
        p.ups = self.ordered(self.upstreams_for(view))
        p.idx = 0
        p.sock = None
        p.best = p.nx = None
        now = time.monotonic()
        p.end = now + FORWARD_BUDGET
        self._attempt(p, now)

    def _attempt(self, p, now):
        while p.idx < len(p.ups) and now < p.end:
            fam, sa, label = p.ups[p.idx]
            p.idx += 1
            s = None
            try:
                s = socket.socket(fam, socket.SOCK_DGRAM)
                s.setblocking(False)
                s.connect(sa)
                sid = os.urandom(2)
                s.send(sid + p.query[2:])
            except OSError as e:
                if s is not None:
                    s.close()
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    _log_once("fwd-res", logging.ERROR, "cannot open upstream socket: %s", e)
                    break
                self.mark_failed(label, e.strerror or str(e))
                continue
            p.sock, p.sid, p.label = s, sid, label
            p.deadline = min(now + self.timeout, p.end)
            self.pending[s.fileno()] = p
            self.ep.register(s.fileno(), select.EPOLLIN)
            self.seq += 1
            heapq.heappush(self.heap, (p.deadline, self.seq, p, s))
            return
        self._finish(p)

    def _drop_sock(self, p):
        s = p.sock
        p.sock = None
        if s is not None:
            fd = s.fileno()
            self.pending.pop(fd, None)
            try:
                self.ep.unregister(fd)
            except OSError:
                pass
            s.close()

    def _readable(self, p):
        while p.sock is not None:
            try:
                resp = p.sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:        # ICMP port/host unreachable: next upstream now
                self.mark_failed(p.label, e.strerror or str(e))
                self._drop_sock(p)
                self._attempt(p, time.monotonic())
                return
            verdict = self._judge(p, resp)
            if verdict is None:
                continue                 # not ours (wrong ID/question): keep waiting
            self._drop_sock(p)
            if verdict:
                self._send(p, resp)
            else:
                self._attempt(p, time.monotonic())
            return

    def _judge(self, p, resp):
        """None: not the answer to our query; True: final; False: try the next one."""
        if (len(resp) < 12 or resp[:2] != p.sid or not resp[2] & 0x80
                or resp[12:12 + len(p.qkey)].lower() != p.qkey):
            return None
        self.mark_ok(p.label)
        rcode = resp[3] & 0x0F
        if resp[2] & 0x02 or rcode == RCODE_NOERROR:
            return True                  # answers, and truncated ones (client -> TCP)
        if rcode == RCODE_NXDOMAIN:
            # Authoritative NXDOMAIN ends the search (RFC 8020); otherwise another
            # upstream may know the name (split DNS set-ups), as Docker does.
            if resp[2] & 0x04:
                return True
            if p.nx is None:
                p.nx = resp
        p.best = resp
        return False

    def _finish(self, p):
        resp = p.nx or p.best
        if resp is None:
            resp = error_reply(p.query, RCODE_SERVFAIL)
            if resp is None:
                return
            self._reply(p, resp)
        else:
            self._send(p, resp)

    def _send(self, p, resp):
        self._reply(p, p.query[:2] + resp[2:])

    def _reply(self, p, data):
        try:
            p.csock.sendto(data, p.caddr)
        except OSError:
            pass

    # -- TCP (blocking, in the connection's thread)
    def forward_tcp(self, query, view):
        qe = _question_end(query)
        qkey = query[12:qe].lower() if qe > 0 else b""
        end = time.monotonic() + FORWARD_BUDGET
        best = nx = None
        for fam, sa, label in self.ordered(self.upstreams_for(view)):
            left = end - time.monotonic()
            if left <= 0:
                break
            sid = os.urandom(2)
            try:
                with socket.socket(fam, socket.SOCK_STREAM) as s:
                    s.settimeout(min(self.timeout * 2, left))
                    s.connect(sa)
                    msg = sid + query[2:]
                    s.sendall(struct.pack("!H", len(msg)) + msg)
                    hdr = _recv_exact(s, 2)
                    resp = _recv_exact(s, struct.unpack("!H", hdr)[0]) if hdr else None
            except OSError as e:
                self.mark_failed(label, e.strerror or str(e) or type(e).__name__)
                continue
            if not resp or resp[:2] != sid or resp[12:12 + len(qkey)].lower() != qkey:
                self.mark_failed(label, "bad TCP answer")
                continue
            self.mark_ok(label)
            rcode = resp[3] & 0x0F
            if rcode == RCODE_NOERROR or (rcode == RCODE_NXDOMAIN and resp[2] & 0x04):
                return query[:2] + resp[2:]
            if rcode == RCODE_NXDOMAIN and nx is None:
                nx = resp
            best = resp
        resp = nx or best
        if resp is not None:
            return query[:2] + resp[2:]
        return error_reply(query, RCODE_SERVFAIL)


def _recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


# --- sandboxes ----------------------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)


class Sandbox:
    __slots__ = ("name", "netns", "ident", "udp", "tcp", "view", "error")

    def __init__(self, name, netns):
        self.name, self.netns = name, netns
        self.ident = None               # (st_dev, st_ino) of the namespace when opened
        self.udp = self.tcp = None
        self.view = None
        self.error = None               # last error text, logged once per change


def open_sockets(items):
    """Create the listening sockets inside each namespace.

    ``items`` is a list of (name, netns path). One throwaway thread setns()es from
    namespace to namespace and ends there, so no thread that lives on ever leaves the
    host namespace. Returns ``{name: (udp, tcp, ident) or error text}``.
    """
    results = {}

    def work():
        for name, path in items:
            fd = -1
            udp = tcp = None
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                st = os.fstat(fd)
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, "setns: %s" % os.strerror(err))
                udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                udp.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
                try:
                    udp.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 1 << 20)
                except OSError:
                    pass
                udp.bind((LISTEN_ADDRESS, LISTEN_PORT))
                udp.setblocking(False)
                tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
                tcp.bind((LISTEN_ADDRESS, LISTEN_PORT))
                tcp.listen(128)
                tcp.setblocking(False)
                results[name] = (udp, tcp, (st.st_dev, st.st_ino))
            except OSError as e:
                for s in (udp, tcp):
                    if s is not None:
                        s.close()
                results[name] = "%s: %s" % (path, e.strerror or e)
            finally:
                if fd >= 0:
                    os.close(fd)

    th = threading.Thread(target=work, name="netns-open", daemon=True)
    th.start()
    th.join(30)
    return results


def _ns_ident(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


# --- the server ---------------------------------------------------------------------------
class Server:
    def __init__(self, config_path):
        self.config_path = config_path
        base = os.path.dirname(os.path.abspath(config_path))
        self.fragments_dir = os.path.join(base, FRAGMENTS_DIR)
        self.control_path = os.path.join(base, CONTROL_SOCKET)
        self.control = None              # listening control socket (SOCK_SEQPACKET)
        self.lock = threading.Lock()     # state changes: main thread and control thread
        self.catalog = Catalog()
        self.stopping = False
        self.wakeup = threading.Event()
        self.sandboxes = {}              # name -> Sandbox
        self.udp_fdmap = {}              # fd -> (socket, view), replaced whole
        self.tcp_fdmap = {}              # fd -> (socket, sandbox name), replaced whole
        self.views = {}                  # sandbox name -> view (read by TCP threads)
        self.sandbox_upstreams = {}      # per-sandbox upstream tuple -> parsed list
        self.udp_ep = select.epoll()
        self.tcp_ep = select.epoll()
        self.forwarder = Forwarder(self)
        self.cfg = {}
        self.cfg_stamp = None
        self.resolv_path = None
        self.resolv_stamp = None
        self.graveyard = []              # (close after, socket)
        self.last_netns_check = 0.0
        self.stats = {"udp": 0, "tcp": 0, "forwarded": 0}
        self.threads = []

    # -- control (main thread)
    def start_threads(self):
        self.control = self._listen_control()
        loops = [("udp", self.udp_loop), ("forwarder", self.forwarder.run),
                 ("tcp-accept", self.tcp_loop)]
        if self.control is not None:
            loops.append(("control", self.control_loop))
        for name, target in loops:
            th = threading.Thread(target=target, name=name, daemon=True)
            th.start()
            self.threads.append(th)

    def run(self):
        while not self.stopping:
            try:
                self.tick()
            except Exception:
                log.exception("reload failed")
            self.wakeup.wait(POLL_INTERVAL)
            self.wakeup.clear()

    def tick(self, force=False):
        with self.lock:
            self._tick(force)

    def _tick(self, force):
        now = time.monotonic()
        stamp = (_stamp(self.config_path), _stamp(self.fragments_dir))
        changed = force
        if stamp != self.cfg_stamp:
            self.cfg_stamp = stamp
            cfg = self.load_config()
            if cfg is not None:
                self.cfg = cfg
                self.catalog = self.load_catalog(cfg)
                changed = True
        self.check_upstreams(changed)
        if changed:
            self.apply()
        elif now - self.last_netns_check >= NETNS_CHECK_INTERVAL:
            self.last_netns_check = now
            self.apply(only_check=True)
        if self.graveyard:
            keep = []
            for when, s in self.graveyard:
                if when <= now:
                    s.close()
                else:
                    keep.append((when, s))
            self.graveyard = keep

    def load_config(self):
        try:
            with open(self.config_path, encoding="utf-8") as f:
                cfg = json.load(f)
        except FileNotFoundError:
            _log_once("cfg-missing", logging.INFO, "config %s does not exist (yet)",
                      self.config_path)
            return {}
        except (OSError, ValueError) as e:
            log.error("cannot read config %s: %s (keeping the previous one)",
                      self.config_path, e)
            return None
        if not isinstance(cfg, dict):
            log.error("config %s is not a JSON object (keeping the previous one)",
                      self.config_path)
            return None
        if cfg.get("version", 1) != 1:
            _log_once("cfg-version", logging.WARNING,
                      "config version %r is newer than this resolver knows (1); "
                      "reading the keys it knows", cfg.get("version"))
        return cfg

    def load_catalog(self, cfg):
        """A Catalog from the config's own sandboxes/networks (version 1 layout) and the
        sandbox files in ``fragments_dir`` (which win)."""
        specs = specs_from_config(cfg)
        try:
            entries = os.listdir(self.fragments_dir)
        except OSError:
            entries = []
        for entry in entries:
            if entry.endswith(".json") and not entry.startswith("."):
                spec = self.read_fragment(entry[:-5])
                if spec is not None:
                    specs[entry[:-5]] = spec
        return Catalog.from_specs(specs, cfg.get("ttl", DEFAULT_TTL))

    def read_fragment(self, name):
        """The Spec in sandbox ``name``'s file, or None (no file, or unreadable)."""
        path = os.path.join(self.fragments_dir, name + ".json")
        try:
            with open(path, encoding="utf-8") as f:
                return spec_from_fragment(json.load(f))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.error("cannot read %s: %s (ignored)", path, e)
            return None

    def check_upstreams(self, cfg_changed):
        cfg = self.cfg
        fwd = self.forwarder
        if cfg_changed:
            try:
                t = float(cfg.get("upstream_timeout", DEFAULT_UPSTREAM_TIMEOUT))
            except (TypeError, ValueError):
                t = DEFAULT_UPSTREAM_TIMEOUT
            fwd.timeout = max(0.05, min(t, FORWARD_BUDGET))
            self.sandbox_upstreams = {}
        explicit = cfg.get("upstreams") or []
        if explicit:
            if cfg_changed:
                self.resolv_path = None
                fwd.upstreams = _parse_upstreams(explicit)
            return
        path = cfg.get("host_resolv_conf") or DEFAULT_HOST_RESOLV_CONF
        stamp = _stamp(path)
        if cfg_changed or path != self.resolv_path or stamp != self.resolv_stamp:
            self.resolv_path, self.resolv_stamp = path, stamp
            ups = _parse_upstreams(read_resolv_conf_nameservers(path))
            if [u[2] for u in ups] != [u[2] for u in fwd.upstreams]:
                log.info("upstreams from %s: %s", path,
                         ", ".join(u[2] for u in ups) or "none")
            fwd.upstreams = ups

    def apply(self, only_check=False, names=None):
        """Bring the sockets in line with the catalog: open, keep, reopen, close.

        ``names``: only these sandboxes changed (an update from the control socket);
        ``only_check``: the catalog did not change, look for replaced namespaces."""
        t0 = time.monotonic()
        if names is not None:
            views = self.catalog.views
            desired = {n: (self.catalog.specs[n].netns, views[n]) for n in names
                       if n in views}
            scope = set(names)
        elif not only_check:
            desired = self.catalog.desired()
            scope = set(self.sandboxes)
        else:
            desired = {n: (sb.netns, sb.view) for n, sb in self.sandboxes.items()}
            scope = set(self.sandboxes)
        changed = not only_check
        to_open = []
        for name in [n for n in scope if n in self.sandboxes]:
            if name not in desired:
                self._close(self.sandboxes.pop(name))
                log.info("sandbox %s removed", name)
                changed = True
        for name, (netns, view) in desired.items():
            sb = self.sandboxes.get(name)
            if sb is None:
                sb = self.sandboxes[name] = Sandbox(name, netns)
            elif sb.netns != netns:
                self._close(sb)
                sb.netns = netns
            sb.view = view
            if sb.udp is not None and _ns_ident(netns) != sb.ident:
                log.info("sandbox %s: namespace %s was replaced; reopening", name, netns)
                self._close(sb)
                changed = True
            if sb.udp is None:
                to_open.append((name, netns))
        if to_open:
            for name, res in open_sockets(to_open).items():
                sb = self.sandboxes[name]
                if isinstance(res, str):
                    if sb.error != res:
                        log.warning("sandbox %s: cannot listen on %s:%d: %s (retrying)",
                                    name, LISTEN_ADDRESS, LISTEN_PORT, res)
                    sb.error = res
                    continue
                sb.udp, sb.tcp, sb.ident = res
                sb.error = None
                self.udp_ep.register(sb.udp.fileno(), select.EPOLLIN)
                self.tcp_ep.register(sb.tcp.fileno(), select.EPOLLIN)
                log.info("sandbox %s: listening in %s", name, sb.netns)
                changed = True
        if changed:
            udp, tcp, views = {}, {}, {}
            for name, sb in self.sandboxes.items():
                views[name] = sb.view
                if sb.udp is not None:
                    udp[sb.udp.fileno()] = (sb.udp, sb.view)
                    tcp[sb.tcp.fileno()] = (sb.tcp, name)
            self.udp_fdmap, self.tcp_fdmap, self.views = udp, tcp, views
            if names is not None:
                log.debug("update of %s applied: %d sandboxes (%d listening), %.1f ms",
                          ", ".join(sorted(names)), len(self.sandboxes), len(udp),
                          (time.monotonic() - t0) * 1000)
            elif not only_check:
                log.info("config applied: %d sandboxes (%d listening), %.1f ms",
                         len(self.sandboxes), len(udp), (time.monotonic() - t0) * 1000)

    # -- control socket (one thread): the engine's changes, applied before it returns
    def _listen_control(self):
        """Bind the control socket (mode 0600), or return None (logged) if impossible."""
        try:
            os.unlink(self.control_path)
        except OSError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with _unix_address(self.control_path) as addr:
                old = os.umask(0o177)
                try:
                    sock.bind(addr)
                finally:
                    os.umask(old)
            sock.listen(16)
            sock.settimeout(0.5)
        except OSError as e:
            sock.close()
            log.warning("no control socket %s: %s (changes apply at the next poll)",
                        self.control_path, e)
            return None
        return sock

    def control_loop(self):
        while not self.stopping:
            try:
                conn, dummy = self.control.accept()
            except socket.timeout:
                continue
            except OSError:
                if self.stopping:
                    return
                time.sleep(0.1)
                continue
            with conn:
                try:
                    conn.settimeout(CONTROL_TIMEOUT)
                    request = conn.recv(1 << 20)
                    if request:
                        conn.send(json.dumps(self.handle_control(request)).encode())
                except OSError:
                    pass
                except Exception:
                    log.exception("control request failed")

    def handle_control(self, request):
        """Apply one request: ``{"op": "update", "sandboxes": [names]}`` re-reads those
        sandboxes' files; ``{"op": "reload", ...}`` re-reads everything. Replies once
        the sandboxes named listen (or failed): ``{"ok", "listening", "errors"}``."""
        try:
            msg = json.loads(request)
            names = [str(n) for n in msg.get("sandboxes") or []]
            op = msg.get("op")
        except (ValueError, AttributeError, TypeError):
            return {"ok": False, "error": "bad request"}
        with self.lock:
            if op == "reload":
                self.cfg_stamp = None
                self._tick(True)
            elif op == "update":
                for name in names:
                    self.catalog.set(name, self.read_fragment(name))
                self.cfg_stamp = (self.cfg_stamp[0] if self.cfg_stamp else None,
                                  _stamp(self.fragments_dir))
                self.apply(names=names)
            else:
                return {"ok": False, "error": "unknown op %r" % (op,)}
            listening = [n for n in names if n in self.sandboxes
                         and self.sandboxes[n].udp is not None]
            errors = {n: self.sandboxes[n].error for n in names
                      if n in self.sandboxes and self.sandboxes[n].error}
        return {"ok": True, "listening": listening, "errors": errors}

    def _close(self, sb):
        for s, ep in ((sb.udp, self.udp_ep), (sb.tcp, self.tcp_ep)):
            if s is None:
                continue
            try:
                ep.unregister(s.fileno())
            except (OSError, ValueError):
                pass
            self.graveyard.append((time.monotonic() + SOCKET_CLOSE_GRACE, s))
        sb.udp = sb.tcp = None
        sb.ident = None

    def shutdown(self):
        self.stopping = True
        self.wakeup.set()
        if self.control is not None:
            self.control.close()
            try:
                os.unlink(self.control_path)
            except OSError:
                pass
        for sb in self.sandboxes.values():
            for s in (sb.udp, sb.tcp):
                if s is not None:
                    s.close()

    # -- UDP fast path (one thread)
    def udp_loop(self):
        poll = self.udp_ep.poll
        fwd = self.forwarder
        stats = self.stats
        while not self.stopping:
            try:
                events = poll(0.5)
            except InterruptedError:
                continue
            fdmap = self.udp_fdmap
            for fd, _ev in events:
                ent = fdmap.get(fd)
                if ent is None:
                    continue
                sock, view = ent
                recvfrom = sock.recvfrom
                sendto = sock.sendto
                count = 0
                while count < 256:
                    try:
                        d, addr = recvfrom(4096)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break
                    count += 1
                    try:
                        r = respond(d, view, False)
                        if r is None:
                            continue
                        if r is FORWARD:
                            stats["forwarded"] += 1
                            fwd.submit(sock, addr, d, view)
                            continue
                        sendto(r, addr)
                    except OSError:
                        pass
                    except Exception:
                        _log_once("udp-exc", logging.ERROR, "error answering a query",
                                  every=10.0)
                        log.debug("details", exc_info=True)
                stats["udp"] += count

    # -- TCP (acceptor thread + one thread per connection)
    def tcp_loop(self):
        poll = self.tcp_ep.poll
        while not self.stopping:
            try:
                events = poll(0.5)
            except InterruptedError:
                continue
            fdmap = self.tcp_fdmap
            for fd, _ev in events:
                ent = fdmap.get(fd)
                if ent is None:
                    continue
                lsock, name = ent
                while True:
                    try:
                        conn, _addr = lsock.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as e:
                        if e.errno in (errno.EMFILE, errno.ENFILE):
                            _log_once("tcp-emfile", logging.ERROR, "accept: %s", e)
                            time.sleep(0.05)
                        break
                    th = threading.Thread(target=self.tcp_conn, args=(conn, name),
                                          name="tcp-conn", daemon=True)
                    th.start()

    def tcp_conn(self, conn, name):
        try:
            conn.settimeout(TCP_IDLE_TIMEOUT)
            while not self.stopping:
                hdr = _recv_exact(conn, 2)
                if not hdr:
                    break
                msg = _recv_exact(conn, struct.unpack("!H", hdr)[0])
                if msg is None:
                    break
                view = self.views.get(name)
                if view is None:
                    break
                self.stats["tcp"] += 1
                r = respond(msg, view, True)
                if r is FORWARD:
                    r = self.forwarder.forward_tcp(msg, view)
                if r:
                    conn.sendall(struct.pack("!H", len(r)) + r)
        except OSError:
            pass
        except Exception:
            log.exception("error in TCP connection of sandbox %s", name)
        finally:
            conn.close()


class _unix_address:
    """Context manager giving an AF_UNIX address for ``path``: the path itself, or, when
    it is longer than sun_path allows, the same file reached through /proc/self/fd."""

    def __init__(self, path):
        self.path, self.fd = path, -1

    def __enter__(self):
        if len(os.fsencode(self.path)) < 100:
            return self.path
        self.fd = os.open(os.path.dirname(self.path), os.O_RDONLY | os.O_DIRECTORY)
        return "/proc/self/fd/%d/%s" % (self.fd, os.path.basename(self.path))

    def __exit__(self, *exc):
        if self.fd >= 0:
            os.close(self.fd)


def _stamp(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ino, st.st_size, st.st_dev)


# --- process --------------------------------------------------------------------------
def _import_dnspython():
    global dns
    import dns.message  # noqa: F401  (binds the package name ``dns``)
    import dns.name  # noqa: F401
    import dns.opcode  # noqa: F401
    import dns.rcode  # noqa: F401
    dns = sys.modules["dns"]


def _setup_logging(path, debug=False):
    try:
        if os.path.getsize(path) > LOG_MAX_BYTES:
            os.replace(path, path + ".1")
    except OSError:
        pass
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(
        "%(asctime)s cnm_resolver[%(process)d] %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if debug else logging.INFO)
    log.propagate = False
    return handler


def _daemonize(ready_w_holder):
    """Classic double fork. The original process waits for the daemon's readiness line
    on a pipe and exits 0 (ready) or 1 (error, printed on stderr)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid > 0:
        os.close(w)
        os.waitpid(pid, 0)
        data = b""
        end = time.monotonic() + 15
        while time.monotonic() < end:
            readable = select.select([r], [], [], max(0.0, end - time.monotonic()))[0]
            if not readable:
                break
            chunk = os.read(r, 4096)
            if not chunk:
                break
            data += chunk
            if b"\n" in data:
                break
        line = data.decode("utf-8", "replace").strip()
        if line.startswith("ready"):
            sys.stdout.write(line + "\n")
            os._exit(0)
        sys.stderr.write((line or "resolver did not report readiness") + "\n")
        os._exit(1)
    os.close(r)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    ready_w_holder.append(w)


def _redirect_stdio(logpath):
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    try:
        fd = os.open(logpath, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(fd, 2)                   # tracebacks of a crash land in the log
        os.close(fd)
    except OSError:
        pass


class _Pidfile:
    """Pidfile held with an exclusive flock: a second instance refuses to start."""

    def __init__(self, path):
        import fcntl
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            self.fd = -1
            raise
        os.ftruncate(self.fd, 0)
        os.write(self.fd, b"%d\n" % os.getpid())
        os.fsync(self.fd)

    def remove(self):
        if self.fd < 0:
            return
        try:
            with open(self.path, "rb") as f:
                mine = f.read().strip() == str(os.getpid()).encode()
            if mine:
                os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = -1


def _raise_nofile():
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = 1 << 20
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


def main(argv=None):
    ap = argparse.ArgumentParser(description="cnm embedded DNS resolver")
    ap.add_argument("--config", required=True)
    ap.add_argument("--pidfile", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--daemonize", action="store_true")
    ap.add_argument("--debug", action="store_true")
    args = ap.parse_args(argv)
    for p in (args.pidfile, args.log):
        os.makedirs(os.path.dirname(os.path.abspath(p)), exist_ok=True)

    ready = []
    if args.daemonize:
        _daemonize(ready)
        os.chdir("/")
        os.umask(0o022)
        _redirect_stdio(args.log)

    def report(line):
        while ready:
            w = ready.pop()
            try:
                os.write(w, (line + "\n").encode())
            except OSError:
                pass
            os.close(w)

    _setup_logging(args.log, args.debug)
    try:
        pidfile = _Pidfile(args.pidfile)
    except OSError as e:
        msg = "another resolver holds %s (%s)" % (args.pidfile, e.strerror)
        log.error(msg)
        report("error: " + msg)
        return 2
    try:
        _import_dnspython()
    except ImportError as e:
        msg = "dnspython is required (%s): install python3-dnspython or pip dnspython" % e
        log.error(msg)
        report("error: " + msg)
        pidfile.remove()
        return 3

    _raise_nofile()
    server = Server(os.path.abspath(args.config))

    def on_term(signum, _frame):
        log.info("signal %d: stopping", signum)
        server.stopping = True
        server.wakeup.set()

    def on_hup(_signum, _frame):
        server.cfg_stamp = ("reload",)
        server.wakeup.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, on_hup)
    log.info("starting (pid %d, python %s, config %s)", os.getpid(),
             sys.version.split()[0], args.config)
    server.start_threads()
    try:
        server.tick()
    except Exception:
        log.exception("initial load failed")
    report("ready %d" % os.getpid())
    try:
        server.run()
    finally:
        server.shutdown()
        pidfile.remove()
        log.info("stopped (answered udp=%d tcp=%d, forwarded=%d)", server.stats["udp"],
                 server.stats["tcp"], server.stats["forwarded"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
