"""The resolver's redirect of 127.0.0.11:53 (``dns/resolver/redirect.py``): the rules it
writes, and how it reads the sandbox's ruleset notifications (no kernel needed here;
``tests/integration/test_dns_port53.py`` runs it for real)."""
import socket
import struct

from ansible_collections.cnm.core.plugins.module_utils import constants as C
from ansible_collections.cnm.core.plugins.module_utils.dns.resolver import redirect


def test_the_table_is_the_one_the_engine_names_and_is_replaced_whole():
    assert redirect.TABLE == C.DNS_REDIRECT_TABLE
    assert (redirect.ADDRESS, redirect.PORT) == (C.DNS_LISTEN_ADDRESS, C.DNS_PORT)
    text = redirect.nft_ruleset(40001, 40002)
    assert "delete" not in text                    # no RCU grace period on the attach
    assert text.splitlines()[:3] == [
        "add table ip cnm-dns",
        "add chain ip cnm-dns output { type filter hook output priority -300; "
        "policy accept; }",
        "flush chain ip cnm-dns output"]
    rules = [line[len("add rule ip cnm-dns output "):] for line in text.splitlines()
             if line.startswith("add rule ")]
    assert rules == [
        "ip daddr 127.0.0.11 udp dport 53 notrack udp dport set 40001",
        "ip daddr 127.0.0.11 tcp dport 53 notrack tcp dport set 40002",
        "ip saddr 127.0.0.11 udp sport 40001 notrack udp sport set 53",
        "ip saddr 127.0.0.11 tcp sport 40002 notrack tcp sport set 53"]
    whole = redirect.nft_ruleset(40001, 40002, replace=True)
    assert whole.startswith("add table ip cnm-dns\ndelete table ip cnm-dns\n")
    assert whole.endswith(text.split("\n", 1)[1])
    ipt = redirect.iptables_ruleset(40001, 40002)
    assert "-j DNAT --to-destination 127.0.0.11:40001" in ipt
    assert "-j DNAT --to-destination 127.0.0.11:40002" in ipt


def message(msg, table, family=2):
    """An nf_tables notification of type ``msg`` naming ``table`` (attribute 1)."""
    name = table.encode() + b"\0"
    attr = struct.pack("=HH", 4 + len(name), 1) + name
    attr += b"\0" * (-len(attr) % 4)
    body = struct.pack("=BBH", family, 0, 0) + attr
    return struct.pack("=IHHII", 16 + len(body), (10 << 8) | msg, 0, 0, 0) + body


class Socket:
    """Gives ``batches`` one per recv, then would block."""

    def __init__(self, *batches):
        self.batches = list(batches)

    def recv(self, _size):
        if not self.batches:
            raise BlockingIOError()
        batch = self.batches.pop(0)
        if isinstance(batch, OSError):
            raise batch
        return batch


def test_a_deletion_of_our_table_is_lost_and_our_own_rewrite_is_not():
    assert redirect.lost(Socket(message(2, "cnm-dns"))) is True       # delete table
    assert redirect.lost(Socket(message(8, "cnm-dns"))) is True       # delete (flush) rule
    assert redirect.lost(Socket(message(5, "cnm-dns"))) is True       # delete chain
    # our rewrite: delete, then add the table, its chain and rules, in one batch
    rewrite = b"".join(message(m, "cnm-dns") for m in (2, 0, 3, 6, 6, 6, 6))
    assert redirect.lost(Socket(rewrite)) is False
    assert redirect.lost(Socket(message(2, "cnm-dns"), message(0, "cnm-dns"))) is False


def test_other_tables_other_families_and_quiet_sockets_are_not_lost():
    assert redirect.lost(Socket(message(2, "workload"))) is False
    assert redirect.lost(Socket(message(2, "cnm-dns", family=10))) is False   # ip6
    assert redirect.lost(Socket()) is False
    assert redirect.lost(Socket(struct.pack("=IHHII", 16, 3, 0, 0, 0))) is False  # DONE


def test_dropped_notifications_count_as_lost():
    import errno
    assert redirect.lost(Socket(OSError(errno.ENOBUFS, "overrun"))) is True


def test_the_watch_socket_is_a_netfilter_netlink_socket_or_none():
    sock = redirect.watch_socket()
    if sock is None:
        return                                  # (no netlink here: nothing to check)
    try:
        assert sock.family == socket.AF_NETLINK
        assert redirect.lost(sock) is False
    finally:
        sock.close()
