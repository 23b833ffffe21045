"""Docker parity and safety, observed in the kernel and with packets: the bridge's MAC
is pinned, published ports need a firewall, and keys not given in an ``ipam.config``
entry are not compared."""
import os
import subprocess

import pytest

from engine_helpers import HostEngine
from harness import eventually
from ansible_collections.cnm.core.plugins.module_utils.errors import CnmError


def _bridge(host, name):
    return {link["ifname"]: link for link in host.ip_json("link")}[name]


def test_the_bridge_mac_stays_when_the_lower_mac_port_leaves(host):
    """A bridge left to itself takes its lowest port's MAC: when that port left, the
    MAC changed and the other sandboxes' ARP entry for the gateway went stale."""
    eng = HostEngine(host)
    eng.network(name="app", ipam={"config": [{"subnet": "10.78.0.0/24"}]},
                driver_options={"com.docker.network.bridge.name": "br-mac"})
    assert _bridge(host, "br-mac")["address"] == "02:42:0a:4e:00:01"  # Docker's derivation
    eng.endpoint(network="app", sandbox="low", mac_address="02:00:00:00:00:01")
    eng.endpoint(network="app", sandbox="high", mac_address="0e:00:00:00:00:02")
    assert host.ping("10.78.0.1", sandbox="high")  # the gateway's MAC is in its ARP cache
    pinger = host.popen(["ping", "-n", "-c", "30", "-i", "0.1", "-W", "1", "10.78.0.1"],
                        sandbox="high", stdout=subprocess.PIPE)
    eng.endpoint(network="app", sandbox="low", state="absent")
    out, dummy = pinger.communicate(timeout=30)
    assert _bridge(host, "br-mac")["address"] == "02:42:0a:4e:00:01"
    assert b" 0% packet loss" in out, out.decode()
    assert not eng.network(name="app").changed


def test_a_bridge_mac_changed_by_hand_is_drift(host):
    eng = HostEngine(host)
    eng.network(name="app", ipam={"config": [{"subnet": "10.79.0.0/24"}]},
                driver_options={"com.docker.network.bridge.name": "br-drift"})
    host.run(["ip", "link", "set", "br-drift", "address", "0a:00:00:00:00:09"])
    check = HostEngine(host, check_mode=True).network(name="app")
    assert check.changed and any("MAC" in a for a in check.actions)
    assert eng.network(name="app").changed
    assert _bridge(host, "br-drift")["address"] == "02:42:0a:4f:00:01"
    assert not eng.network(name="app").changed


def test_publishing_ports_without_a_firewall_is_refused(host):
    """``firewall_backend: none`` forwards nothing: a mapping would be a lie."""
    eng = HostEngine(host, firewall_backend="none")
    eng.network(name="app", ipam={"config": [{"subnet": "10.80.0.0/24"}]})
    eng.endpoint(network="app", sandbox="web")
    with pytest.raises(CnmError) as err:
        eng.port_mapping(sandbox="web", ports=[{"container_port": 80, "host_port": 8080}])
    assert err.value.field == "firewall_backend"
    assert eng.sandbox_info(name="web").data["sandboxes"][0]["Networks"]["app"]["Ports"] == {}
    # withdrawing nothing is fine without a firewall
    assert not eng.port_mapping(sandbox="web", state="absent").changed


def test_a_pool_entry_that_repeats_only_its_subnet_is_not_a_change(host):
    """community.docker's own tests: keys not given in an ipam.config entry are kept."""
    eng = HostEngine(host)
    full = {"subnet": "10.81.0.0/24", "gateway": "10.81.0.254",
            "ip_range": "10.81.0.128/25", "aux_addresses": {"router": "10.81.0.253"}}
    eng.network(name="app", ipam={"config": [full]})
    again = eng.network(name="app", ipam={"config": [{"subnet": "10.81.0.0/24"}]})
    assert not again.changed, again.actions
    cfg = again.data["network"]["IPAM"]["Config"][0]
    assert cfg["Gateway"] == "10.81.0.254" and cfg["IPRange"] == "10.81.0.128/25"
    assert cfg["AuxiliaryAddresses"] == {"router": "10.81.0.253"}
    # a key that is given still counts
    with pytest.raises(CnmError) as err:
        pool = {"subnet": "10.81.0.0/24", "ip_range": "10.81.0.0/25"}
        eng.network(name="app", ipam={"config": [pool]})
    assert err.value.field == "ipam.config[subnet=10.81.0.0/24].ip_range"


