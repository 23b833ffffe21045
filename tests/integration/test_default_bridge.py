"""The default ``bridge`` network, predefined as Docker's docker0: made on first use,
device ``cnm0``, 172.17.0.0/16 unless taken, masquerade and ICC on, no embedded DNS and
no aliases, never removed."""
import pytest

from engine_helpers import HostEngine
from harness import connect, tcp_answer, wait_listening
from ansible_collections.cnm.core.plugins.module_utils.errors import CnmError

H1, H2 = "192.168.79.1", "192.168.79.2"


def test_a_sandbox_joined_without_a_network_is_on_the_default_bridge(make_host):
    h1, h2 = make_host("db1"), make_host("db2")
    connect(h1, h2, H1, H2)
    h1.run(["ip", "route", "add", "default", "via", H2])
    eng = HostEngine(h1, firewall_backend="nftables")
    res = eng.endpoint(sandbox="web")
    assert res.changed
    ep = res.data["endpoint"]
    assert ep["IPAddress"].startswith("172.17.0.") and ep["Gateway"] == "172.17.0.1"
    links = {link["ifname"]: link for link in h1.ip_json("link")}
    assert "cnm0" in links
    net = eng.network_info(name="bridge").data["networks"][0]
    assert net["Options"]["com.docker.network.bridge.default_bridge"] == "true"
    assert net["Options"]["com.docker.network.bridge.name"] == "cnm0"
    assert net["IPAM"]["Config"][0]["Subnet"] == "172.17.0.0/16"
    # the LAN sees the host's address: masqueraded
    server = h2.popen(["python3", "-c", (
        "import socket\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind(('0.0.0.0', 7001)); s.listen(); s.settimeout(30)\n"
        "c, a = s.accept(); c.sendall(('from ' + a[0] + '\\n').encode()); c.close()\n")])
    try:
        wait_listening(h2, 7001)
        assert tcp_answer(h1, H2, 7001, sandbox="web") == "from %s" % H1
    finally:
        server.kill()
        server.wait()
    # no embedded DNS: the host's nameservers, never 127.0.0.11
    resolv = h1.sandbox_run("web", ["cat", "/etc/resolv.conf"]).stdout
    assert "127.0.0.11" not in resolv
    assert not eng.endpoint(sandbox="web").changed


def test_the_default_bridge_cannot_be_removed_and_takes_no_aliases(host):
    eng = HostEngine(host)
    eng.endpoint(sandbox="web")
    with pytest.raises(CnmError) as err:
        eng.network(name="bridge", state="absent")
    assert "pre-defined network and cannot be removed" in str(err.value)
    with pytest.raises(CnmError) as err:
        eng.endpoint(sandbox="db", aliases=["database"])
    assert err.value.field == "aliases"


def test_the_default_bridge_takes_the_next_pool_when_172_17_is_used(host):
    eng = HostEngine(host)
    eng.network(name="first", ipam={"config": [{"subnet": "172.17.0.0/16"}]})
    ep = eng.endpoint(sandbox="web").data["endpoint"]
    assert ep["IPAddress"].startswith("172.18.0.")
