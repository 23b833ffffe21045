"""An encrypted overlay between two simulated hosts: their VXLAN travels in ESP.

Two throwaway host namespaces joined by a veth "LAN", each with a VXLAN device (VNI 42)
towards the other and an address on it; the firewall's mark rules of the network
(``xfrm.mark_rules_nft``) in a test-owned nft table; ``xfrm.apply`` on both sides. The
user's view: ping across the VXLAN works, a capture on the LAN sees ESP and no cleartext
VXLAN, a key rotation under a fast ping loses no run of pings as long as 1 s, no key shows
in any result, and a teardown leaves no xfrm object of the network.

Needs a kernel with ESP and AES-GCM (esp4, gcm); the tests skip, saying so, where the
kernel lacks them (this CI's kernel has XFRM but no ESP: run them in the VM).
"""
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from ansible_collections.cnm.core.plugins.module_utils.errors import KernelError
from ansible_collections.cnm.core.plugins.module_utils.netns import xfrm

from harness import connect

VNI = 42
LAN = ("192.168.77.1", "192.168.77.2")
OVERLAY = ("10.42.0.1", "10.42.0.2")
PING_INTERVAL = 0.05


def _esp_missing(host):
    """Why this kernel cannot run ESP with AES-GCM (probed in ``host``), or None."""
    probe = xfrm.render(1, "198.51.100.1", ["198.51.100.2"], [xfrm.generate_key()], 0)
    try:
        xfrm.apply(probe, netns=host.path)
    except KernelError as exc:
        return str(exc)
    finally:
        xfrm.teardown(probe.tag, netns=host.path)
    return None


class Pair:
    """Two hosts, a LAN, one VXLAN (VNI 42) with the network's mark rules on each side."""

    def __init__(self, make_host):
        self.hosts = (make_host("xa"), make_host("xb"))
        reason = _esp_missing(self.hosts[0])
        if reason:
            pytest.skip("kernel without IPsec ESP/AES-GCM: %s" % reason)
        connect(self.hosts[0], self.hosts[1], LAN[0], LAN[1])
        rules = xfrm.mark_rules_nft(VNI)
        for i, host in enumerate(self.hosts):
            vxlan = "vx%d type vxlan id %d local %s remote %s dstport 4789 dev lan0" % (
                VNI, VNI, LAN[i], LAN[1 - i])
            host.run("ip link add %s && ip addr add %s/24 dev vx%d && ip link set vx%d up"
                     % (vxlan, OVERLAY[i], VNI, VNI))
            table = "\n".join((
                "table inet cnmt_xfrm {",
                " chain out {", "  type route hook output priority mangle",
                "  " + rules["output"], " }",
                " chain in {", "  type filter hook input priority filter",
                "  " + rules["input"], " }", "}", ""))
            host.run("nft -f -", input=table)
        self.results = []

    def apply(self, keys, primary, remotes=None):
        """``xfrm.apply`` on both hosts; returns the two results (kept for the key check)."""
        out = []
        for i, host in enumerate(self.hosts):
            want = xfrm.render(VNI, LAN[i], remotes or [LAN[1 - i]], keys, primary)
            out.append(xfrm.apply(want, netns=host.path))
        self.results.extend(out)
        return out

    def xfrm_text(self, host):
        return host.run("ip xfrm state; ip xfrm policy").stdout


@pytest.fixture
def pair(make_host):
    if shutil.which("tcpdump") is None:
        pytest.skip("tcpdump is not installed (make deps)")
    return Pair(make_host)


def _capture(host, fn):
    """Run ``fn`` while tcpdump records ESP and UDP 4789 on ``host``'s LAN port; returns
    (esp packets, cleartext VXLAN packets)."""
    tmp = tempfile.mkdtemp(prefix="cnmt-xfrm-")
    pcap = os.path.join(tmp, "lan.pcap")
    dump = host.popen(["tcpdump", "-i", "lan0", "-n", "-U", "-w", pcap,
                       "esp or udp port 4789"], stderr=subprocess.PIPE, text=True)
    try:
        line = dump.stderr.readline()  # "listening on lan0 ..." once the capture runs
        assert "listening" in line, line
        fn()
        time.sleep(0.3)  # let the last packets reach the capture before it stops
    finally:
        dump.send_signal(signal.SIGINT)
        dump.wait(timeout=10)
    try:
        esp = host.run(["tcpdump", "-r", pcap, "-n", "esp"]).stdout.splitlines()
        clear = host.run(["tcpdump", "-r", pcap, "-n", "udp port 4789"]).stdout.splitlines()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return esp, clear


def _spis(lines):
    return {int(m, 16) for m in re.findall(r"ESP\(spi=(0x[0-9a-f]+)", "\n".join(lines))}


def _assert_no_key_shows(pair, keys, texts=()):
    shown = json.dumps(pair.results) + "".join(texts)
    for key in keys:
        for vni_pair in ((LAN[0], LAN[1]), (LAN[1], LAN[0])):
            spi, material = xfrm.derive_sa(key, VNI, *vni_pair)
            raw = material.reveal()
            assert raw.hex() not in shown and repr(raw) not in shown
        assert key.to_store()["secret"] not in shown