HIDE_DNSPYTHON = '''
import sys


class _NoDnspython:
    """This Python cannot import dnspython (as on a host without python3-dnspython)."""

    def find_spec(self, name, path=None, target=None):
        if name == "dns" or name.startswith("dns."):
            raise ModuleNotFoundError("No module named %r" % name, name=name)
        return None


sys.meta_path.insert(0, _NoDnspython())
'''

RUN_WITHOUT_DNSPYTHON = r"""
import json, sys
sys.path.insert(0, %(tests)r)
import conftest  # noqa: F401 (collection path)
from harness import in_netns
from ansible_collections.cnm.core.plugins.module_utils.controller import Engine
from ansible_collections.cnm.core.plugins.module_utils.errors import CnmError
e = Engine(state_dir=%(state)r, run_dir=%(run)r, netns_dir=%(netns)r,
           firewall_backend="none")
try:
    with in_netns(%(path)r):
        getattr(e, %(verb)r)(json.loads(%(params)r))
except CnmError as exc:
    print(exc)
    sys.exit(2)
"""


def run_without_dnspython(host, tmp_path, verb, params):
    """Run one engine operation in a Python (and a resolver) that cannot import
    dnspython: a sitecustomize on PYTHONPATH hides it from this process and from the
    resolver it would start. Returns (exit code, what it printed)."""
    import json
    import os
    import sys
    (tmp_path / "sitecustomize.py").write_text(HIDE_DNSPYTHON)
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = RUN_WITHOUT_DNSPYTHON % {
        "tests": tests, "state": host.state_dir, "run": host.run_dir,
        "netns": host.netns_dir, "path": host.path, "verb": verb,
        "params": json.dumps(params)}
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def _kill_resolver(host):
    import os
    import signal
    from ansible_collections.cnm.core.plugins.module_utils.dns import service
    pid = service.resolver_status(host.run_dir)["pid"]
    os.kill(pid, signal.SIGKILL)
    assert eventually(lambda: not service.resolver_status(host.run_dir)["running"])


def _dig(host, sandbox, name):
    out = host.sandbox_run(sandbox, ["dig", "+short", "+time=1", "+tries=2",
                                     "@127.0.0.11", name], check=False)
    return out.stdout.split() if out.returncode == 0 else None


def test_a_host_without_dnspython_fails_the_task_naming_the_package_then_converges(
        host, tmp_path):
    eng = HostEngine(host)
    eng.network(name="app", ipam={"config": [{"subnet": "10.82.0.0/24"}]})
    eng.endpoint(network="app", sandbox="web", ipv4_address="10.82.0.10")
    _kill_resolver(host)  # a reboot, or a kill: the next run must start it again
    # an attach fails before anything is made, naming the Debian package
    rc, out = run_without_dnspython(host, tmp_path, "endpoint",
                                    {"network": "app", "sandbox": "db"})
    assert rc == 2 and "python3-dnspython" in out, out
    assert "db" not in host.sandboxes()
    # a DNS change fails too (the resolver cannot start), and is recorded as owed
    rc, out = run_without_dnspython(host, tmp_path, "dns",
                                    {"sandbox": "web", "hostname": "web2"})
    assert rc == 2 and "python3-dnspython" in out, out
    check = HostEngine(host, check_mode=True).endpoint(network="app", sandbox="web")
    assert check.changed and any("resolver" in a or "DNS" in a for a in check.actions)
    # dnspython is back: the next run of any task repairs, and every sandbox resolves
    res = eng.endpoint(network="app", sandbox="web")
    assert res.changed and any(a.startswith("repair: DNS") for a in res.actions)
    eng.endpoint(network="app", sandbox="db")
    assert eventually(lambda: _dig(host, "db", "web2") == ["10.82.0.10"])
    assert not eng.endpoint(network="app", sandbox="web").changed


