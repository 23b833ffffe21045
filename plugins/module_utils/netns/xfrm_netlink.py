"""NETLINK_XFRM messages: the IPsec security associations (SAs) and policies (SPs) of the
kernel, encoded and decoded with ``struct`` (xfrm(8), include/uapi/linux/xfrm.h).

Only what the overlay's encryption needs: add/delete/dump of transport-mode ESP SAs with an
AEAD key, and add-or-replace/delete/dump of policies with one template and a mark. Key
bytes travel only inside netlink messages (never argv, never a log): decoded keys are
wrapped at once by the caller-supplied ``secret`` type, and errors carry an errno only.
The socket belongs to the network namespace of the thread that creates it (as ``rtnl.py``).
Struct layouts are those of x86_64/arm64 (64-bit, no compat layer).
"""
import errno
import os
import socket
import struct

NETLINK_XFRM = 6
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLM_F_DUMP = 0x100 | 0x200
NLM_F_CREATE, NLM_F_EXCL = 0x400, 0x200

XFRM_MSG_NEWSA, XFRM_MSG_DELSA, XFRM_MSG_GETSA = 0x10, 0x11, 0x12
XFRM_MSG_NEWPOLICY, XFRM_MSG_DELPOLICY, XFRM_MSG_GETPOLICY = 0x13, 0x14, 0x15
XFRM_MSG_UPDPOLICY = 0x19

XFRMA_TMPL, XFRMA_ALG_AEAD, XFRMA_MARK = 5, 18, 21
XFRMA_SET_MARK, XFRMA_SET_MARK_MASK = 29, 30

IPPROTO_ESP, IPPROTO_UDP = 50, 17
XFRM_MODE_TRANSPORT = 0
XFRM_POLICY_IN, XFRM_POLICY_OUT = 0, 1
XFRM_POLICY_ALLOW = 0
XFRM_INF = (1 << 64) - 1
ALL_ALGOS = 0xFFFFFFFF

_HDR = struct.Struct("=IHHII")
# xfrm_selector: daddr, saddr, dport, dport_mask, sport, sport_mask (big endian, raw),
# family, prefixlen_d, prefixlen_s, proto, ifindex, user
_SEL = struct.Struct("=16s16s2s2s2s2sHBBB3xiI")
_LFT_CFG = struct.Struct("=8Q")
_LFT_CUR = struct.Struct("=4Q")
# xfrm_usersa_info: sel, id(daddr, spi, proto), saddr, lft, curlft, stats, seq, reqid,
# family, mode, replay_window, flags
_SA_INFO = struct.Struct("=56s16s4sB3x16s64s32s12sIIHBBB7x")
_SA_ID = struct.Struct("=16s4sHBx")                 # xfrm_usersa_id
_POL_INFO = struct.Struct("=56s64s32sIIBBBB4x")     # xfrm_userpolicy_info
_POL_ID = struct.Struct("=56sIB3x")                 # xfrm_userpolicy_id
# xfrm_user_tmpl: id(daddr, spi, proto), family, saddr, reqid, mode, share, optional,
# aalgos, ealgos, calgos
_TMPL = struct.Struct("=16s4sB3xH2x16sIBBBxIII")
_AEAD = struct.Struct("=64sII")                     # xfrm_algo_aead, then the key
_MARK = struct.Struct("=II")


class XfrmNetlinkError(OSError):
    """The kernel refused an xfrm request; ``code`` is the errno. Never carries key bytes."""

    def __init__(self, code, message=None):
        super().__init__(code, message or os.strerror(code))
        self.code = code


def _attr(kind, data):
    length = 4 + len(data)
    return struct.pack("=HH", length, kind) + data + b"\0" * ((4 - length % 4) % 4)


def _attrs(data, offset):
    """[(type, bytes)] of the attributes in ``data[offset:]`` (repeats kept)."""
    out = []
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        out.append((kind & 0x7FFF, data[offset + 4:offset + length]))
        offset += (length + 3) & ~3
    return out


def _family(address):
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _addr(address):
    """``address`` as an xfrm_address_t (16 bytes, IPv4 in the first 4)."""
    return socket.inet_pton(_family(address), address).ljust(16, b"\0")


def _text(raw, family):
    return socket.inet_ntop(family, raw[:4] if family == socket.AF_INET else raw)


def selector(src, dst, proto, dport):
    """A packed xfrm_selector for ``src``/host -> ``dst``/host, ``proto``, ``dport``."""
    fam = _family(src)
    bits = 32 if fam == socket.AF_INET else 128
    port = struct.pack(">H", dport)
    mask = b"\xff\xff" if dport else b"\0\0"
    return _SEL.pack(_addr(dst), _addr(src), port, mask, b"\0\0", b"\0\0", fam, bits, bits,
                     proto, 0, 0)


