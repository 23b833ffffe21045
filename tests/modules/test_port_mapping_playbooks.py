"""cnm_port_mapping through real ansible-playbook runs, with both firewall backends.

h1 (the managed host, sandboxes ``web`` and ``api`` on network ``app``) and h2 (a second
host on a veth "LAN") are simulated hosts. The backend reaches the modules through the
``CNM_FIREWALL_BACKEND`` environment variable of the run.
"""
import os
import re
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "integration"))

from ansible_runner import run_playbook  # noqa: E402
from harness import (connect, eventually, greeters, tcp_answer,  # noqa: E402
                     tcp_greeter, udp_ask, udp_echo)
from snapshot import snapshot  # noqa: E402

H1, H2 = "192.168.78.1", "192.168.78.2"
WEB_IP = "10.80.0.10"
EPHEMERAL = (9001, 9002, 9003)

PUBLISH = """
- hosts: all
  gather_facts: false
  tasks:
    - name: app network
      cnm.core.cnm_network:
        name: app
        ipam: {config: [{subnet: 10.80.0.0/24}]}
    - name: web on app
      cnm.core.cnm_endpoint: {network: app, sandbox: web, ipv4_address: 10.80.0.10}
    - name: api on app
      cnm.core.cnm_endpoint: {network: app, sandbox: api}
    - name: publish web
      cnm.core.cnm_port_mapping:
        sandbox: web
        ports:
          - {container_port: 80, host_port: 8080}
          - {container_port: 5300, host_port: 5353, protocol: udp}
          - {container_port: 80, host_port: 8081, host_ip: 127.0.0.1}
    - name: publish web ephemeral
      cnm.core.cnm_port_mapping:
        sandbox: web
        ports: [{container_port: 9001}, {container_port: 9002}, {container_port: 9003}]
"""

STEAL = """
- hosts: all
  gather_facts: false
  tasks:
    - name: api steals 8080 (check mode)
      cnm.core.cnm_port_mapping:
        sandbox: api
        ports: [{container_port: 80, host_port: 8080}]
      check_mode: true
      ignore_errors: true
    - name: api steals 8080
      cnm.core.cnm_port_mapping:
        sandbox: api
        ports: [{container_port: 80, host_port: 8080}]
      ignore_errors: true
"""

TEARDOWN = """
- hosts: all
  gather_facts: false
  tasks:
    - name: withdraw web ports
      cnm.core.cnm_port_mapping: {sandbox: web, state: absent}
    - name: web off app
      cnm.core.cnm_endpoint: {network: app, sandbox: web, state: absent}
    - name: api off app
      cnm.core.cnm_endpoint: {network: app, sandbox: api, state: absent}
    - name: remove app
      cnm.core.cnm_network: {name: app, state: absent}
"""


@pytest.fixture(params=["nftables", "iptables"])
def lan(request, make_host):
    """(h1, h2, backend): two simulated hosts on a LAN, the backend to use on h1."""
    h1, h2 = make_host("pm1"), make_host("pm2")
    connect(h1, h2, H1, H2)
    return h1, h2, request.param


def play(host, backend, text, **kw):
    return run_playbook(host, text, env={"CNM_FIREWALL_BACKEND": backend}, **kw)


def ruleset(host):
    """Every firewall rule of the host as text: nft, iptables-save, ip6tables-save
    (comments with timestamps and packet counters left out)."""
    out = {}
    for tool in ("nft list ruleset", "iptables-save", "ip6tables-save"):
        text = host.run(tool, check=False, timeout=30).stdout
        text = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
        out[tool] = re.sub(r"counter packets \d+ bytes \d+", "counter", text)
    return out


def has_cnm(rules):
    """Whether anything of ours is in ``ruleset()``'s output (table cnm, CNM-* chains)."""
    return ("table inet cnm" in rules["nft list ruleset"]
            or "cnm" in rules["nft list ruleset"].lower()
            or "CNM" in rules["iptables-save"] or "CNM" in rules["ip6tables-save"])


def links(host):
    return sorted(link["ifname"] for link in host.ip_json("link"))


reach = tcp_answer  # (host, address, port, sandbox=None): the greeting, None: no answer


def host_ports(ports, key):
    return [int(entry["HostPort"]) for entry in ports[key]]


