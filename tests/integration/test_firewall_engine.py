"""The controller drives the firewall backends: a bridge network created, checked,
repaired and removed through the engine leaves the expected rules and then none."""
import pytest

from engine_helpers import HostEngine

pytestmark = pytest.mark.integration


def ruleset(host):
    return "\n".join(host.run(cmd, check=False).stdout for cmd in
                     ("nft list ruleset", "iptables-save", "ip6tables-save"))


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_engine_network_life_cycle_with_a_real_firewall(host, backend):
    eng = HostEngine(host, firewall_backend=backend)
    net = eng.network(name="web", ipam={"config": [{"subnet": "10.88.0.0/24"}]},
                      driver_options={"com.docker.network.bridge.enable_icc": "false"})
    short = net.data["network"]["Id"][:12]
    marker = ("fwd-out-%s" if backend == "nftables" else "CNM-FO-%s") % short
    assert marker in ruleset(host)
    eng.endpoint(network="web", sandbox="a")
    eng.endpoint(network="web", sandbox="b")
    assert host.ping("10.88.0.1", sandbox="a")
    assert not host.ping("10.88.0.3", sandbox="a"), "enable_icc=false"
    # rules deleted by hand: the next run reports and repairs them
    if backend == "nftables":
        host.run("nft flush chain inet cnm fwd-out-%s" % short)
        icc_rule = "cnm:no-icc"
    else:
        host.run("iptables -F CNM-FO-{0} && ip6tables -F CNM-FO-{0}".format(short))
        icc_rule = "-A CNM-FO-%s -o br-%s -j DROP" % (short, short)
    assert icc_rule not in ruleset(host)
    again = eng.network(name="web", ipam={"config": [{"subnet": "10.88.0.0/24"}]},
                        driver_options={"com.docker.network.bridge.enable_icc": "false"})
    assert again.changed
    assert icc_rule in ruleset(host)
    assert not host.ping("10.88.0.3", sandbox="a")
    eng.endpoint(network="web", sandbox="a", state="absent")
    eng.endpoint(network="web", sandbox="b", state="absent")
    eng.network(name="web", state="absent")
    after = ruleset(host)
    assert "CNM" not in after and "table inet cnm" not in after
