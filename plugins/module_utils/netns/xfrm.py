"""The IPsec (ESP) encryption of an overlay network's VXLAN traffic: keys, SAs and policies.

``encrypted: true`` (Docker's ``--opt encrypted``): between each pair of hosts, the VXLAN
packets (UDP 4789) of the network travel in ESP, transport mode, AEAD
``rfc4106(gcm(aes))`` (AES-GCM, 128- or 256-bit key + 4-byte salt, 128-bit ICV).

Keys. A network has one or more ``NetworkKey`` (a generation number + a 32-byte random
secret) kept in the cluster store. Every host derives the SA of each direction of each
pair from it without talking (``derive_sa``: HKDF-SHA256 over the network secret, the VNI,
the generation and the ordered pair of VTEP addresses), so host A's outbound SA to B is
exactly B's inbound SA from A. Key bytes live only inside ``Secret`` (whose repr/str hide
them), in the cluster store, and in netlink messages to the kernel: never in argv, in a
log, in an exception or in a module's result.

Tags. Each network's kernel objects carry ``network_tag(vni)`` = 0xCE000000 | VNI: it is
the reqid of its SAs and policy templates, and the mark of its policies. ``apply`` and
``teardown`` touch only objects with that tag, so several networks (and other users of
xfrm, with other reqids/marks) share one host.

Which packets. All VXLAN of a host pair has the same addresses and ports, whatever the
network: the network is told apart by the VNI inside the VXLAN header, which xfrm selectors
cannot see. So (as Docker does) the firewall marks the outgoing VXLAN packets of the
network with its tag (``mark_rules_nft``/``mark_rules_iptables``: the output rule matches
UDP 4789 + the VNI), and the ``dir out`` policy (src local, dst remote, udp dport 4789,
mark = tag) sends exactly those through the SA. Inbound SAs set the same mark on what they
decrypt, which the ``dir in`` policy (mark = tag, template reqid = tag) checks; the
firewall's input rule drops cleartext VXLAN of the VNI (no IPsec secpath). Without the
output mark rule nothing is encrypted: the lead must install both rules with the SAs.
MTU: ESP in transport mode with AES-GCM adds up to 40 bytes to each VXLAN packet (8 ESP
header + 8 IV + 0-3 padding + 2 trailer + 16 ICV): the overlay's MTU is 50 (VXLAN) +
40 below the underlay's.

Key rotation without loss (Docker's order; every step is a ``render`` + ``apply`` with
the keys given, ``primary`` = the generation used outbound):
  1. every host: keys = [old, new], primary = old   -> adds the inbound SAs of ``new``
     (each host now accepts both generations; it still sends with ``old``);
  2. only when step 1 has succeeded on EVERY host of the network: every host:
     keys = [old, new], primary = new -> adds the outbound SAs of ``new`` and removes the
     outbound SAs of ``old`` (traffic switches at once; the peer already accepts ``new``);
  3. only when step 2 has succeeded everywhere (later, e.g. the next sync): every host:
     keys = [new], primary = new -> removes the inbound SAs of ``old``.
A host that misses step 2 keeps sending with ``old``, which its peers still accept until
step 3; so step 3 must wait for all. No packet is lost by the protocol itself; the only
window is the kernel switching the cached route of the VXLAN device (sub-millisecond).

Namespace. ``apply``/``teardown``/``read_state`` work in the calling thread's network
namespace (a module runs in the host's), or in ``netns`` (a path) when given.
"""
import base64
import binascii
import collections
import errno
import hashlib
import hmac
import ipaddress
import secrets
import struct

from ..errors import KernelError, ValidationError
from . import xfrm_netlink as nl

VXLAN_PORT = 4789
AEAD_ALG = "rfc4106(gcm(aes))"
ICV_BITS = 128
SALT_BYTES = 4
KEY_BITS = (128, 256)
SECRET_BYTES = 32
TAG_PREFIX = 0xCE000000
TAG_MASK = 0xFF000000
PRIORITY = 100
REPLAY_WINDOW = 32
ESP_OVERHEAD = 40      # ESP transport + AES-GCM per VXLAN packet (see MTU above)
ROTATION_FIELD = "key_rotation"
_LABEL = b"cnm.core/overlay/xfrm/v1"


