"""Port 53 of a sandbox belongs to its workload (Docker parity, issue item 8).

The resolver listens on 127.0.0.11 at private ports and the sandbox's own rules (table
``ip cnm-dns``) send 127.0.0.11:53 there, as Docker's resolver does. So a workload binds
``0.0.0.0:53`` and ``[::]:53`` (UDP and TCP) in its sandbox while ``dig @127.0.0.11``
from the same sandbox still gets the resolver's answers, and a query from another
sandbox to the workload's own address reaches the workload. Real kernel, real packets:
sandboxes made by the engine (``HostEngine``), a small stdlib DNS server as workload.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from engine_helpers import HostEngine
from harness import eventually, in_netns
from test_dns_resolver import Dig

from ansible_collections.cnm.core.plugins.module_utils import constants as C
from ansible_collections.cnm.core.plugins.module_utils.dns import service

pytestmark = pytest.mark.integration

WEB, CLIENT = "10.63.0.10", "10.63.0.20"
WEB6 = "fd00:63::10"
WORKLOAD_ANSWER = "192.0.2.53"

# A DNS server answering every query with one A record, WORKLOAD_ANSWER, on 0.0.0.0:53
# and (argv[1] == "6") [::]:53, UDP and TCP; prints "ready" once every socket is bound.
WORKLOAD = r'''
import select, socket, struct, sys
ANSWER = socket.inet_aton(%r)
def reply(q):
    end = 12
    while q[end]:
        end += q[end] + 1
    end += 5
    return (q[:2] + b"\x81\x80" + b"\x00\x01\x00\x01\x00\x00\x00\x00" + q[12:end]
            + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + ANSWER)
socks = []
families = [(socket.AF_INET, "0.0.0.0")]
if sys.argv[1:] == ["6"]:
    families.append((socket.AF_INET6, "::"))
for fam, addr in families:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        s = socket.socket(fam, kind)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((addr, 53))
        if kind == socket.SOCK_STREAM:
            s.listen(16)
        socks.append(s)
print("ready", flush=True)
while True:
    for s in select.select(socks, [], [])[0]:
        if s.type == socket.SOCK_DGRAM:
            q, peer = s.recvfrom(4096)
            s.sendto(reply(q), peer)
        else:
            c = s.accept()[0]
            c.settimeout(5)
            with c, c.makefile("rb") as f:
                try:
                    r = reply(f.read(struct.unpack("!H", f.read(2))[0]))
                    c.sendall(struct.pack("!H", len(r)) + r)
                except (OSError, struct.error):
                    pass
''' % WORKLOAD_ANSWER


def dig(host, sandbox, server, *args):
    cmd = ["dig", "+time=3", "+tries=1", "@" + server] + list(args)
    return Dig(host.sandbox_run(sandbox, cmd, check=False, timeout=10).stdout)


@pytest.fixture(params=["none", "iptables", "nftables"])
def app(request, host):
    """Sandboxes web and client on a dual-stack network, with each host firewall
    backend (the sandbox's own netfilter is separate from the host's)."""
    eng = HostEngine(host, firewall_backend=request.param)
    eng.network(name="app", enable_ipv6=True,
                ipam={"config": [{"subnet": "10.63.0.0/24"}, {"subnet": "fd00:63::/64"}]})
    eng.endpoint(network="app", sandbox="web", ipv4_address=WEB, ipv6_address=WEB6)
    eng.endpoint(network="app", sandbox="client", ipv4_address=CLIENT)
    return eng


@pytest.fixture
def workload(host, app):
    """The workload's DNS server on port 53 of sandbox ``web`` (IPv4 and IPv6), stopped
    by its PID."""
    proc = host.popen([sys.executable, "-c", WORKLOAD, "6"], sandbox="web",
                      stdout=subprocess.PIPE)
    try:
        line = proc.stdout.readline()
        assert line.strip() == b"ready", (line, proc.poll())
        yield proc
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(10)


def redirect_table(host, sandbox):
    proc = host.sandbox_run(sandbox, ["nft", "-j", "list", "table", "ip",
                                      C.DNS_REDIRECT_TABLE], check=False)
    if proc.returncode != 0:
        return None
    return [item["rule"] for item in json.loads(proc.stdout)["nftables"] if "rule" in item]


def test_port_53_is_free_for_the_workload_and_127_0_0_11_still_answers(host, workload):
    for args in ((), ("+tcp",)):
        r = dig(host, "web", "127.0.0.11", "client", *args)
        assert (r.status, r.rdata) == ("NOERROR", [CLIENT]), (args, r.out)
        assert "SERVER: 127.0.0.11#53" in r.out, r.out     # dig checks the reply's source
        r = dig(host, "web", "127.0.0.11", "web", *args)
        assert r.rdata == [WEB], (args, r.out)
        # the workload answers its own address, from its own sandbox and from another
        for sandbox, server in (("web", WEB), ("client", WEB), ("client", WEB6)):
            r = dig(host, sandbox, server, "anything.example", *args)
            assert (r.status, r.rdata) == ("NOERROR", [WORKLOAD_ANSWER]), (
                sandbox, server, args, r.out)
    # the resolver is not on port 53 in the sandbox: the workload is, on both families
    ss = host.sandbox_run("web", ["ss", "-Hlnup"]).stdout
    assert "127.0.0.11:53 " not in ss, ss


def test_the_redirect_is_the_sandboxs_own_rules_and_goes_with_the_sandbox(host, app):
    rules = redirect_table(host, "web")
    assert rules is not None and len(rules) == 4, rules
    assert redirect_table(host, "client") is not None
    assert dig(host, "web", "127.0.0.11", "client").rdata == [CLIENT]
    # leaving the last network with DNS: the redirect goes, port 53 is plain again
    app.endpoint(network="app", sandbox="client", state="absent")
    assert eventually(lambda: redirect_table(host, "client") is None)
    app.sandbox(name="web", state="absent")
    assert not os.path.exists(host.sandbox_path("web"))


def test_a_deleted_or_flushed_redirect_is_written_again_at_once(host, app):
    """The resolver hears of the sandbox's ruleset changes: the next run finds the
    redirect in place, whatever happened to it meanwhile."""
    for cmd in (["nft", "delete", "table", "ip", C.DNS_REDIRECT_TABLE],
                ["nft", "flush", "ruleset"],
                ["nft", "flush", "chain", "ip", C.DNS_REDIRECT_TABLE, "output"],
                ["nft", "delete", "rule", "ip", C.DNS_REDIRECT_TABLE, "output", "handle"]):
        if cmd[-1] == "handle":
            cmd = cmd + [str(redirect_table(host, "web")[0]["handle"])]
        host.sandbox_run("web", cmd)
        assert eventually(lambda: len(redirect_table(host, "web") or ()) == 4), cmd
        for args in ((), ("+tcp",)):
            assert dig(host, "web", "127.0.0.11", "client", *args).rdata == [CLIENT], cmd
    # other changes of the sandbox's ruleset leave it alone
    host.sandbox_run("web", ["nft", "add", "table", "ip", "workload"])
    rules = redirect_table(host, "web")
    host.sandbox_run("web", ["nft", "delete", "table", "ip", "workload"])
    time.sleep(0.6)                                  # three of the resolver's ticks
    assert redirect_table(host, "web") == rules      # (same handles: not rewritten)
    with open(service.resolver_paths(host.run_dir)["log"]) as f:
        assert f.read().count("sandbox web: its redirect of 127.0.0.11:53 was removed") == 4
    assert not app.endpoint(network="app", sandbox="web", ipv4_address=WEB,
                            ipv6_address=WEB6).changed


def test_a_restarted_resolver_redirects_to_its_new_ports(host, app, workload):
    pid = app.dns().data["resolver"]["pid"]
    os.kill(pid, signal.SIGKILL)
    assert eventually(lambda: not service.resolver_status(host.run_dir)["running"])
    app.network(name="app", enable_ipv6=True,
                ipam={"config": [{"subnet": "10.63.0.0/24"}, {"subnet": "fd00:63::/64"}]})
    assert app.dns().data["resolver"]["pid"] != pid
    for args in ((), ("+tcp",)):
        assert dig(host, "web", "127.0.0.11", "client", *args).rdata == [CLIENT], args
        assert dig(host, "client", WEB, "x.example", *args).rdata == [WORKLOAD_ANSWER]


def test_without_nftables_the_redirect_is_iptables_dnat(host, monkeypatch):
    """Neither libnftables nor nft: the redirect is Docker's DNAT through
    iptables-restore; replies still come from port 53, port 53 stays free."""
    from ansible_collections.cnm.core.plugins.module_utils.dns.resolver import redirect
    monkeypatch.setattr(redirect, "_run_libnftables", lambda text: False)
    real_run = redirect._run
    monkeypatch.setattr(redirect, "_run", lambda argv, text: (
        False if argv[0] == "nft" else real_run(argv, text)))
    HostEngine(host).sandbox(name="plain")           # on no network: no resolver there
    path = host.sandbox_path("plain")
    with in_netns(path):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.settimeout(3)
        udp.bind((C.DNS_LISTEN_ADDRESS, 0))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.bind((C.DNS_LISTEN_ADDRESS, 0))
        workload = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        workload.bind(("0.0.0.0", 53))
        assert redirect.install(udp.getsockname()[1], tcp.getsockname()[1]) == (
            "iptables", None)
    try:
        saved = host.sandbox_run("plain", ["iptables-save", "-t", "nat"]).stdout
        assert "-A OUTPUT -d 127.0.0.11/32 -j CNM-DNS" in saved, saved
        assert "--to-destination 127.0.0.11:%d" % udp.getsockname()[1] in saved, saved
        query = dns_query("web")
        with in_netns(path):
            client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            client.settimeout(3)
            client.sendto(query, (C.DNS_LISTEN_ADDRESS, 53))
            data, peer = udp.recvfrom(4096)
            udp.sendto(data, peer)                   # echo: the "answer"
            answer, source = client.recvfrom(4096)
            client.close()
        assert answer == query and source == (C.DNS_LISTEN_ADDRESS, 53)
        with in_netns(path):
            redirect.remove("iptables")
        assert "CNM-DNS" not in host.sandbox_run("plain", ["iptables-save", "-t", "nat"]).stdout
    finally:
        for s in (udp, tcp, workload):
            s.close()


def dns_query(name):
    """A query for ``name`` (A, IN) as bytes."""
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    header = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    return header + labels + b"\x00\x00\x01\x00\x01"