def _parse_selector(raw):
    (daddr, saddr, dport, _dmask, _sport, _smask, fam, _pd, _ps, proto, _ifi,
     _user) = _SEL.unpack(raw)
    if fam not in (socket.AF_INET, socket.AF_INET6):
        return {"src": None, "dst": None, "proto": proto, "dport": 0}
    return {"src": _text(saddr, fam), "dst": _text(daddr, fam), "proto": proto,
            "dport": struct.unpack(">H", dport)[0]}


def _lifetime():
    # byte/packet limits infinite, time limits 0 (= none), as ip-xfrm's defaults
    return _LFT_CFG.pack(XFRM_INF, XFRM_INF, XFRM_INF, XFRM_INF, 0, 0, 0, 0)


class XfrmSocket:
    """One NETLINK_XFRM socket. Not thread-safe; one per namespace per operation."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  NETLINK_XFRM)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def request(self, msg_type, flags, payload, dump=False):
        """Send one request; return [(type, body)] of the replies (raises XfrmNetlinkError)."""
        self.seq += 1
        flags |= NLM_F_REQUEST | (NLM_F_DUMP if dump else NLM_F_ACK)
        header = _HDR.pack(_HDR.size + len(payload), msg_type, flags, self.seq, 0)
        self.sock.send(header + payload)
        replies = []
        while True:
            data = self.sock.recv(1 << 17)
            offset = 0
            while offset + _HDR.size <= len(data):
                length, kind, _flags, seq, _pid = _HDR.unpack_from(data, offset)
                body = data[offset + _HDR.size:offset + length]
                offset += (length + 3) & ~3
                if seq != self.seq:
                    continue
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", body)[0]
                    if code:
                        raise XfrmNetlinkError(code)
                    return replies
                if kind == NLMSG_DONE:
                    return replies
                replies.append((kind, body))

    # -- security associations ----------------------------------------------------------
    def add_sa(self, sa, key_bytes):
        """XFRM_MSG_NEWSA (exclusive) of a transport-mode ESP SA ``sa`` (dict: src, dst,
        spi, reqid, alg, key_bits, icv_bits, replay_window, set_mark) keyed ``key_bytes``.
        EEXIST when (dst, spi) exists already."""
        fam = _family(sa["src"])
        info = _SA_INFO.pack(
            selector(sa["src"], sa["dst"], IPPROTO_UDP, sa["dport"]),
            _addr(sa["dst"]), struct.pack(">I", sa["spi"]), IPPROTO_ESP, _addr(sa["src"]),
            _lifetime(), b"\0" * _LFT_CUR.size, b"\0" * 12, 0, sa["reqid"], fam,
            XFRM_MODE_TRANSPORT, sa["replay_window"], 0)
        aead = _AEAD.pack(sa["alg"].encode(), sa["key_bits"], sa["icv_bits"]) + key_bytes
        attrs = _attr(XFRMA_ALG_AEAD, aead)
        if sa.get("set_mark"):
            attrs += _attr(XFRMA_SET_MARK, struct.pack("=I", sa["set_mark"]))
            attrs += _attr(XFRMA_SET_MARK_MASK, struct.pack("=I", 0xFFFFFFFF))
        self.request(XFRM_MSG_NEWSA, NLM_F_CREATE | NLM_F_EXCL, info + attrs)

    def delete_sa(self, dst, spi):
        """XFRM_MSG_DELSA of the ESP SA (``dst``, ``spi``); ESRCH when there is none."""
        self.request(XFRM_MSG_DELSA, 0, _SA_ID.pack(_addr(dst), struct.pack(">I", spi),
                                                    _family(dst), IPPROTO_ESP))

    def sas(self, secret):
        """Every ESP SA of the namespace: dicts (src, dst, spi, reqid, mode, dport, alg,
        key_bits, icv_bits, replay_window, set_mark, key) where ``key`` is
        ``secret(bytes)`` (the caller's wrapper that hides it) or None."""
        out = []
        for kind, body in self.request(XFRM_MSG_GETSA, 0, b"", dump=True):
            if kind != XFRM_MSG_NEWSA or len(body) < _SA_INFO.size:
                continue
            (sel, daddr, spi, proto, saddr, _lft, _cur, _stats, _seq, reqid, fam, mode,
             replay, _flags) = _SA_INFO.unpack_from(body)
            if proto != IPPROTO_ESP or fam not in (socket.AF_INET, socket.AF_INET6):
                continue
            sa = {"src": _text(saddr, fam), "dst": _text(daddr, fam),
                  "spi": struct.unpack(">I", spi)[0], "reqid": reqid, "mode": mode,
                  "dport": _parse_selector(sel)["dport"], "replay_window": replay,
                  "alg": None, "key_bits": 0, "icv_bits": 0, "set_mark": 0, "key": None}
            for akind, value in _attrs(body, _SA_INFO.size):
                if akind == XFRMA_ALG_AEAD and len(value) >= _AEAD.size:
                    name, bits, icv = _AEAD.unpack_from(value)
                    sa.update(alg=name.rstrip(b"\0").decode(), key_bits=bits, icv_bits=icv,
                              key=secret(value[_AEAD.size:_AEAD.size + (bits + 7) // 8]))
                elif akind == XFRMA_SET_MARK:
                    sa["set_mark"] = struct.unpack("=I", value[:4])[0]
            out.append(sa)
        return out

    # -- policies -----------------------------------------------------------------------
    def put_policy(self, pol):
        """XFRM_MSG_UPDPOLICY (add or replace) of ``pol`` (dict: dir, src, dst, dport,
        mark, priority, reqid): packets of the selector must use an ESP transport SA of
        ``reqid`` between the same two addresses."""
        fam = _family(pol["src"])
        info = _POL_INFO.pack(selector(pol["src"], pol["dst"], IPPROTO_UDP, pol["dport"]),
                              _lifetime(), b"\0" * _LFT_CUR.size, pol["priority"], 0,
                              pol["dir"], XFRM_POLICY_ALLOW, 0, 0)
        tmpl = _TMPL.pack(_addr(pol["dst"]), b"\0" * 4, IPPROTO_ESP, fam, _addr(pol["src"]),
                          pol["reqid"], XFRM_MODE_TRANSPORT, 0, 0, ALL_ALGOS, ALL_ALGOS,
                          ALL_ALGOS)
        attrs = _attr(XFRMA_TMPL, tmpl)
        attrs += _attr(XFRMA_MARK, _MARK.pack(pol["mark"], 0xFFFFFFFF))
        self.request(XFRM_MSG_UPDPOLICY, 0, info + attrs)

    def delete_policy(self, direction, index, mark):
        """XFRM_MSG_DELPOLICY by the kernel's policy ``index`` (from ``policies``)."""
        attrs = _attr(XFRMA_MARK, _MARK.pack(mark[0], mark[1]))
        self.request(XFRM_MSG_DELPOLICY, 0,
                     _POL_ID.pack(b"\0" * _SEL.size, index, direction) + attrs)

    def policies(self):
        """Every main-type policy of the namespace: dicts (dir, src, dst, proto, dport,
        priority, index, action, mark (value, mask), tmpls: [dict(src, dst, proto, reqid,
        mode)])."""
        out = []
        for kind, body in self.request(XFRM_MSG_GETPOLICY, 0, b"", dump=True):
            if kind != XFRM_MSG_NEWPOLICY or len(body) < _POL_INFO.size:
                continue
            (sel, _lft, _cur, priority, index, direction, action, _flags,
             _share) = _POL_INFO.unpack_from(body)
            pol = dict(_parse_selector(sel), dir=direction, priority=priority, index=index,
                       action=action, mark=(0, 0), tmpls=[])
            for akind, value in _attrs(body, _POL_INFO.size):
                if akind == XFRMA_MARK:
                    pol["mark"] = _MARK.unpack_from(value)
                elif akind == XFRMA_TMPL:
                    for off in range(0, len(value) - _TMPL.size + 1, _TMPL.size):
                        (daddr, _spi, proto, fam, saddr, reqid, mode, _share2, _opt,
                         _aa, _ea, _ca) = _TMPL.unpack_from(value, off)
                        known = fam in (socket.AF_INET, socket.AF_INET6)
                        pol["tmpls"].append({
                            "src": _text(saddr, fam) if known else None,
                            "dst": _text(daddr, fam) if known else None,
                            "proto": proto, "reqid": reqid, "mode": mode})
            out.append(pol)
        return out


_NO_ESP = "the kernel has no ESP (CONFIG_INET_ESP or module esp4; esp6 for IPv6)"
_NO_GCM = "the kernel has no AEAD rfc4106(gcm(aes)) (CONFIG_CRYPTO_GCM or module gcm)"
MISSING_SUPPORT = {errno.EPROTONOSUPPORT: _NO_ESP, errno.ENOSYS: _NO_GCM, errno.ENOENT: _NO_GCM}