class Secret:
    """Bytes that must not leak: repr/str show only their length; ``reveal()`` gives them."""

    __slots__ = ("_value",)

    def __init__(self, value):
        if not isinstance(value, (bytes, bytearray)):
            raise TypeError("Secret wraps bytes")
        self._value = bytes(value)

    def reveal(self):
        """The bytes; only for the cluster store and netlink messages."""
        return self._value

    def __len__(self):
        return len(self._value)

    def __eq__(self, other):
        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash(hashlib.sha256(_LABEL + self._value).digest())

    def __repr__(self):
        return "Secret(<%d bytes hidden>)" % len(self._value)

    __str__ = __repr__

    def __format__(self, spec):
        return repr(self)

    def __reduce__(self):
        raise TypeError("a Secret is not pickled")


class NetworkKey(collections.namedtuple("NetworkKey", "generation secret")):
    """One generation of a network's key: ``generation`` (int >= 0), ``secret`` (Secret)."""

    __slots__ = ()

    def to_store(self):
        """{generation, secret (base64)} for the cluster store (the only place it goes)."""
        return {"generation": self.generation,
                "secret": base64.b64encode(self.secret.reveal()).decode()}

    @classmethod
    def from_store(cls, doc, field="encryption.keys"):
        """The key of a cluster-store document ``to_store`` wrote. Raises
        ValidationError naming ``field`` (never showing the secret) when malformed."""
        try:
            generation = doc["generation"]
            raw = base64.b64decode(doc["secret"], validate=True)
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise ValidationError("is not a network key document", field=field) from None
        if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
            raise ValidationError("generation must be an integer >= 0", field=field)
        if len(raw) < 16:
            raise ValidationError("secret must hold at least 16 bytes", field=field)
        return cls(generation, Secret(raw))


def generate_key(generation=0):
    """A fresh random ``NetworkKey`` (32 bytes from ``secrets``). Called once when an
    encrypted network is created, and for each ``key_rotation`` (generation + 1)."""
    return NetworkKey(generation, Secret(secrets.token_bytes(SECRET_BYTES)))


def is_encrypted(options):
    """True when a network's driver options ask for encryption (Docker's ``--opt
    encrypted``: present with no value, or ``true``). Pure."""
    value = (options or {}).get("encrypted")
    return value is not None and str(value).lower() in ("", "true")


def new_key_document(generation=0):
    """The cluster store's key document of a newly created encrypted network (one fresh
    key, primary). Holds the secret: it goes to the store only."""
    return {"keys": [generate_key(generation).to_store()], "primary": generation}


