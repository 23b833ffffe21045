"""Real ansible-playbook runs against simulated hosts: idempotency, check, diff, errors."""
import concurrent.futures
import ipaddress
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "integration"))

from ansible_runner import run_playbook  # noqa: E402
from snapshot import snapshot, store_rows  # noqa: E402

STORY = """
- hosts: all
  gather_facts: false
  tasks:
    - name: frontend network
      cnm.core.cnm_network:
        name: frontend
        ipam: {config: [{subnet: 10.90.1.0/24}]}
    - name: backend network
      cnm.core.cnm_network:
        name: backend
    - name: web on frontend
      cnm.core.cnm_endpoint: {network: frontend, sandbox: web, ipv4_address: 10.90.1.10}
    - name: api on frontend
      cnm.core.cnm_endpoint: {network: frontend, sandbox: api, mac_address: "02:00:00:aa:bb:cc"}
    - name: api on backend
      cnm.core.cnm_endpoint: {network: backend, sandbox: api, aliases: [service]}
    - name: isolated sandbox
      cnm.core.cnm_endpoint: {network: none, sandbox: isolated}
    - name: explicit sandbox
      cnm.core.cnm_sandbox: {name: spare, hostname: spare01}
    - name: publish web
      cnm.core.cnm_port_mapping:
        sandbox: web
        ports: [{container_port: 80, host_port: 8080}, {container_port: 9000}]
    - name: resolver ttl
      cnm.core.cnm_dns: {ttl: 60}
    - name: api names
      cnm.core.cnm_dns: {sandbox: api, hostname: api01, extra_hosts: ["legacy:192.0.2.1"]}
"""


def test_story_runs_twice_second_run_changes_nothing(host):
    first = run_playbook(host, STORY, diff=True)
    first.assert_ok()
    names = [t.name for t in first.tasks]
    assert first.changed_tasks == names, first.explain()
    net = first["frontend network"]
    assert net["diff"]["after"]["Name"] == "frontend" and net["diff"]["before"] == {}
    assert host.ping("10.90.1.10", sandbox="api")
    dig = host.sandbox_run("api", "dig +short +time=2 @127.0.0.11 web").stdout.split()
    assert dig == ["10.90.1.10"]
    ports = first["publish web"]["ports"]
    assert ports["80/tcp"] == [{"HostIp": "0.0.0.0", "HostPort": "8080"}]
    second = run_playbook(host, STORY, diff=True)
    second.assert_ok()
    assert second.changed_tasks == [], second.explain()
    assert second["publish web"]["ports"] == ports  # ephemeral port stable


def test_check_mode_on_a_fresh_host_predicts_every_change_and_creates_nothing(host):
    before = snapshot(host)
    checked = run_playbook(host, STORY, check=True, diff=True)
    checked.assert_ok()
    assert snapshot(host) == before
    assert not os.path.exists(os.path.join(host.state_dir, "cnm.db"))
    real = run_playbook(host, STORY)
    real.assert_ok()
    assert checked.changed_tasks == real.changed_tasks


def test_diff_shows_before_and_after_of_an_in_place_change(host):
    run_playbook(host, STORY).assert_ok()
    change = """
- hosts: all
  gather_facts: false
  tasks:
    - name: relabel
      cnm.core.cnm_network:
        name: frontend
        labels: {tier: web}
"""
    checked = run_playbook(host, change, check=True, diff=True)
    assert checked.changed_tasks == ["relabel"]
    diff = checked["relabel"]["diff"]
    assert diff["before"]["labels"] == {} and diff["after"]["labels"] == {"tier": "web"}
    real = run_playbook(host, change, diff=True)
    assert real.changed_tasks == ["relabel"]
    assert run_playbook(host, change).changed_tasks == []


