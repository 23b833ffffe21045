"""Golden files: the exact script each backend renders for a fresh network, one file per
option combination (like libnetwork's iptabler testdata).

Regenerate with ``make golden`` (CNM_UPDATE_GOLDEN=1) and review the diff.
"""
import itertools
import os

import pytest

from ansible_collections.cnm.core.plugins.module_utils.firewall import render_iptables
from ansible_collections.cnm.core.plugins.module_utils.firewall import render_nftables
from ansible_collections.cnm.core.plugins.module_utils.firewall.model import (
    NetworkRules,
    PortMapping,
)

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
NETWORK_ID = "0123456789ab" + "cd" * 26
BRIDGE = "br-0123456789ab"
SUBNET4, SUBNET6 = "172.18.0.0/16", "fd63:6e6d:1::/64"
CIP4, CIP6 = "172.18.0.2", "fd63:6e6d:1::2"


def sample_ports(ipv6):
    """Every kind of mapping: all addresses, loopback, a specific address, tcp/udp/sctp."""
    ports = [PortMapping("tcp", "", 8080, CIP4, 80, 4),
             PortMapping("udp", "127.0.0.1", 5353, CIP4, 53, 4),
             PortMapping("sctp", "192.0.2.10", 9000, CIP4, 9000, 4)]
    if ipv6:
        ports += [PortMapping("tcp", "", 8080, CIP6, 80, 6),
                  PortMapping("tcp", "2001:db8::10", 8443, CIP6, 443, 6)]
    return tuple(sorted(ports))


def combos():
    """(name, NetworkRules) for every valid option combination."""
    out = []
    for icc, internal, ipv6, masquerade, with_ports in itertools.product(
            (False, True), repeat=5):
        if internal and with_ports:
            continue  # an internal network publishes nothing (validate_rules refuses)
        ports = sample_ports(ipv6) if with_ports else ()
        rules = NetworkRules(network_id=NETWORK_ID, bridge=BRIDGE,
                             subnets=(SUBNET4, SUBNET6) if ipv6 else (SUBNET4,),
                             icc=icc, masquerade=masquerade, internal=internal, ports=ports)
        name = "icc=%s,internal=%s,ipv6=%s,masquerade=%s,ports=%d" % (
            str(icc).lower(), str(internal).lower(), str(ipv6).lower(),
            str(masquerade).lower(), len(ports))
        out.append((name, rules))
    return out


COMBOS = combos()


def render(backend, rules):
    if backend == "nftables":
        return render_nftables.render_create(rules)
    return "".join("# ip%stables-restore --noflush\n%s"
                   % ("" if f == 4 else "6", render_iptables.render_create(rules, f))
                   for f in (4, 6))


def compare_golden(backend, name, text):
    path = os.path.join(GOLDEN, backend, name + ".txt")
    if os.environ.get("CNM_UPDATE_GOLDEN") == "1":
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            fh.write(text)
        return
    if not os.path.exists(path):
        pytest.fail("golden file %s is missing: run `make golden` and review it" % path)
    with open(path) as fh:
        expected = fh.read()
    assert text == expected, "rendering differs from %s (make golden to accept)" % path


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
@pytest.mark.parametrize("name,rules", COMBOS, ids=[n for n, dummy in COMBOS])
def test_golden_render_matches_file(backend, name, rules):
    compare_golden(backend, name, render(backend, rules))


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_golden_no_stray_files(backend):
    names = {n + ".txt" for n, dummy in COMBOS}
    present = set(os.listdir(os.path.join(GOLDEN, backend)))
    assert present - names == set(), "golden files without a combination"
