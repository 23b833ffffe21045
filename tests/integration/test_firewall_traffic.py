"""Firewall backends against the real kernel: packets between simulated hosts.

Each test builds, inside throwaway namespaces, a host ``h1`` (the one whose firewall is
under test) and a LAN neighbour ``h2`` joined by a veth "cable", bridges on h1 and
"sandboxes" (more namespaces) plugged into them by hand with ``ip``; then calls the
backend inside h1 and watches TCP/UDP/ICMP succeed or fail. Every wait is bounded;
everything is removed at the end (fixtures with finally).
"""
import hashlib
import ipaddress
import subprocess
import time

import pytest

from engine_helpers import HostEngine
from harness import connect, greeters, in_netns, suffix, tcp_answer

from ansible_collections.cnm.core.plugins.module_utils.firewall import get_backend
from ansible_collections.cnm.core.plugins.module_utils.firewall.model import (
    NetworkRules,
    PortMapping,
)

pytestmark = pytest.mark.integration

BACKENDS = ["nftables", "iptables"]
H1_LAN, H2_LAN = "10.77.0.1", "10.77.0.2"
H1_LAN6, H2_LAN6 = "fd77::1", "fd77::2"
WAIT = 5.0          # seconds: upper bound for a server to start listening
CONNECT = 2         # seconds: client connect/answer timeout (failures take this long)


def _sh(argv, check=True):
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=check)


def _address(text):
    """socat prints IPv6 peers as [fd77:0000:...]: canonical form, or the text as is."""
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        return text


def _no_dad(host):
    """Fresh links would spend their first seconds in IPv6 duplicate address detection
    (tentative link-local addresses), losing the first packets of a test."""
    host.run("sysctl -qw net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.all.accept_dad=0")


class Net:
    """A bridge network on h1, its rules, and the sandboxes plugged into it."""

    def __init__(self, lab, key, subnet4, subnet6=None, **opts):
        self.lab = lab
        self.id = hashlib.sha256(("%s-%s" % (key, lab.tag)).encode()).hexdigest()
        self.bridge = "br-" + self.id[:12]
        self.prefix4 = subnet4.rsplit(".", 1)[0]          # "172.30.1"
        self.subnet4, self.subnet6 = subnet4, subnet6
        self.gateway4 = self.prefix4 + ".1"
        self.gateway6 = subnet6.split("/")[0] + "1" if subnet6 else None
        self.opts = opts
        self.ports = ()
        self.applied = None
        cmd = ["ip link add %s type bridge" % self.bridge,
               "ip addr add %s/24 dev %s" % (self.gateway4, self.bridge)]
        if subnet6:
            cmd.append("ip -6 addr add %s/64 dev %s nodad" % (self.gateway6, self.bridge))
        cmd.append("ip link set %s up" % self.bridge)
        lab.h1.run(" && ".join(cmd))

    def rules(self):
        subnets = (self.subnet4,) + ((self.subnet6,) if self.subnet6 else ())
        return NetworkRules(network_id=self.id, bridge=self.bridge, subnets=subnets,
                            ports=tuple(sorted(self.ports)), **self.opts)

    def publish(self, *mappings):
        """Add mappings ("tcp", host_ip, host_port, sandbox, container_port[, family])."""
        new = list(self.ports)
        for proto, host_ip, hport, sb, cport, *family in mappings:
            family = family[0] if family else 4
            cip = sb.ip4 if family == 4 else sb.ip6
            new.append(PortMapping(proto, host_ip, hport, cip, cport, family))
        self.ports = tuple(sorted(new))
        return self.lab.apply(self)

    def unpublish(self, host_port, protocol="tcp"):
        self.ports = tuple(p for p in self.ports
                           if not (p.host_port == host_port and p.protocol == protocol))
        return self.lab.apply(self)


class Sandbox:
    def __init__(self, host, ip4, ip6):
        self.host, self.ip4, self.ip6 = host, ip4, ip6

    def run(self, cmd, check=False, timeout=30):
        return self.host.run(cmd, check=check, timeout=timeout)


