"""The redirect: 127.0.0.11:53 inside a sandbox goes to the resolver's private ports.

As Docker's resolver: the sockets listen on 127.0.0.11 at ports the kernel picks (bind
to port 0: never one in use, so never a conflict at bind time), and the sandbox's own
netfilter sends what its processes address to 127.0.0.11:53 there, so port 53 of the
sandbox stays free for workloads (``0.0.0.0:53``, ``[::]:53``). Unlike Docker's DNAT
(a conntrack entry per query: ~25% of the resolver's qps in one run here), the rewrite is
stateless: queries' destination port and replies' source port (``dig`` checks it is 53)
are rewritten in the output hook at raw priority, untracked. One ``ip`` table
(``TABLE``) in the sandbox's namespace:

    table ip cnm-dns {
        chain output {
            type filter hook output priority -300; policy accept;
            ip daddr 127.0.0.11 udp dport 53 notrack udp dport set UDP_PORT
            ip daddr 127.0.0.11 tcp dport 53 notrack tcp dport set TCP_PORT
            ip saddr 127.0.0.11 udp sport UDP_PORT notrack udp sport set 53
            ip saddr 127.0.0.11 tcp sport TCP_PORT notrack tcp sport set 53
        }
    }

Only the resolver's sockets use 127.0.0.11 at those ports (they hold them), so the
reply rules touch nothing else. ``install`` runs in a thread that entered the sandbox's
namespace (``listeners``): one atomic batch writing the table through libnftables
(ctypes, a fresh context per namespace), else ``nft -f -``, else ``iptables-restore``
(iptables cannot rewrite ports statelessly: there, Docker's DNAT in nat OUTPUT, whose
replies conntrack translates back to port 53). The rules go with the namespace.
``watch_socket``/``lost``: the resolver hears of every change of the sandbox's ruleset
(a netlink multicast group) and writes its table again when it was deleted or flushed.
"""
import ctypes
import ctypes.util
import errno
import socket
import struct
import subprocess

TABLE = "cnm-dns"
IPT_CHAIN = "CNM-DNS"
ADDRESS = "127.0.0.11"
PORT = 53
TIMEOUT = 10

_lib = []                   # [libnftables or None], loaded once


def nft_ruleset(udp_port, tcp_port, replace=False):
    """The batch writing the table: its chain's rules flushed and written again. In a
    new namespace it deletes nothing: a batch that deletes something (a table, even a
    rule) took 10-20 ms here until the kernel released it, this one ~0.5 ms with its
    sockets. With ``replace``, the whole table deleted and written (for a chain someone
    changed into another hook or priority)."""
    rules = (
        "ip daddr {a} udp dport {p} notrack udp dport set {u}",
        "ip daddr {a} tcp dport {p} notrack tcp dport set {c}",
        "ip saddr {a} udp sport {u} notrack udp sport set {p}",
        "ip saddr {a} tcp sport {c} notrack tcp sport set {p}")
    lines = ["add table ip {t}"]
    if replace:
        lines += ["delete table ip {t}", "add table ip {t}"]
    lines += ["add chain ip {t} output {{ type filter hook output priority -300; "
              "policy accept; }}", "flush chain ip {t} output"]
    lines += ["add rule ip {t} output " + r for r in rules]
    return "\n".join(lines + [""]).format(t=TABLE, a=ADDRESS, p=PORT, u=int(udp_port),
                                          c=int(tcp_port))


def nft_removal():
    return "add table ip {t}\ndelete table ip {t}\n".format(t=TABLE)


def iptables_ruleset(udp_port, tcp_port):
    """``iptables-restore --noflush`` input: the chain is flushed by its declaration."""
    return (
        "*nat\n:{c} - [0:0]\n"
        "-A {c} -d {a}/32 -p udp --dport {p} -j DNAT --to-destination {a}:{u}\n"
        "-A {c} -d {a}/32 -p tcp --dport {p} -j DNAT --to-destination {a}:{t}\n"
        "COMMIT\n").format(c=IPT_CHAIN, a=ADDRESS, p=PORT, u=int(udp_port), t=int(tcp_port))


def _libnftables():
    if not _lib:
        lib = None
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("nftables") or "libnftables.so.1")
            lib.nft_ctx_new.restype = ctypes.c_void_p
            lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
            lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
            lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        except (OSError, AttributeError):
            lib = None
        _lib.append(lib)
    return _lib[0]


def _run_libnftables(text):
    """Returns None when done, an error text, or False without libnftables."""
    lib = _libnftables()
    if lib is None:
        return False
    ctx = lib.nft_ctx_new(0)
    if not ctx:
        return False
    try:
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        if lib.nft_run_cmd_from_buffer(ctx, text.encode()) == 0:
            return None
        err = lib.nft_ctx_get_error_buffer(ctx) or b""
        return "nft: %s" % err.decode("utf-8", "replace").strip()
    finally:
        lib.nft_ctx_free(ctx)


