"""Endpoint bandwidth limits (cnm_endpoint ``bandwidth``) with real packets: a TCP
transfer between a sandbox and its host is measured with and without a limit."""
import json
import socket
import threading
import time

import pytest

from engine_helpers import HostEngine
from harness import in_netns
from snapshot import kernel_state, store_rows
from ansible_collections.cnm.core.plugins.module_utils.errors import ValidationError

SECONDS = 1.5   # each transfer; two directions x (limited, unlimited) stay under ~7 s
PORT = 5201


def _transfer(host, sandbox, gateway, upload):
    """Mbit/s of one TCP transfer between ``sandbox`` and the host (listening on the
    gateway address). ``upload``: sandbox -> host (its egress), else host -> sandbox.
    Both sockets are made in-process after a setns (they stay in their namespace)."""
    with in_netns(host.path):
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((gateway, PORT))
        server.listen(1)
    with in_netns(host.sandbox_path(sandbox)):
        client = socket.socket()
    server.settimeout(5)
    client.settimeout(5)
    received = {}

    def receive(sock):
        count, start = 0, None
        try:
            while True:
                data = sock.recv(1 << 16)
                if not data:
                    break
                if start is None:
                    start = time.monotonic()
                count += len(data)
        finally:
            received["mbit"] = count * 8 / max(time.monotonic() - (start or 0), 1e-6) / 1e6

    def send(sock):
        chunk = b"x" * (1 << 16)
        deadline = time.monotonic() + SECONDS
        try:
            while time.monotonic() < deadline:
                sock.sendall(chunk)
        finally:
            sock.shutdown(socket.SHUT_WR)

    try:
        client.connect((gateway, PORT))
        peer, _addr = server.accept()
        peer.settimeout(5)
        sender, receiver = (client, peer) if upload else (peer, client)
        thread = threading.Thread(target=receive, args=(receiver,))
        thread.start()
        send(sender)
        thread.join(10)
        peer.close()
    finally:
        client.close()
        server.close()
    return received["mbit"]


def _tc(host, args):
    return json.loads(host.run("tc -j " + args).stdout or "[]")


def _setup(host):
    eng = HostEngine(host)
    eng.network(name="bw", ipam={"config": [{"subnet": "10.77.0.0/24"}]})
    return eng


def test_egress_rate_limits_traffic_out_of_the_sandbox(host):
    eng = _setup(host)
    ep = eng.endpoint(network="bw", sandbox="web").data["endpoint"]
    free = _transfer(host, "web", ep["Gateway"], upload=True)
    res = eng.endpoint(network="bw", sandbox="web",
                       bandwidth={"egress_rate": "10mbit", "egress_burst": "32kb"})
    assert res.changed
    assert res.data["endpoint"]["Bandwidth"] == {"egress_rate": 10000000,
                                                 "egress_burst": 32768}
    limited = _transfer(host, "web", ep["Gateway"], upload=True)
    print("egress: unlimited %.1f Mbit/s, limited %.2f Mbit/s" % (free, limited))
    assert limited <= 12, limited
    assert free > 10 * limited, (free, limited)
    # idempotent, and the other direction is untouched
    assert not eng.endpoint(network="bw", sandbox="web",
                            bandwidth={"egress_rate": "10000000", "egress_burst": 32768}
                            ).changed
    assert [q["kind"] for q in _tc(host, "qdisc show dev " + ep["HostInterfaceName"])
            if q.get("root")] == ["noqueue"]
    assert _transfer(host, "web", ep["Gateway"], upload=False) > 50


def test_ingress_rate_limits_traffic_into_the_sandbox(host):
    eng = _setup(host)
    ep = eng.endpoint(network="bw", sandbox="web").data["endpoint"]
    free = _transfer(host, "web", ep["Gateway"], upload=False)
    assert eng.endpoint(network="bw", sandbox="web",
                        bandwidth={"ingress_rate": "10mbit"}).changed
    limited = _transfer(host, "web", ep["Gateway"], upload=False)
    print("ingress: unlimited %.1f Mbit/s, limited %.2f Mbit/s" % (free, limited))
    assert limited <= 12, limited
    assert free > 10 * limited, (free, limited)
    assert _transfer(host, "web", ep["Gateway"], upload=True) > 50