def _inet(host, sandbox, family):
    return [a["local"] for link in host.ip_json("addr show dev eth0", sandbox=sandbox)
            for a in link["addr_info"] if a["family"] == family]


def test_an_ipv6_only_network_gives_no_ipv4_and_its_sandboxes_ping_by_ipv6(host):
    eng = HostEngine(host)
    res = eng.network(name="v6", enable_ipv4=False, enable_ipv6=True,
                      ipam={"config": [{"subnet": "fd00:98::/64"}]})
    assert res.data["network"]["EnableIPv4"] is False
    assert [c["Subnet"] for c in res.data["network"]["IPAM"]["Config"]] == ["fd00:98::/64"]
    a = eng.endpoint(network="v6", sandbox="a").data["endpoint"]
    b = eng.endpoint(network="v6", sandbox="b").data["endpoint"]
    assert a["IPAddress"] == "" and b["GlobalIPv6Address"]
    assert _inet(host, "a", "inet") == []
    assert b["GlobalIPv6Address"] in _inet(host, "b", "inet6")
    assert host.ping(b["GlobalIPv6Address"], sandbox="a")
    with pytest.raises(CnmError) as err:
        eng.endpoint(network="v6", sandbox="c", ipv4_address="10.1.1.1")
    assert err.value.field == "ipv4_address"
    with pytest.raises(CnmError) as err:
        eng.network(name="none46", enable_ipv4=False)
    assert err.value.field == "enable_ipv4"
    assert not eng.network(name="v6", enable_ipv4=False, enable_ipv6=True).changed


def test_a_sandbox_without_an_ipv6_network_has_ipv6_disabled(host):
    eng = HostEngine(host)
    eng.network(name="v4", ipam={"config": [{"subnet": "10.83.0.0/24"}]})
    eng.network(name="dual", enable_ipv6=True,
                ipam={"config": [{"subnet": "10.84.0.0/24"}, {"subnet": "fd00:84::/64"}]})
    eng.endpoint(network="v4", sandbox="four")
    eng.endpoint(network="dual", sandbox="both")

    def disabled(sandbox):
        return host.sandbox_run(sandbox, ["cat", "/proc/sys/net/ipv6/conf/eth0/"
                                          "disable_ipv6"]).stdout.strip()
    assert disabled("four") == "1"
    assert _inet(host, "four", "inet6") == []  # not even link-local
    assert disabled("both") == "0"


def test_a_container_mode_sidecar_shares_the_owners_namespace(host):
    """Seed 004's ``docker run --network container:main-app --name sidecar``."""
    from harness import greeters, tcp_answer
    eng = HostEngine(host)
    eng.network(name="app", ipam={"config": [{"subnet": "10.85.0.0/24"}]})
    main = eng.endpoint(network="app", sandbox="main", ipv4_address="10.85.0.10")
    res = eng.sandbox(name="sidecar", network_mode="container:main")
    assert res.changed
    main_id = eng.sandbox_info(name="main").data["sandboxes"][0]["Id"]
    assert res.data["sandbox"]["HostConfig"]["NetworkMode"] == "container:" + main_id
    assert _inet(host, "sidecar", "inet") == ["10.85.0.10"]  # the owner's eth0
    assert main.data["endpoint"]["MacAddress"] == host.ip_json(
        "link show dev eth0", sandbox="sidecar")[0]["address"]
    with greeters(host, [8085], sandbox="main", name="main"):
        assert tcp_answer(host, "127.0.0.1", 8085, sandbox="sidecar") == "hello from main 8085"
    # the owner's name files (resolv.conf with 127.0.0.11, hosts, hostname), kept in step

    def name_file(sandbox, name):
        with open(os.path.join(host.run_dir, "sandboxes", sandbox, name)) as fh:
            return fh.read()
    for name in ("resolv.conf", "hosts", "hostname"):
        assert name_file("sidecar", name) == name_file("main", name)
    assert "nameserver 127.0.0.11" in name_file("sidecar", "resolv.conf")
    eng.dns(sandbox="main", extra_hosts=["legacy:10.9.9.9"])
    assert "10.9.9.9\tlegacy" in name_file("sidecar", "hosts")
    with pytest.raises(CnmError) as err:
        eng.endpoint(network="app", sandbox="sidecar")
    assert err.value.field == "sandbox"
    with pytest.raises(CnmError) as err:
        eng.sandbox(name="main", state="absent")
    assert err.value.field == "force" and "sidecar" in str(err.value)
    assert not eng.sandbox(name="sidecar", network_mode="container:main").changed
    gone = eng.sandbox(name="main", state="absent", force=True)
    assert gone.changed and "main" not in host.sandboxes() and "sidecar" not in host.sandboxes()