def _run(argv, text):
    """Run a tool (in the calling thread's namespace: children inherit it). Returns
    None when done, an error text, or False when the tool is missing."""
    try:
        proc = subprocess.run(argv, input=text, capture_output=True, text=True,
                              timeout=TIMEOUT, check=False, close_fds=True)
    except FileNotFoundError:
        return False
    except (OSError, subprocess.TimeoutExpired) as e:
        return "%s: %s" % (argv[0], e)
    if proc.returncode == 0:
        return None
    return "%s: %s" % (argv[0], (proc.stderr or proc.stdout).strip())


IPT_JUMP = ["OUTPUT", "-d", ADDRESS + "/32", "-j", IPT_CHAIN]


def _iptables(udp_port, tcp_port):
    err = _run(["iptables-restore", "-w", "--noflush"], iptables_ruleset(udp_port, tcp_port))
    if err is not None:
        return err
    if _run(["iptables", "-w", "-t", "nat", "-C"] + IPT_JUMP, "") is None:
        return None
    return _run(["iptables", "-w", "-t", "nat", "-I"] + IPT_JUMP, "")


def install(udp_port, tcp_port):
    """Write the redirect into the calling thread's namespace. Returns ``(how, None)``
    when done (``how``: "nftables" or "iptables", for ``remove``), else ``(None, why
    not)`` (no tool works)."""
    text = nft_ruleset(udp_port, tcp_port)
    whole = nft_ruleset(udp_port, tcp_port, replace=True)
    errors = []
    for how, attempt in (("nftables", lambda: _run_libnftables(text)),
                         ("nftables", lambda: _run_libnftables(whole)),
                         ("nftables", lambda: _run(["nft", "-f", "-"], whole)),
                         ("iptables", lambda: _iptables(udp_port, tcp_port))):
        err = attempt()
        if err is None:
            return how, None
        if err is not False:
            errors.append(err)
    return None, "; ".join(errors) or "neither libnftables, nft nor iptables-restore found"


def remove(how):
    """Remove the redirect ``install`` wrote ``how`` from the calling thread's namespace
    (best effort)."""
    if how == "iptables":
        _run(["iptables", "-w", "-t", "nat", "-D"] + IPT_JUMP, "")
        _run(["iptables-restore", "-w", "--noflush"],
             "*nat\n:%s - [0:0]\n-X %s\nCOMMIT\n" % (IPT_CHAIN, IPT_CHAIN))
    elif _run_libnftables(nft_removal()) is False:
        _run(["nft", "-f", "-"], nft_removal())


# --- watching the namespace's ruleset: a deleted or flushed redirect is written again
NETLINK_NETFILTER = 12
NFNLGRP_NFTABLES = 7
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NFNL_SUBSYS_NFTABLES = 10
NFPROTO_IPV4 = 2
NEW_MESSAGES = (0, 3, 6)                # NFT_MSG_NEWTABLE, NEWCHAIN, NEWRULE
DEL_MESSAGES = (2, 5, 8)                # NFT_MSG_DELTABLE, DELCHAIN, DELRULE
_HEADER = struct.Struct("=IHHII")       # nlmsghdr
_ATTR = struct.Struct("=HH")            # nlattr


def watch_socket():
    """(In the sandbox's namespace) a netlink socket that receives every change of that
    namespace's nftables ruleset (the NFNLGRP_NFTABLES group: no polling, no cost while
    nothing changes). None when the kernel refuses one."""
    try:
        kind = socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
        sock = socket.socket(socket.AF_NETLINK, kind, NETLINK_NETFILTER)
    except OSError:
        return None
    try:
        sock.bind((0, 0))
        sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES)
    except OSError:
        sock.close()
        return None
    return sock


def _table_of(data, offset, end):
    """The first attribute (type 1: NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_RULE_TABLE)
    of an nf_tables message body, as text."""
    while offset + 4 <= end:
        length, kind = _ATTR.unpack_from(data, offset)
        if length < 4:
            return None
        if kind & 0x3fff == 1:
            return data[offset + 4:offset + length].split(b"\0", 1)[0].decode(
                "ascii", "replace")
        offset += (length + 3) & ~3
    return None


def lost(sock):
    """Read every pending notification of ``sock``: True when the last change to our
    table deleted something of it (or notifications were dropped), False when it was
    (re)written last or not touched. Our own rewrite (delete, then add) ends in adds."""
    verdict = False
    while True:
        try:
            data = sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return verdict
        except OSError as e:
            if e.errno == errno.ENOBUFS:        # overrun: we cannot tell, rewrite
                verdict = True
                continue
            return verdict
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, kind = _HEADER.unpack_from(data, offset)[:2]
            if length < _HEADER.size:
                break
            msg = kind & 0xff
            ours = kind >> 8 == NFNL_SUBSYS_NFTABLES and msg in NEW_MESSAGES + DEL_MESSAGES
            if ours and data[offset + 16] == NFPROTO_IPV4:
                if _table_of(data, offset + 20, offset + length) == TABLE:
                    verdict = msg in DEL_MESSAGES
            offset += (length + 3) & ~3