def keys_of_document(doc):
    """``(keys, primary)`` of a key document (NetworkKeys, the outbound generation).
    Raises ValidationError naming ``encryption.keys`` (never showing a secret)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list) or not doc["keys"]:
        raise ValidationError("is not a key document", field="encryption.keys")
    keys = [NetworkKey.from_store(k) for k in doc["keys"]]
    if doc.get("primary") not in [k.generation for k in keys]:
        raise ValidationError("the primary generation is not among the keys",
                              field="encryption.keys")
    return keys, doc["primary"]


def key_state(doc):
    """What a host acknowledges once it applied ``doc``: the generations and the
    primary, no secret. Pure."""
    return {"generations": sorted(k["generation"] for k in doc["keys"]),
            "primary": doc["primary"]}


def rotation_step(doc, wanted):
    """The next key document of a rotation to generation ``wanted``, or None when the
    document is at rest at ``wanted`` or later (one key, primary). Each step must be
    applied (and acknowledged) by every host before the next (module docstring):
    [old] -> [old, new] primary old -> [old, new] primary new -> [new]. A rotation left
    half-way is finished first. Raises ValidationError for a malformed document."""
    keys, primary = keys_of_document(doc)
    newest = max(k.generation for k in keys)
    if len(keys) == 1:
        if primary >= wanted:
            return None
        return {"keys": doc["keys"] + [generate_key(wanted).to_store()], "primary": primary}
    if primary != newest:
        return dict(doc, primary=newest)
    return {"keys": [k for k in doc["keys"] if k["generation"] == newest], "primary": newest}


def esp_unsupported(netns=None):
    """Why this kernel cannot run ESP with AES-GCM (text naming the kernel options), or
    None when it can. Called before anything of an encrypted network is made: adds and
    deletes a throwaway SA (TEST-NET addresses, a random SPI) in the caller's namespace
    (or ``netns``). Raises nothing."""
    spi = 256 + secrets.randbelow((1 << 31))
    spec = {"src": "192.0.2.1", "dst": "192.0.2.2", "spi": spi, "reqid": TAG_PREFIX,
            "dport": VXLAN_PORT, "alg": AEAD_ALG, "key_bits": 128 + 8 * SALT_BYTES,
            "icv_bits": ICV_BITS, "set_mark": 0, "replay_window": 0}
    try:
        with _open(netns) as sock:
            try:
                sock.add_sa(spec, secrets.token_bytes(16 + SALT_BYTES))
            except nl.XfrmNetlinkError as exc:
                return nl.MISSING_SUPPORT.get(exc.code) or "adding an ESP SA fails: %s" % (
                    exc.strerror)
            try:
                sock.delete_sa(spec["dst"], spi)
            except nl.XfrmNetlinkError:
                pass
    except (OSError, KernelError) as exc:
        return "no xfrm netlink socket: %s" % (getattr(exc, "strerror", None) or exc)
    return None


def network_tag(vni):
    """The reqid and mark of every xfrm object of the network with VXLAN id ``vni``.
    Raises ValidationError when ``vni`` is not in 1..16777215."""
    if not isinstance(vni, int) or isinstance(vni, bool) or not 0 < vni < 1 << 24:
        raise ValidationError("VNI %r is outside 1..16777215" % (vni,), field="vni")
    return TAG_PREFIX | vni


def _ip(text, field):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValidationError("%r is not an IP address" % (text,), field=field) from None


def _hkdf(secret, info, length):
    prk = hmac.new(_LABEL, secret, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def derive_sa(key, vni, src, dst, key_bits=128):
    """``(spi, Secret(key material))`` of the SA carrying the network's packets from VTEP
    ``src`` to VTEP ``dst`` under ``key`` (a NetworkKey). Pure and deterministic: both hosts
    get the same result. The material is the AES key + 4-byte salt (20 or 36 bytes); the
    SPI is in 256..2**32-1 (never 0, never IANA's reserved 1-255). Raises ValidationError."""
    if key_bits not in KEY_BITS:
        raise ValidationError("key size %r is not one of 128, 256" % (key_bits,),
                              field="key_bits")
    a, b = _ip(src, "local"), _ip(dst, "remote")
    if a.version != b.version or a == b:
        raise ValidationError("%s -> %s is not a pair of distinct addresses of one family"
                              % (a, b), field="remote")
    size = key_bits // 8 + SALT_BYTES
    info = b"sa" + struct.pack(">IIH", network_tag(vni), key.generation, key_bits)
    info += bytes([len(a.packed)]) + a.packed + b.packed
    okm = _hkdf(key.secret.reveal(), info, size + 4)
    spi = 256 + struct.unpack(">I", okm[size:])[0] % ((1 << 32) - 256)
    return spi, Secret(okm[:size])


SA = collections.namedtuple("SA", "direction src dst spi reqid generation key_bits key set_mark")
SA.__doc__ = """One desired ESP SA: ``direction`` 'out' or 'in' (seen from this host),
``key`` a Secret (hidden in repr), ``set_mark`` the mark set on decrypted packets (in) or 0."""
Policy = collections.namedtuple("Policy", "direction src dst reqid mark priority")
Policy.__doc__ = """One desired policy: UDP ``src`` -> ``dst`` dport 4789 marked ``mark``
must use an ESP SA of ``reqid``."""
Desired = collections.namedtuple("Desired", "tag sas policies")
Desired.__doc__ = """The xfrm objects one host wants for one network (``render``)."""


def render(vni, local, remotes, keys, primary, key_bits=128):
    """The desired SAs and policies of one host (VTEP ``local``) for the network ``vni``
    towards ``remotes`` (VTEP addresses of the other hosts), as a ``Desired``. Pure.

    ``keys``: the NetworkKeys in use (each gives inbound SAs from every remote);
    ``primary``: the generation used outbound (must be among ``keys``). See the module
    docstring for the rotation protocol. Raises ValidationError naming the field."""
    tag = network_tag(vni)
    by_gen = {}
    for key in keys:
        if not isinstance(key, NetworkKey) or not isinstance(key.secret, Secret):
            raise ValidationError("each key must be a NetworkKey", field="keys")
        if key.generation in by_gen:
            raise ValidationError("generation %d is given twice" % key.generation,
                                  field="keys")
        by_gen[key.generation] = key
    if primary not in by_gen:
        raise ValidationError("generation %r is not among the keys %s"
                              % (primary, sorted(by_gen)), field="primary")
    here = str(_ip(local, "local"))
    peers = sorted({str(_ip(r, "remotes")) for r in remotes} - {here})
    sas, policies = [], []
    for peer in peers:
        spi, material = derive_sa(by_gen[primary], vni, here, peer, key_bits)
        sas.append(SA("out", here, peer, spi, tag, primary, key_bits, material, 0))
        for gen in sorted(by_gen):
            spi, material = derive_sa(by_gen[gen], vni, peer, here, key_bits)
            sas.append(SA("in", peer, here, spi, tag, gen, key_bits, material, tag))
        policies.append(Policy("out", here, peer, tag, tag, PRIORITY))
        policies.append(Policy("in", peer, here, tag, tag, PRIORITY))
    _check_spis(sas)
    return Desired(tag, tuple(sas), tuple(policies))


def _check_spis(sas):
    seen = set()
    for sa in sas:
        if (sa.dst, sa.spi) in seen:  # 2**-32 per pair; refuse rather than clobber
            raise ValidationError("two SAs to %s derive SPI 0x%08x: rotate the key"
                                  % (sa.dst, sa.spi), field="keys")
        seen.add((sa.dst, sa.spi))


def describe(obj):
    """One line naming an SA or Policy (never its key), for results and errors."""
    if isinstance(obj, SA):
        return "sa %s %s->%s spi 0x%08x gen %d" % (obj.direction, obj.src, obj.dst,
                                                   obj.spi, obj.generation)
    return "policy %s %s->%s udp/%d mark 0x%08x" % (obj.direction, obj.src, obj.dst,
                                                    VXLAN_PORT, obj.mark)


def mark_rules_nft(vni):
    """The two nftables rules (text, for the firewall backend) that go with the SAs:
    ``output``: in a ``type route hook output priority mangle`` chain (route: a changed
    mark re-runs the route and policy lookup), mark the network's VXLAN;
    ``input``: in a ``type filter hook input`` chain, drop its cleartext VXLAN. Pure."""
    tag = network_tag(vni)
    match = "udp dport %d @th,96,24 %d" % (VXLAN_PORT, vni)
    return {"output": "%s meta mark set 0x%08x" % (match, tag),
            "input": "%s meta ipsec missing drop" % match}


def mark_rules_iptables(vni):
    """The same two rules for iptables-restore (IPv4): ``mangle`` OUTPUT and ``filter``
    INPUT lines (the u32 match reads the VNI at UDP offset 12). Pure."""
    tag = network_tag(vni)
    u32 = "-m u32 --u32 \"0>>22&0x3C@12>>8=%d\"" % vni
    return {"output": "-A OUTPUT -p udp --dport %d %s -j MARK --set-mark 0x%08x"
                      % (VXLAN_PORT, u32, tag),
            "input": "-A INPUT -p udp --dport %d %s -m policy --dir in --pol none -j DROP"
                     % (VXLAN_PORT, u32)}


# -- the kernel side ------------------------------------------------------------------------
def _open(netns):
    if netns is None:
        return nl.XfrmSocket()
    from .namespace import entered
    with entered(netns):
        return nl.XfrmSocket()


def _kernel_error(what, exc):
    reason = nl.MISSING_SUPPORT.get(exc.code) if what.startswith("add sa") else None
    return KernelError("xfrm: %s: %s" % (what, reason or exc.strerror))


def _ours(tag):
    def sa_ours(sa):
        return sa["reqid"] == tag

    def policy_ours(pol):
        return pol["mark"] == (tag, 0xFFFFFFFF) or any(
            t["reqid"] == tag for t in pol["tmpls"])
    return sa_ours, policy_ours


def _sa_matches(want, have):
    return all((have["src"] == want.src, have["mode"] == nl.XFRM_MODE_TRANSPORT,
                have["alg"] == AEAD_ALG, have["icv_bits"] == ICV_BITS,
                have["key_bits"] == want.key_bits + 8 * SALT_BYTES,
                have["dport"] == VXLAN_PORT, have["set_mark"] == want.set_mark,
                have["key"] == want.key))


def _policy_dict(pol):
    return {"dir": nl.XFRM_POLICY_OUT if pol.direction == "out" else nl.XFRM_POLICY_IN,
            "src": pol.src, "dst": pol.dst, "dport": VXLAN_PORT, "mark": pol.mark,
            "priority": pol.priority, "reqid": pol.reqid}


def _policy_matches(want, have):
    if len(have["tmpls"]) != 1:
        return False
    tmpl = have["tmpls"][0]
    return all((have["proto"] == nl.IPPROTO_UDP, have["dport"] == VXLAN_PORT,
                have["priority"] == want["priority"],
                have["action"] == nl.XFRM_POLICY_ALLOW,
                tmpl["reqid"] == want["reqid"], tmpl["src"] == want["src"],
                tmpl["dst"] == want["dst"], tmpl["proto"] == nl.IPPROTO_ESP,
                tmpl["mode"] == nl.XFRM_MODE_TRANSPORT))


def _policy_key(direction, src, dst, mark):
    return (direction, src, dst, mark)


def read_state(tag, netns=None):
    """The kernel's xfrm objects of the network tagged ``tag``: {"sas": [dict(direction?,
    src, dst, spi, reqid, ...)], "policies": [...]} with every key replaced by a Secret.
    Called for drift reports; raises KernelError."""
    sa_ours, policy_ours = _ours(tag)
    try:
        with _open(netns) as sock:
            return {"sas": [sa for sa in sock.sas(Secret) if sa_ours(sa)],
                    "policies": [p for p in sock.policies() if policy_ours(p)]}
    except nl.XfrmNetlinkError as exc:
        raise _kernel_error("read", exc) from None


def apply(desired, netns=None, check_mode=False):
    """Make the host's xfrm objects of network ``desired.tag`` exactly ``desired`` (a
    ``render`` result). Called on each sync of an encrypted network on this host
    (create, join of a host, key rotation step, drift repair); idempotent.

    Order (no packet of the network goes out without an SA the peer accepts): new inbound
    SAs, new outbound SAs, policies (add or replace), then stale policies, stale outbound
    SAs, stale inbound SAs. An SA whose key or attributes differ is deleted and re-added.
    Objects of other tags are never touched. Returns {"changed": bool, "added": [lines],
    "removed": [lines]} (``describe`` lines, no key); in ``check_mode`` it only reads and
    reports. Raises KernelError (naming the object and the errno, or the kernel feature
    that is missing: ESP, AES-GCM), having done the steps before the failing one."""
    tag = desired.tag
    sa_ours, policy_ours = _ours(tag)
    added, removed = [], []
    try:
        with _open(netns) as sock:
            have_sas = {(s["dst"], s["spi"]): s for s in sock.sas(Secret) if sa_ours(s)}
            have_pols = {}
            for pol in sock.policies():
                if policy_ours(pol):
                    direction = "out" if pol["dir"] == nl.XFRM_POLICY_OUT else (
                        "in" if pol["dir"] == nl.XFRM_POLICY_IN else "fwd")
                    have_pols[_policy_key(direction, pol["src"], pol["dst"],
                                          pol["mark"])] = pol
            want_sas = {(sa.dst, sa.spi): sa for sa in desired.sas}
            for direction in ("in", "out"):
                for ident, sa in want_sas.items():
                    if sa.direction != direction:
                        continue
                    have = have_sas.get(ident)
                    if have is not None and _sa_matches(sa, have):
                        continue
                    if have is not None:
                        removed.append(describe(sa) + " (differs)")
                        if not check_mode:
                            _run(sock.delete_sa, "delete " + describe(sa), sa.dst, sa.spi)
                    added.append(describe(sa))
                    if not check_mode:
                        _add_sa(sock, sa)
            wanted_pol_keys = set()
            for pol in desired.policies:
                want = _policy_dict(pol)
                ident = _policy_key(pol.direction, pol.src, pol.dst, (pol.mark, 0xFFFFFFFF))
                wanted_pol_keys.add(ident)
                have = have_pols.get(ident)
                if have is not None and _policy_matches(want, have):
                    continue
                added.append(describe(pol))
                if not check_mode:
                    _run(sock.put_policy, "put " + describe(pol), want)
            for ident, pol in have_pols.items():
                if ident in wanted_pol_keys:
                    continue
                removed.append("policy %s %s->%s mark 0x%08x"
                               % (ident[0], pol["src"], pol["dst"], pol["mark"][0]))
                if not check_mode:
                    _run(sock.delete_policy, "delete policy %d" % pol["index"], pol["dir"],
                         pol["index"], pol["mark"])
            stale = [s for ident, s in have_sas.items() if ident not in want_sas]
            for sa in sorted(stale, key=lambda s: s["set_mark"] != 0):  # outbound first
                removed.append("sa %s->%s spi 0x%08x" % (sa["src"], sa["dst"], sa["spi"]))
                if not check_mode:
                    _run(sock.delete_sa, "delete sa spi 0x%08x" % sa["spi"], sa["dst"],
                         sa["spi"])
    except nl.XfrmNetlinkError as exc:
        raise _kernel_error("dump", exc) from None
    return {"changed": bool(added or removed), "added": added, "removed": removed}


def _run(func, what, *args):
    """One change; what another writer (the host agent and a module run apply the same
    derived objects) did already is no error: EEXIST on an add, ESRCH/ENOENT on a
    delete (an SA's SPI derives from its key: the same (dst, spi) is the same SA)."""
    try:
        func(*args)
    except nl.XfrmNetlinkError as exc:
        done = (errno.EEXIST,) if what.startswith("add") else (
            (errno.ESRCH, errno.ENOENT) if what.startswith("delete") else ())
        if exc.code not in done:
            raise _kernel_error(what, exc) from None


def _add_sa(sock, sa):
    spec = {"src": sa.src, "dst": sa.dst, "spi": sa.spi, "reqid": sa.reqid,
            "dport": VXLAN_PORT, "alg": AEAD_ALG, "key_bits": sa.key_bits + 8 * SALT_BYTES,
            "icv_bits": ICV_BITS, "set_mark": sa.set_mark,
            "replay_window": REPLAY_WINDOW if sa.direction == "in" else 0}
    _run(sock.add_sa, "add " + describe(sa), spec, sa.key.reveal())


def teardown(tag, netns=None):
    """Remove every xfrm policy and SA of the network tagged ``tag``, policies first
    (remove the firewall's mark rules with them). Called when the network leaves this
    host. Best effort: goes on past each failure. Returns (removed: [lines], errors:
    [lines]), lines without keys; raises nothing."""
    sa_ours, policy_ours = _ours(tag)
    removed, errors = [], []
    try:
        sock = _open(netns)
    except (OSError, KernelError) as exc:
        return removed, ["xfrm: open: %s" % (getattr(exc, "strerror", None) or exc)]
    with sock:
        for fetch, ours, delete, name in (
                (sock.policies, policy_ours,
                 lambda p: sock.delete_policy(p["dir"], p["index"], p["mark"]),
                 lambda p: "policy %d %s->%s" % (p["dir"], p["src"], p["dst"])),
                (lambda: sock.sas(Secret), sa_ours,
                 lambda s: sock.delete_sa(s["dst"], s["spi"]),
                 lambda s: "sa %s->%s spi 0x%08x" % (s["src"], s["dst"], s["spi"]))):
            try:
                objs = [o for o in fetch() if ours(o)]
            except nl.XfrmNetlinkError as exc:
                errors.append("xfrm: dump: %s" % exc.strerror)
                continue
            for obj in objs:
                try:
                    delete(obj)
                    removed.append(name(obj))
                except nl.XfrmNetlinkError as exc:
                    if exc.code != errno.ESRCH:  # gone already
                        errors.append("xfrm: delete %s: %s" % (name(obj), exc.strerror))
    return removed, errors
