"""Published ports through the engine, observed with packets from a second host.

h1 and h2 are simulated hosts joined by a veth "LAN" (192.168.77.0/24); sandboxes live
on h1. Every test runs with both firewall backends.
"""
import os
import sys

import pytest

from engine_helpers import HostEngine
from harness import (connect, greeters, tcp_answer, tcp_greeter, udp_ask, udp_echo,
                     wait_listening)
from ansible_collections.cnm.core.plugins.module_utils.errors import CnmError

H1, H2 = "192.168.77.1", "192.168.77.2"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(params=["nftables", "iptables"])
def lan(request, make_host):
    h1, h2 = make_host("p1"), make_host("p2")
    connect(h1, h2, H1, H2)
    eng = HostEngine(h1, firewall_backend=request.param)
    eng.network(name="app", ipam={"config": [{"subnet": "10.70.0.0/24"}]})
    eng.endpoint(network="app", sandbox="web", ipv4_address="10.70.0.10")
    servers = [h1.popen(tcp_greeter(80, "web", idle=30, with_client=True), sandbox="web"),
               h1.popen(udp_echo(5300, idle=30), sandbox="web")]
    try:
        yield h1, h2, eng, request.param
    finally:
        for s in servers:
            s.kill()
            s.wait()


reach = tcp_answer  # (host, address, port, sandbox=None): a greeting, or None


def _wait_listening(h1):
    wait_listening(h1, 80, sandbox="web")


def test_tcp_and_udp_published_ports_reach_the_sandbox_from_another_host(lan):
    h1, h2, eng, dummy = lan
    _wait_listening(h1)
    res = eng.port_mapping(sandbox="web", ports=[
        {"container_port": 80, "host_port": 8080},
        {"container_port": 5300, "host_port": 5353, "protocol": "udp"}])
    assert res.changed
    assert res.data["ports"]["80/tcp"] == [{"HostIp": "0.0.0.0", "HostPort": "8080"}]
    out = reach(h2, H1, 8080)
    assert out and out.startswith("hello from web")
    udp = h2.run(udp_ask(H1, 5353), check=False).stdout.strip()
    assert udp == "echo:ping"
    # from h1 itself (output path) and hairpin from the sandbox to its own port
    assert reach(h1, H1, 8080)
    assert reach(h1, H1, 8080, sandbox="web")
    # idempotent
    assert not eng.port_mapping(sandbox="web", ports=[
        {"container_port": 80, "host_port": 8080},
        {"container_port": 5300, "host_port": 5353, "protocol": "udp"}]).changed


def test_loopback_binding_answers_on_the_host_only(lan):
    h1, h2, eng, dummy = lan
    _wait_listening(h1)
    eng.port_mapping(sandbox="web", ports=[{"container_port": 80, "host_port": 8081,
                                            "host_ip": "127.0.0.1"}])
    assert reach(h1, "127.0.0.1", 8081)
    assert reach(h2, H1, 8081) is None


def test_a_taken_host_port_names_the_sandbox_that_holds_it(lan):
    h1, h2, eng, dummy = lan
    eng.endpoint(network="app", sandbox="api")
    eng.port_mapping(sandbox="web", ports=[{"container_port": 80, "host_port": 8080}])
    with pytest.raises(CnmError, match="web"):
        eng.port_mapping(sandbox="api", ports=[{"container_port": 80, "host_port": 8080}])


def test_ephemeral_ports_are_distinct_in_range_stable_and_answer(lan):
    h1, h2, eng, dummy = lan
    low, high = map(int, h1.run("cat /proc/sys/net/ipv4/ip_local_port_range").stdout.split())
    ports = [{"container_port": p} for p in (81, 82, 83)]
    res = eng.port_mapping(sandbox="web", ports=ports)
    chosen = {int(k.split("/")[0]): int(v[0]["HostPort"]) for k, v in res.data["ports"].items()}
    assert sorted(chosen) == [81, 82, 83]
    assert len(set(chosen.values())) == 3 and all(low <= p <= high for p in chosen.values())
    again = eng.port_mapping(sandbox="web", ports=ports)
    assert not again.changed and again.data["ports"] == res.data["ports"]
    # each chosen host port forwards to its own container port, from another host
    with greeters(h1, (81, 82, 83), sandbox="web"):
        for cport, hport in chosen.items():
            assert tcp_answer(h2, H1, hport) == "hello from web %d" % cport


def test_masquerade_isolation_and_teardown(lan):
    h1, h2, eng, backend = lan
    srv = h2.popen(tcp_greeter(7000, "h2", idle=30, with_client=True))
    try:
        from harness import eventually
        assert eventually(lambda: ":7000" in h2.run("ss -ltn").stdout)
        h1.run("ip route replace default via %s" % H2)
        out = reach(h1, H2, 7000, sandbox="web")
        assert out and out.endswith(H1), out  # h2 sees h1's LAN address: masquerade
    finally:
        srv.kill()
        srv.wait()
    eng.network(name="other", ipam={"config": [{"subnet": "10.71.0.0/24"}]})
    eng.endpoint(network="other", sandbox="b")
    assert not h1.ping("10.70.0.10", sandbox="b")
    eng.port_mapping(sandbox="web", ports=[{"container_port": 80, "host_port": 8080}])
    eng.network(name="other", state="absent", force=True)
    eng.network(name="app", state="absent", force=True)
    rules = h1.run("nft list ruleset; iptables-save; ip6tables-save", check=False).stdout
    assert "cnm" not in rules.lower()