BAD = [
    ("ip outside the subnet", "cnm.core.cnm_endpoint",
     {"network": "good", "sandbox": "x1", "ipv4_address": "10.91.9.9"}, "ipv4_address"),
    ("ip outside ip_range", "cnm.core.cnm_endpoint",
     {"network": "good", "sandbox": "x2", "ipv4_address": "10.91.0.5"}, "ip_range"),
    ("ip already used", "cnm.core.cnm_endpoint",
     {"network": "good", "sandbox": "x3", "ipv4_address": "10.91.0.200"}, "in use"),
    ("gateway outside the subnet", "cnm.core.cnm_network",
     {"name": "badgw", "ipam": {"config": [{"subnet": "10.92.0.0/24", "gateway": "10.93.0.1"}]}},
     "ipam.config[0].gateway"),
    ("overlapping subnet", "cnm.core.cnm_network",
     {"name": "overlap", "ipam": {"config": [{"subnet": "10.91.0.0/16"}]}},
     "ipam.config[0].subnet"),
    ("unknown driver", "cnm.core.cnm_network", {"name": "weird", "driver": "warpdrive"},
     "driver"),
    ("name with a slash", "cnm.core.cnm_network", {"name": "a/b"}, "name"),
    ("name too long", "cnm.core.cnm_network", {"name": "n" * 65}, "name"),
    ("bridge name too long", "cnm.core.cnm_network",
     {"name": "longbr", "driver_options": {"com.docker.network.bridge.name": "b" * 16}},
     "com.docker.network.bridge.name"),
    ("interface name in use", "cnm.core.cnm_endpoint",
     {"network": "other", "sandbox": "holder", "interface_name": "eth0"}, "interface_name"),
    ("remove host", "cnm.core.cnm_network", {"name": "host", "state": "absent"}, "name"),
    ("remove none", "cnm.core.cnm_network", {"name": "none", "state": "absent"}, "name"),
]


def test_bad_input_fails_naming_the_field_and_changes_nothing(host):
    setup = """
- hosts: all
  gather_facts: false
  tasks:
    - cnm.core.cnm_network:
        name: good
        ipam: {config: [{subnet: 10.91.0.0/24, ip_range: 10.91.0.128/25}]}
    - cnm.core.cnm_network: {name: other, ipam: {config: [{subnet: 10.94.0.0/24}]}}
    - cnm.core.cnm_endpoint: {network: good, sandbox: holder, ipv4_address: 10.91.0.200}
"""
    run_playbook(host, setup).assert_ok()
    before = snapshot(host)
    import yaml
    tasks = [{"name": case[0], case[1]: case[2], "ignore_errors": True} for case in BAD]
    play = yaml.safe_dump([{"hosts": "all", "gather_facts": False, "tasks": tasks}])
    res = run_playbook(host, play)
    for name, dummy_module, dummy_args, expected in BAD:
        task = res.task(name)
        assert task.failed, name
        assert expected in task.msg, (name, task.msg)
        assert "Traceback" not in (task.msg or "")
    assert snapshot(host) == before


def test_eight_parallel_runs_attach_forty_sandboxes(host):
    run_playbook(host, """
- hosts: all
  gather_facts: false
  tasks:
    - cnm.core.cnm_network: {name: shared, ipam: {config: [{subnet: 10.95.0.0/24}]}}
""").assert_ok()

    def play(i):
        tasks = "\n".join(
            "    - cnm.core.cnm_endpoint: {network: shared, sandbox: p%d-s%d}" % (i, j)
            for j in range(5))
        return run_playbook(host, "- hosts: all\n  gather_facts: false\n  tasks:\n" + tasks)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(play, range(8)))
    for r in results:
        r.assert_ok()
        assert len(r.changed_tasks) == 5
    rows = store_rows(host)
    addresses = [ipaddress.ip_address(r[1]) for r in rows["allocations"]]
    assert len(addresses) == 40 and len(set(addresses)) == 40
    assert len(rows["endpoints"]) == 40 and len(rows["sandboxes"]) == 40
    assert len(host.sandboxes()) == 40
    assert host.ping(str(addresses[0]), sandbox="p7-s4")