def test_encrypted_vxlan_pings_and_the_lan_sees_only_esp(pair):
    key = xfrm.generate_key(0)
    first = pair.apply([key], 0)
    assert all(r["changed"] for r in first)
    again = pair.apply([key], 0)
    assert not any(r["changed"] for r in again)   # idempotent

    h1, h2 = pair.hosts
    esp, clear = _capture(h1, lambda: h1.ping(OVERLAY[1], count=5))
    assert h1.ping(OVERLAY[1], count=3)
    assert len(esp) >= 5, esp        # 5 requests + 5 replies (a capture may miss one)
    assert clear == [], clear        # no cleartext VXLAN on the LAN
    # both directions, each with the SPI both hosts derived
    assert _spis(esp) == {sa.spi for sa in xfrm.render(VNI, LAN[0], [LAN[1]], [key], 0).sas}
    _assert_no_key_shows(pair, [key])


def test_without_sas_the_networks_vxlan_is_held_back_not_sent_in_cleartext(pair):
    """Without SAs, the mark rule still sends nothing in cleartext: the policy's ESP
    template has no SA, so the kernel holds the packet back (no ping, no leak). Only
    h1 has the policies here (h2 may send its own cleartext: not checked)."""
    key = xfrm.generate_key(0)
    h1, h2 = pair.hosts
    h1.run("nft delete chain inet cnmt_xfrm in")   # only the outbound mark stays
    want = xfrm.render(VNI, LAN[0], [LAN[1]], [key], 0)
    xfrm.apply(want._replace(sas=()), netns=h1.path)
    esp, clear = _capture(h1, lambda: h1.ping(OVERLAY[1], count=2, timeout=1))
    mine = " IP %s." % LAN[0]
    assert [line for line in clear + esp if mine in line] == []


def test_key_rotation_under_a_fast_ping_loses_no_second(pair):
    old, new = xfrm.generate_key(0), xfrm.generate_key(1)
    pair.apply([old], 0)
    h1, h2 = pair.hosts
    assert h1.ping(OVERLAY[1], count=2)
    ping = h1.popen(["ping", "-n", "-i", str(PING_INTERVAL), OVERLAY[1]],
                    stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        pair.apply([old, new], 0)      # 1: everyone accepts both generations
        time.sleep(0.5)
        pair.apply([old, new], 1)      # 2: everyone sends with the new one
        time.sleep(0.5)
        pair.apply([new], 1)           # 3: the old one goes
        time.sleep(1)
    finally:
        ping.send_signal(signal.SIGINT)
        out, _err = ping.communicate(timeout=10)
    seqs = sorted(int(s) for s in re.findall(r"icmp_seq=(\d+)", out))
    assert len(seqs) > 20, out
    longest = max(b - a - 1 for a, b in zip(seqs, seqs[1:]))
    # no run of lost pings as long as 1 s
    assert longest * PING_INTERVAL < 1.0, (longest, out[-2000:])
    state = xfrm.read_state(xfrm.network_tag(VNI), netns=h1.path)
    want = {sa.spi for sa in xfrm.render(VNI, LAN[0], [LAN[1]], [new], 1).sas}
    assert {sa["spi"] for sa in state["sas"]} == want   # only generation 1 is left
    pings = []
    esp, clear = _capture(h1, lambda: pings.append(
        h1.run(["ping", "-n", "-c", "3", "-W", "2", OVERLAY[1]], check=False).stdout))
    assert "3 received" in pings[0], pings
    assert clear == [], clear
    assert _spis(esp) == {sa.spi for sa in xfrm.render(VNI, LAN[0], [LAN[1]], [new], 1).sas}
    _assert_no_key_shows(pair, [old, new], [out])


def test_a_stale_remote_is_removed_and_teardown_leaves_nothing_of_the_network(pair):
    h1, h2 = pair.hosts
    key, other = xfrm.generate_key(0), xfrm.generate_key(0)
    pair.apply([key], 0, remotes=None)
    wide = xfrm.render(VNI, LAN[0], [LAN[1], "192.168.77.9"], [key], 0)
    assert xfrm.apply(wide, netns=h1.path)["changed"]
    assert "192.168.77.9" in pair.xfrm_text(h1)
    narrow = xfrm.render(VNI, LAN[0], [LAN[1]], [key], 0)
    result = xfrm.apply(narrow, netns=h1.path)
    assert any("192.168.77.9" in line for line in result["removed"])
    assert "192.168.77.9" not in pair.xfrm_text(h1)
    assert h1.ping(OVERLAY[1], count=2)

    # another network on the same pair, and someone else's policy: both must survive
    xfrm.apply(xfrm.render(43, LAN[0], [LAN[1]], [other], 0), netns=h1.path)
    h1.run("ip xfrm policy add src 203.0.113.1 dst 203.0.113.2 dir out priority 7")
    tag = "%d" % xfrm.network_tag(VNI)
    for host in (h1, h2):
        removed, errors = xfrm.teardown(xfrm.network_tag(VNI), netns=host.path)
        assert errors == [] and removed
        text = pair.xfrm_text(host)
        assert "0x%08x" % xfrm.network_tag(VNI) not in text and "reqid %s " % tag not in text
    text = pair.xfrm_text(h1)
    assert "0x%08x" % xfrm.network_tag(43) in text and "203.0.113.2" in text
    assert xfrm.teardown(xfrm.network_tag(VNI), netns=h1.path) == ([], [])
    assert not h1.ping(OVERLAY[1], count=1, timeout=1)   # the peer drops cleartext now
    xfrm.teardown(xfrm.network_tag(43), netns=h1.path)