def test_internal_network_refuses_ports_and_has_no_egress(lan):
    h1, h2, eng, dummy = lan
    eng.network(name="vault", internal=True, ipam={"config": [{"subnet": "10.72.0.0/24"}]})
    eng.endpoint(network="vault", sandbox="secret")
    h1.run("ip route replace default via %s" % H2)
    assert not h1.ping(H2, sandbox="secret")
    with pytest.raises(CnmError, match="internal"):
        eng.port_mapping(sandbox="secret", ports=[{"container_port": 80, "host_port": 9999}])


def test_icc_off_blocks_the_network_but_not_egress(lan):
    h1, h2, eng, dummy = lan
    eng.network(name="quiet", ipam={"config": [{"subnet": "10.73.0.0/24"}]},
                driver_options={"com.docker.network.bridge.enable_icc": False})
    eng.endpoint(network="quiet", sandbox="q1")
    eng.endpoint(network="quiet", sandbox="q2", ipv4_address="10.73.0.20")
    h1.run("ip route replace default via %s" % H2)
    assert not h1.ping("10.73.0.20", sandbox="q1")
    assert h1.ping(H2, sandbox="q1")


def test_adding_a_port_keeps_the_others_and_never_duplicates_a_host_port(lan):
    h1, h2, eng, dummy = lan
    _wait_listening(h1)
    with greeters(h1, (81,), sandbox="web"):
        eng.port_mapping(sandbox="web", ports=[{"container_port": 80, "host_port": 8080}])
        with pytest.raises(CnmError, match="8080"):
            eng.port_mapping(sandbox="web", ports=[{"container_port": 81,
                                                    "host_port": 8080}])
        assert reach(h2, H1, 8080) == "hello from web %s" % H2, "still port 80"
        res = eng.port_mapping(sandbox="web", ports=[{"container_port": 81,
                                                      "host_port": 8082}])
        assert set(res.data["ports"]) == {"80/tcp", "81/tcp"}
        assert reach(h2, H1, 8080) == "hello from web %s" % H2
        assert reach(h2, H1, 8082) == "hello from web 81"
        res = eng.port_mapping(sandbox="web", state="absent",
                               ports=[{"container_port": 81}])
        assert set(res.data["ports"]) == {"80/tcp"}
        assert reach(h2, H1, 8082) is None, "withdrawn"
        assert reach(h2, H1, 8080) == "hello from web %s" % H2


def test_restore_puts_back_every_rule_after_a_flush(lan):
    h1, h2, eng, backend = lan
    _wait_listening(h1)
    eng.port_mapping(sandbox="web", ports=[{"container_port": 80, "host_port": 8080}])
    assert reach(h2, H1, 8080)
    if backend == "nftables":
        h1.run("nft delete table inet cnm")
    else:
        h1.run("iptables -t nat -F CNM-DNAT")
    assert reach(h2, H1, 8080) is None
    chk = HostEngine(h1, check_mode=True, firewall_backend=backend)
    assert chk.restore_firewall().changed
    proc = h1.run(["env", "CNM_FIREWALL_BACKEND=%s" % backend, sys.executable,
                   os.path.join(REPO, "scripts", "cnm-firewall-restore")], check=False)
    assert proc.returncode == 0, proc.stderr
    assert reach(h2, H1, 8080)
    assert not chk.restore_firewall().changed


def test_published_ports_follow_a_changed_address(lan):
    h1, h2, eng, dummy = lan
    _wait_listening(h1)
    eng.port_mapping(sandbox="web", ports=[{"container_port": 80, "host_port": 8080}])
    assert reach(h2, H1, 8080)
    assert eng.endpoint(network="app", sandbox="web", ipv4_address="10.70.0.11").changed
    assert reach(h2, H1, 8080)


def test_two_tasks_can_publish_one_container_port_on_two_addresses(lan):
    h1, h2, eng, dummy = lan
    eng.port_mapping(sandbox="web", ports=[{"container_port": 80, "host_port": 8080}])
    res = eng.port_mapping(sandbox="web", ports=[{"container_port": 80, "host_port": 8081,
                                                  "host_ip": "127.0.0.1"}])
    assert {b["HostPort"] for b in res.data["ports"]["80/tcp"]} == {"8080", "8081"}
    assert not eng.port_mapping(sandbox="web", ports=[
        {"container_port": 80, "host_port": 8080}]).changed
    assert not eng.port_mapping(sandbox="web", ports=[
        {"container_port": 80, "host_port": 8081, "host_ip": "127.0.0.1"}]).changed
    _wait_listening(h1)
    assert reach(h2, H1, 8080) == "hello from web %s" % H2
    assert reach(h1, "127.0.0.1", 8081), "both bindings answer"
    assert reach(h2, H1, 8081) is None, "127.0.0.1 only"
    # exclusive keeps only what it names
    res = eng.port_mapping(sandbox="web", exclusive=True,
                           ports=[{"container_port": 80, "host_port": 8080}])
    assert [b["HostPort"] for b in res.data["ports"]["80/tcp"]] == ["8080"]
    assert reach(h1, "127.0.0.1", 8081) is None, "the binding not named is gone"
    assert reach(h2, H1, 8080) == "hello from web %s" % H2