def test_publish_check_diff_idempotency_and_traffic(lan):
    h1, h2, backend = lan
    before = snapshot(h1)
    rules_before = ruleset(h1)
    assert not has_cnm(rules_before)
    run_dir_before = sorted(os.listdir(h1.run_dir))

    # --check on a fresh host: predicts every change, creates nothing
    checked = play(h1, backend, PUBLISH, check=True, diff=True)
    checked.assert_ok()
    assert snapshot(h1) == before
    assert ruleset(h1) == rules_before
    assert links(h1) == ["lan0", "lo"]
    assert h1.sandboxes() == []
    assert not os.path.exists(os.path.join(h1.state_dir, "cnm.db"))
    assert sorted(os.listdir(h1.run_dir)) == run_dir_before

    # the real run: every task changed, exactly what check mode predicted
    first = play(h1, backend, PUBLISH, diff=True)
    first.assert_ok()
    names = [t.name for t in first.tasks]
    assert first.changed_tasks == names, first.explain()
    assert checked.changed_tasks == first.changed_tasks, (checked.explain(), first.explain())

    published = first["publish web"]
    assert published["ports"] == {
        "5300/udp": [{"HostIp": "0.0.0.0", "HostPort": "5353"}],
        "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"},
                   {"HostIp": "127.0.0.1", "HostPort": "8081"}]}
    assert published["diff"]["before"] == {"ports": {}}
    assert published["diff"]["after"] == {"ports": published["ports"]}

    ephemeral = first["publish web ephemeral"]
    ports = ephemeral["ports"]
    assert set(ports) == {"80/tcp", "5300/udp"} | {"%d/tcp" % p for p in EPHEMERAL}
    low, high = map(int, h1.run("cat /proc/sys/net/ipv4/ip_local_port_range").stdout.split())
    chosen = [p for c in EPHEMERAL for p in host_ports(ports, "%d/tcp" % c)]
    assert len(chosen) == 3 and len(set(chosen)) == 3, ports
    assert all(low <= p <= high for p in chosen), (chosen, low, high)
    assert all(ports["%d/tcp" % c][0]["HostIp"] == "0.0.0.0" for c in EPHEMERAL)
    assert ephemeral["diff"]["before"] == {"ports": published["ports"]}
    assert ephemeral["diff"]["after"] == {"ports": ports}

    # the chosen backend wrote the rules, the other one has nothing of ours
    rules = ruleset(h1)
    if backend == "nftables":
        assert "table inet cnm" in rules["nft list ruleset"]
        assert "CNM" not in rules["iptables-save"]
    else:
        assert "table inet cnm" not in rules["nft list ruleset"]
        assert "CNM" in rules["iptables-save"]

    # second run: nothing changes, the ephemeral ports stay
    second = play(h1, backend, PUBLISH, diff=True)
    second.assert_ok()
    assert second.changed_tasks == [], second.explain()
    assert second["publish web ephemeral"]["ports"] == ports
    assert second["publish web"]["ports"] == ports

    # traffic: from h2 through h1's LAN address; the 127.0.0.1 binding from h1 only
    servers = [h1.popen(tcp_greeter(80, "web"), sandbox="web"),
               h1.popen(udp_echo(5300), sandbox="web")]
    try:
        assert eventually(lambda: "0.0.0.0:80 " in h1.sandbox_run("web", "ss -ltnH").stdout
                          and ":5300 " in h1.sandbox_run("web", "ss -lunH").stdout,
                          timeout=10)
        assert reach(h2, H1, 8080) == "hello from web"
        udp = h2.run(udp_ask(H1, 5353), check=False, timeout=10).stdout.strip()
        assert udp == "echo:ping"
        assert reach(h1, "127.0.0.1", 8081) == "hello from web"
        assert reach(h2, H1, 8081) is None
        # each ephemeral host port the module chose forwards to its container port
        with greeters(h1, EPHEMERAL, sandbox="web"):
            for cport in EPHEMERAL:
                [hport] = host_ports(ports, "%d/tcp" % cport)
                assert reach(h2, H1, hport) == "hello from web %d" % cport, (cport, hport)
    finally:
        for server in servers:
            server.kill()
            server.wait(timeout=10)


def test_publishing_a_taken_host_port_fails_naming_its_holder_and_changes_nothing(lan):
    h1, h2, backend = lan
    play(h1, backend, PUBLISH).assert_ok()
    before = snapshot(h1)
    rules_before = ruleset(h1)
    res = play(h1, backend, STEAL)
    for name in ("api steals 8080 (check mode)", "api steals 8080"):
        task = res.task(name)
        assert task.failed and not task.changed, res.explain()
        assert "web" in task.msg and "8080" in task.msg, task.msg
        assert "Traceback" not in task.msg
    assert ruleset(h1) == rules_before
    assert snapshot(h1) == before


def test_teardown_removes_everything_of_ours_and_keeps_foreign_rules(lan):
    h1, h2, backend = lan
    foreign = ("nft add table inet othertable && nft add chain inet othertable keepme && "
               "iptables -N DOCKER && iptables -A DOCKER -j RETURN && "
               "iptables -A FORWARD -j DOCKER && ip6tables -N DOCKER")
    h1.run(foreign)
    play(h1, backend, PUBLISH).assert_ok()
    assert has_cnm(ruleset(h1))

    down = play(h1, backend, TEARDOWN)
    down.assert_ok()
    assert down.changed_tasks == [t.name for t in down.tasks], down.explain()
    assert down["withdraw web ports"]["ports"] == {}

    rules = ruleset(h1)
    assert not has_cnm(rules), rules
    assert "table inet othertable" in rules["nft list ruleset"]
    assert "chain keepme" in rules["nft list ruleset"]
    assert ":DOCKER" in rules["iptables-save"]
    assert "-A DOCKER -j RETURN" in rules["iptables-save"]
    assert "-A FORWARD -j DOCKER" in rules["iptables-save"]
    assert ":DOCKER" in rules["ip6tables-save"]
    assert eventually(lambda: links(h1) == ["lan0", "lo"]), links(h1)
    assert h1.sandboxes() == []

    again = play(h1, backend, TEARDOWN)
    again.assert_ok()
    assert again.changed_tasks == [], again.explain()
    assert ruleset(h1) == rules