def test_drift_is_reported_in_check_mode_and_repaired_then_removal(host):
    eng = _setup(host)
    limits = {"egress_rate": "10mbit", "ingress_rate": "20mbit", "ingress_burst": "64kb"}
    ep = eng.endpoint(network="bw", sandbox="web", bandwidth=limits).data["endpoint"]
    veth = ep["HostInterfaceName"]
    [root] = [q for q in _tc(host, "qdisc show dev " + veth) if q.get("root")]
    assert root["kind"] == "tbf" and root["options"]["rate"] == 20000000 // 8
    assert not eng.endpoint(network="bw", sandbox="web", bandwidth=limits).changed
    host.run("tc qdisc del dev %s root" % veth)
    host.run("tc qdisc del dev %s ingress" % veth)
    checker = HostEngine(host, check_mode=True)
    check = checker.endpoint(network="bw", sandbox="web", bandwidth=limits)
    assert check.changed
    assert any("ingress limit" in a for a in check.actions), check.actions
    assert any("egress limit" in a for a in check.actions), check.actions
    assert [q["kind"] for q in _tc(host, "qdisc show dev " + veth)] == ["noqueue"]
    assert eng.endpoint(network="bw", sandbox="web", bandwidth=limits).changed
    assert not eng.endpoint(network="bw", sandbox="web", bandwidth=limits).changed
    assert not eng.endpoint(network="bw", sandbox="web").changed  # omitted: not compared
    assert _transfer(host, "web", ep["Gateway"], upload=True) <= 12
    # removed with {}: no tbf, no ingress qdisc, no ifb
    res = eng.endpoint(network="bw", sandbox="web", bandwidth={})
    assert res.changed and res.data["endpoint"]["Bandwidth"] == {}
    assert [q["kind"] for q in _tc(host, "qdisc show dev " + veth)] == ["noqueue"]
    assert not [link for link in host.ip_json("link") if link["ifname"].startswith("cnb")]
    assert not eng.endpoint(network="bw", sandbox="web", bandwidth={}).changed


def _ifbs(host):
    return [link["ifname"] for link in host.ip_json("link")
            if link["ifname"].startswith("cnb")]


def test_detach_removes_the_ifb(host):
    eng = _setup(host)
    eng.sandbox(name="web")  # explicit: it stays, its endpoint is torn down link by link
    eng.endpoint(network="bw", sandbox="web", bandwidth={"egress_rate": "1gbit"})
    assert _ifbs(host)
    eng.endpoint(network="bw", sandbox="web", state="absent")
    assert _ifbs(host) == []


def test_removing_an_implicit_sandbox_removes_the_ifb(host):
    eng = _setup(host)
    eng.endpoint(network="bw", sandbox="web", bandwidth={"egress_rate": "1gbit"})
    eng.endpoint(network="bw", sandbox="web", state="absent")
    assert _ifbs(host) == []


@pytest.mark.parametrize("bandwidth, field", [
    ({"egress_rate": "10 furlongs"}, "bandwidth.egress_rate"),
    ({"ingress_rate": "-5mbit"}, "bandwidth.ingress_rate"),
    ({"egress_rate": "10mbit", "egress_burst": "lots"}, "bandwidth.egress_burst"),
    ({"ingress_burst": "32kb"}, "bandwidth.ingress_burst"),
    ({"egress_rate": "1mbit", "egress_burst": "64mb"}, "bandwidth.egress_burst"),
    ({"egress_rate": "2tbit"}, "bandwidth.egress_rate"),
    ({"egress_rate": True}, "bandwidth.egress_rate"),
    ({"egrss_rate": "1mbit"}, "bandwidth.egrss_rate"),
])
def test_bad_values_fail_naming_the_field_with_nothing_changed(host, bandwidth, field):
    eng = _setup(host)
    eng.endpoint(network="bw", sandbox="web")
    before = (kernel_state(host), store_rows(host))
    for sandbox in ("web", "new"):
        with pytest.raises(ValidationError) as err:
            eng.endpoint(network="bw", sandbox=sandbox, bandwidth=bandwidth)
        assert err.value.field == field, str(err.value)
        assert str(err.value).startswith(field)
    assert (kernel_state(host), store_rows(host)) == before


def test_refused_on_networks_without_a_host_veth(host):
    eng = HostEngine(host)
    with pytest.raises(ValidationError) as err:
        eng.endpoint(network="none", sandbox="iso", bandwidth={"egress_rate": "1mbit"})
    assert err.value.field == "bandwidth"
    assert host.sandboxes() == []