class Lab:
    """h1 (firewall under test) + h2 (LAN neighbour) + bridges and sandboxes on h1."""

    def __init__(self, make_host, backend):
        self.make_host = make_host
        self.tag = suffix()
        self.h1 = make_host("fw")
        self.h2 = make_host("lan")
        self.procs = []
        for host in (self.h1, self.h2):
            _no_dad(host)
        connect(self.h1, self.h2, H1_LAN, H2_LAN)
        self.h1.run("ip -6 addr add %s/64 dev lan0 nodad" % H1_LAN6)
        self.h2.run("ip -6 addr add %s/64 dev lan0 nodad" % H2_LAN6)
        self.h1.run("sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1")
        self.backend_name = backend
        self.backend = get_backend(backend)
        self.nets = []

    # -- building ---------------------------------------------------------------------
    def network(self, key, subnet4, subnet6=None, apply=True, **opts):
        net = Net(self, key, subnet4, subnet6, **opts)
        self.nets.append(net)
        if apply:
            self.apply(net)
        return net

    def sandbox(self, net, host_part):
        sb_host = self.make_host("sb")
        _no_dad(sb_host)
        hv = "veth" + suffix(7)
        ip4 = "%s.%d" % (net.prefix4, host_part)
        ip6 = "%s%x" % (net.subnet6.split("/")[0], host_part) if net.subnet6 else None
        _sh(["ip", "link", "add", hv, "netns", self.h1.name, "type", "veth", "peer",
             "name", "eth0", "netns", sb_host.name], check=True)
        self.h1.run("ip link set %s master %s && ip link set %s up && "
                    "bridge link set dev %s hairpin on" % (hv, net.bridge, hv, hv))
        cmd = ["ip addr add %s/24 dev eth0" % ip4, "ip link set eth0 up",
               "ip route add default via %s" % net.gateway4]
        if ip6:
            cmd += ["ip -6 addr add %s/64 dev eth0 nodad" % ip6,
                    "ip -6 route add default via %s" % net.gateway6]
        sb_host.run(" && ".join(cmd))
        return Sandbox(sb_host, ip4, ip6)

    def apply(self, net, remove=False):
        new = None if remove else net.rules()
        with in_netns(self.h1.path):
            self.backend.apply(net.applied, new)
        net.applied = new
        return new

    def remove(self, net):
        self.apply(net, remove=True)

    def in_h1(self, fn, *args):
        with in_netns(self.h1.path):
            return fn(*args)

    # -- traffic ----------------------------------------------------------------------
    def serve(self, host, port, proto="tcp", family=4):
        """Start a server on ``host`` (SimHost) answering each client with the client's
        address as the server sees it."""
        kind = {("tcp", 4): "TCP4-LISTEN", ("tcp", 6): "TCP6-LISTEN",
                ("udp", 4): "UDP4-RECVFROM", ("udp", 6): "UDP6-RECVFROM"}[(proto, family)]
        opts = ",fork,reuseaddr" + (",ipv6only=1" if family == 6 else "")
        proc = host.popen(["socat", "%s:%d%s" % (kind, port, opts),
                           "SYSTEM:echo $SOCAT_PEERADDR"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        flag = "-Hltn" if proto == "tcp" else "-Hlun"
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            out = host.run(["ss", flag, "sport", "= :%d" % port], check=False).stdout
            if out.strip():
                return
            time.sleep(0.05)
        raise AssertionError("server on port %d did not start" % port)

    def talk(self, host, address, port, proto="tcp", tries=3):
        """Connect from ``host``; return what the server answered ("" = nothing).
        UDP sends again up to ``tries`` times, as a UDP client would (TCP retries its
        SYN by itself); pass ``tries=1`` where no answer is expected."""
        family6 = ":" in address
        if proto == "tcp":
            target = "TCP%s:%s:%d,connect-timeout=%d" % (
                "6" if family6 else "4", "[%s]" % address if family6 else address, port,
                CONNECT)
            proc = host.run(["socat", "-T%d" % CONNECT, "-", target], check=False,
                            timeout=CONNECT + 10, input="")
        else:
            target = "UDP%s:%s:%d" % ("6" if family6 else "4",
                                      "[%s]" % address if family6 else address, port)
            for dummy in range(tries):
                proc = host.run(["socat", "-T%d" % CONNECT, "-", target], check=False,
                                timeout=CONNECT + 10, input="ping\n")
                if proc.stdout.strip():
                    break
        return _address(proc.stdout.strip())

    def ping(self, host, address):
        return host.run(["ping", "-n", "-q", "-c", "1", "-W", "1", address],
                        check=False).returncode == 0

    def close(self):
        for proc in self.procs:
            proc.kill()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


# -- published ports -------------------------------------------------------------------
def test_published_tcp_port_reaches_sandbox_from_another_host(lab):
    net = lab.network("a", "172.30.1.0/24")
    s1 = lab.sandbox(net, 2)
    lab.serve(s1.host, 80)
    assert lab.talk(lab.h2, H1_LAN, 8080) == "", "nothing published yet"
    net.publish(("tcp", "", 8080, s1, 80))
    # DNAT only: the sandbox sees the real client
    assert lab.talk(lab.h2, H1_LAN, 8080) == H2_LAN


def test_published_udp_port_answers(lab):
    net = lab.network("a", "172.30.1.0/24")
    s1 = lab.sandbox(net, 2)
    lab.serve(s1.host, 53, proto="udp")
    net.publish(("udp", "", 5353, s1, 53))
    assert lab.talk(lab.h2, H1_LAN, 5353, proto="udp") == H2_LAN


def test_port_range_maps_each_port(lab):
    """A range published through the engine (``80-82`` on ``8080-8082``): each host
    port of it reaches its own container port, from another host, and no port
    beyond it does."""
    eng = HostEngine(lab.h1, firewall_backend=lab.backend_name)
    eng.network(name="app", ipam={"config": [{"subnet": "172.30.1.0/24"}]})
    eng.endpoint(network="app", sandbox="web")
    with greeters(lab.h1, (80, 81, 82, 83), sandbox="web"):
        res = eng.port_mapping(sandbox="web", ports=[
            {"container_port": "80-82", "host_port": "8080-8082"}])
        for port in (80, 81, 82):
            assert tcp_answer(lab.h2, H1_LAN, 8000 + port) == "hello from web %d" % port
        assert tcp_answer(lab.h2, H1_LAN, 8083) is None, "the range ends at 8082"
    assert res.data["ports"] == {"%d/tcp" % port: [{"HostIp": "0.0.0.0",
                                                    "HostPort": str(8000 + port)}]
                                 for port in (80, 81, 82)}


def test_host_reaches_published_port_through_its_own_address(lab):
    net = lab.network("a", "172.30.1.0/24")
    s1 = lab.sandbox(net, 2)
    lab.serve(s1.host, 80)
    net.publish(("tcp", "", 8080, s1, 80))
    assert lab.talk(lab.h1, H1_LAN, 8080) == H1_LAN


def test_loopback_binding_answers_the_host_but_not_the_lan(lab):
    net = lab.network("a", "172.30.1.0/24")
    s1 = lab.sandbox(net, 2)
    lab.serve(s1.host, 80)
    net.publish(("tcp", "127.0.0.1", 8081, s1, 80))
    # masqueraded to the bridge gateway: 127.0.0.1 cannot be answered from the sandbox
    assert lab.talk(lab.h1, "127.0.0.1", 8081) == net.gateway4
    assert lab.talk(lab.h2, H1_LAN, 8081) == ""
    assert lab.talk(lab.h1, H1_LAN, 8081) == ""


def test_specific_host_ip_binding_only_answers_on_that_address(lab):
    net = lab.network("a", "172.30.1.0/24")
    s1 = lab.sandbox(net, 2)
    lab.serve(s1.host, 80)
    lab.h1.run("ip addr add 10.77.0.11/24 dev lan0")
    net.publish(("tcp", "10.77.0.11", 8080, s1, 80))
    assert lab.talk(lab.h2, "10.77.0.11", 8080) == H2_LAN
    assert lab.talk(lab.h2, H1_LAN, 8080) == ""


def test_sandbox_reaches_its_own_published_port_by_hairpin(lab):
    net = lab.network("a", "172.30.1.0/24")
    s1 = lab.sandbox(net, 2)
    lab.serve(s1.host, 80)
    net.publish(("tcp", "", 8080, s1, 80))
    # masqueraded, or the reply would bypass the host's NAT
    assert lab.talk(s1.host, H1_LAN, 8080) == net.gateway4


def test_published_port_of_another_network_is_reachable_through_the_host(lab):
    a = lab.network("a", "172.30.1.0/24")
    b = lab.network("b", "172.30.2.0/24")
    s1, s3 = lab.sandbox(a, 2), lab.sandbox(b, 2)
    lab.serve(s1.host, 80)
    a.publish(("tcp", "", 8080, s1, 80))
    # network b's traffic leaving by another interface is masqueraded, as Docker does
    assert lab.talk(s3.host, H1_LAN, 8080) == a.gateway4
    assert not lab.ping(s3.host, s1.ip4)


def test_ipv6_mapping_when_the_network_has_ipv6(lab):
    net = lab.network("a", "172.30.1.0/24", "fd30:1::/64")
    s1 = lab.sandbox(net, 2)
    lab.serve(s1.host, 80, family=6)
    net.publish(("tcp", "", 8080, s1, 80, 6))
    assert lab.talk(lab.h2, H1_LAN6, 8080) == H2_LAN6
    assert lab.talk(lab.h2, H1_LAN, 8080) == "", "no IPv4 mapping was asked for"


def test_direct_access_to_sandbox_addresses_from_outside_is_dropped(lab):
    net = lab.network("a", "172.30.1.0/24")
    s1 = lab.sandbox(net, 2)
    lab.serve(s1.host, 80)
    net.publish(("tcp", "", 8080, s1, 80))
    lab.h2.run("ip route add 172.30.1.0/24 via %s" % H1_LAN)
    assert lab.talk(lab.h2, s1.ip4, 80) == ""
    assert lab.talk(lab.h2, H1_LAN, 8080) == H2_LAN
    # the raw-table drop comes before any filter: even when the user's own chain
    # accepts everything from the LAN (ending the forward filter), direct access stays
    # dropped and only the published port answers
    if lab.backend_name == "nftables":
        lab.h1.run("nft add rule inet cnm CNM-USER iifname lan0 accept")
    else:
        lab.h1.run("iptables -A CNM-USER -i lan0 -j ACCEPT")
    assert lab.talk(lab.h2, s1.ip4, 80) == ""
    assert not lab.ping(lab.h2, s1.ip4)
    assert lab.talk(lab.h2, H1_LAN, 8080) == H2_LAN


def test_removing_a_mapping_stops_it_and_flushes_its_conntrack_entries(lab):
    net = lab.network("a", "172.30.1.0/24")
    s1 = lab.sandbox(net, 2)
    lab.serve(s1.host, 53, proto="udp")
    net.publish(("udp", "", 5353, s1, 53))
    # a fixed source port: the same conntrack entry would carry the next datagram
    for dummy in range(3):
        proc = lab.h2.run(["socat", "-T2", "-", "UDP4:%s:5353,sourceport=40001" % H1_LAN],
                          check=False, input="x\n", timeout=15)
        if proc.stdout.strip():
            break
    assert proc.stdout.strip() == H2_LAN

    def entries():
        out = lab.h1.run(["conntrack", "-L", "-p", "udp", "--orig-port-dst", "5353"],
                         check=False)
        return [line for line in out.stdout.splitlines() if "dport=5353" in line]

    assert entries()
    net.unpublish(5353, "udp")
    assert entries() == []
    assert lab.talk(lab.h2, H1_LAN, 5353, proto="udp", tries=1) == ""


# -- network policy ----------------------------------------------------------------
def test_masquerade_shows_the_host_address_to_the_lan(lab):
    net = lab.network("a", "172.30.1.0/24")
    s1 = lab.sandbox(net, 2)
    lab.serve(lab.h2, 7000)
    assert lab.talk(s1.host, H2_LAN, 7000) == H1_LAN


def test_without_masquerade_the_sandbox_address_leaves_the_host(lab):
    net = lab.network("a", "172.30.1.0/24", masquerade=False)
    s1 = lab.sandbox(net, 2)
    lab.serve(lab.h2, 7000)
    lab.h2.run("ip route add 172.30.1.0/24 via %s" % H1_LAN)
    assert lab.talk(s1.host, H2_LAN, 7000) == s1.ip4


def test_sandboxes_on_different_bridge_networks_are_isolated(lab):
    a = lab.network("a", "172.30.1.0/24")
    b = lab.network("b", "172.30.2.0/24")
    s1, s3 = lab.sandbox(a, 2), lab.sandbox(b, 2)
    assert lab.ping(s1.host, H2_LAN) and lab.ping(s3.host, H2_LAN)
    assert not lab.ping(s1.host, s3.ip4)
    assert not lab.ping(s3.host, s1.ip4)


def test_icc_off_blocks_sandbox_to_sandbox_but_not_egress(lab):
    net = lab.network("c", "172.30.3.0/24", icc=False)
    s4, s5 = lab.sandbox(net, 2), lab.sandbox(net, 3)
    assert not lab.ping(s4.host, s5.ip4)
    assert lab.ping(s4.host, H2_LAN)
    on = lab.network("d", "172.30.4.0/24")
    s6, s7 = lab.sandbox(on, 2), lab.sandbox(on, 3)
    assert lab.ping(s6.host, s7.ip4)


def test_internal_network_has_no_egress_but_sandboxes_talk(lab):
    net = lab.network("i", "172.30.5.0/24", internal=True)
    s1, s2 = lab.sandbox(net, 2), lab.sandbox(net, 3)
    lab.serve(lab.h2, 7000)
    assert lab.talk(s1.host, H2_LAN, 7000) == ""
    assert not lab.ping(s1.host, H2_LAN)
    assert lab.ping(s1.host, s2.ip4)


def test_user_chain_is_evaluated_first(lab):
    net = lab.network("a", "172.30.1.0/24")
    s1 = lab.sandbox(net, 2)
    lab.serve(s1.host, 80)
    net.publish(("tcp", "", 8080, s1, 80))
    if lab.backend_name == "nftables":
        lab.h1.run("nft add rule inet cnm CNM-USER ip saddr %s drop" % H2_LAN)
    else:
        lab.h1.run("iptables -A CNM-USER -s %s -j DROP" % H2_LAN)
    assert lab.talk(lab.h2, H1_LAN, 8080) == ""
    assert lab.talk(lab.h1, H1_LAN, 8080) == H1_LAN  # not forwarded: not filtered