def test_sandbox_sysctls_are_set_inside_checked_and_only_net_keys(host):
    """Seed 004's ``--sysctl net.core.somaxconn=1024``."""
    eng = HostEngine(host)

    def inside(key):
        return host.sandbox_run("web", ["cat", "/proc/sys/" + key.replace(".", "/")]
                                ).stdout.strip()
    res = eng.sandbox(name="web", sysctls={"net.core.somaxconn": 1024,
                                           "net.ipv4.ip_unprivileged_port_start": "80"})
    assert res.changed
    assert inside("net.core.somaxconn") == "1024"
    assert inside("net.ipv4.ip_unprivileged_port_start") == "80"
    assert res.data["sandbox"]["HostConfig"]["Sysctls"]["net.core.somaxconn"] == "1024"
    assert not eng.sandbox(name="web", sysctls={"net.core.somaxconn": "1024"}).changed
    host.sandbox_run("web", ["sh", "-c", "echo 128 > /proc/sys/net/core/somaxconn"])
    check = HostEngine(host, check_mode=True).sandbox(name="web")
    assert check.changed and "sysctls.net.core.somaxconn" in str(check.diff)
    assert eng.sandbox(name="web").changed and inside("net.core.somaxconn") == "1024"
    for bad, field in (({"kernel.shmmax": 1}, "sysctls.kernel.shmmax"),
                       ({"net.core.nosuchkey": 1}, "sysctls.net.core.nosuchkey")):
        with pytest.raises(CnmError) as err:
            eng.sandbox(name="other", sysctls=bad)
        assert err.value.field == field
        assert "other" not in host.sandboxes()


def test_docker_shapes_broadcast_attachable_network_settings_and_host_gateway(host):
    eng = HostEngine(host, firewall_backend="nftables")
    net = eng.network(name="app", ipam={"config": [{"subnet": "10.86.0.0/24"}]},
                      driver_options={"com.docker.network.bridge.name": "br-shape"})
    assert net.data["network"]["Attachable"] is False
    assert net.data["network"]["IPAM"]["Options"] == {}
    assert eng.network(name="app", attachable=True).data["network"]["Attachable"] is True
    eng.endpoint(network="app", sandbox="web", ipv4_address="10.86.0.10", aliases=["www"])

    def brd(sandbox=None, dev="eth0"):
        links = host.ip_json("addr show dev %s" % dev, sandbox=sandbox)
        return [a.get("broadcast") for link in links for a in link["addr_info"]
                if a["family"] == "inet"]
    assert brd("web") == ["10.86.0.255"] and brd(None, "br-shape") == ["10.86.0.255"]
    eng.port_mapping(sandbox="web", ports=[{"container_port": 80, "host_port": 8086}])
    settings = eng.sandbox_info(name="web").data["sandboxes"][0]["NetworkSettings"]
    app = settings["Networks"]["app"]
    assert app["IPAMConfig"] == {"IPv4Address": "10.86.0.10"}
    assert app["Aliases"] == ["www"] and app["Links"] is None and app["DriverOpts"] is None
    assert app["IPAddress"] == "10.86.0.10" and app["IPPrefixLen"] == 24
    assert app["Gateway"] == "10.86.0.1" and app["MacAddress"] == "02:42:0a:56:00:0a"
    assert settings["Ports"]["80/tcp"][0]["HostPort"] == "8086"
    assert settings["IPAddress"] == ""  # top-level fields: the default bridge only
    eng.dns(sandbox="web", extra_hosts=["host.docker.internal:host-gateway"])
    files = eng.dns(sandbox="web").data["sandbox"]["files"]
    with open(files[0] + "/hosts") as fh:
        hosts = fh.read()
    assert "10.86.0.1\thost.docker.internal" in hosts
