"""cnm.core.cnm_topology in real ansible-playbook runs: one task builds a whole host
(sandboxes ping each other, published ports answer, names resolve), the second run
changes nothing, check mode on a fresh host predicts and creates nothing, diff mode shows
each object, purge removes only what the topology dropped (never what cnm did not make),
bad input fails naming the object and the field with nothing made, and a run killed
with kill -9 part-way converges on the next run with nothing leaked."""
import copy
import os
import signal
import threading

import pytest
from ansible_runner import run_playbook
from harness import eventually, greeters, tcp_answer

PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - name: topology
      cnm.core.cnm_topology:
        networks: "{{ topo.networks }}"
        sandboxes: "{{ topo.sandboxes }}"
        purge: "{{ topo.purge | default(false) }}"
        firewall_backend: nftables
"""

TOPOLOGY = {
    "networks": [
        {"name": "front", "ipam": {"config": [{"subnet": "10.71.1.0/24"}]},
         "driver_options": {"com.docker.network.bridge.name": "cnmt-front"}},
        {"name": "back", "internal": True, "ipam": {"config": [{"subnet": "10.71.2.0/24"}]},
         "driver_options": {"com.docker.network.bridge.name": "cnmt-back"}},
    ],
    "sandboxes": [
        {"name": "web", "endpoints": [
            {"network": "front", "ipv4_address": "10.71.1.10", "aliases": ["www"],
             "ports": [{"container_port": 80, "host_port": 18080}]},
            {"network": "back", "ipv4_address": "10.71.2.10", "gw_priority": -1,
             "interface_name": "backend0"}]},
        {"name": "db", "endpoints": [
            {"network": "back", "ipv4_address": "10.71.2.20", "aliases": ["database"],
             "mac_address": "02:42:0a:47:02:99"}]},
        {"name": "client", "endpoints": [{"network": "front"}]},
    ],
}


def apply(host, topo, **kw):
    return run_playbook(host, PLAY, extra_vars={"topo": topo}, **kw)


def resolve(host, sandbox, name):
    out = host.sandbox_run(sandbox, ["dig", "+short", "+time=1", "+tries=3", "@127.0.0.11",
                                     name], check=False)
    return out.stdout.split() if out.returncode == 0 else None


def cnm_links(host):
    """Host-side links the engine made: our bridges and veths."""
    return sorted(link["ifname"] for link in host.ip_json("link")
                  if link["ifname"].startswith(("cnmt-", "veth")))


def test_one_task_builds_the_host_and_a_second_run_changes_nothing(host):
    first = apply(host, TOPOLOGY, diff=True).assert_ok()
    task = first.task("topology")
    assert task.changed
    objects = task.result["objects"]
    assert objects["sandboxes[web].endpoints[0].ports"]["changed"]
    assert objects["sandboxes[db].endpoints[0]"]["actions"] == [
        "attach db to back (10.71.2.20/24)"]
    headers = [d["before_header"] for d in task.result["diff"]]
    assert "networks[front]" in headers and "sandboxes[web].endpoints[1]" in headers
    web = task.result["sandboxes"]["web"]["Networks"]
    assert web["back"]["InterfaceName"] == "backend0"
    assert web["front"]["Ports"] == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "18080"}]}

    # as a user sees it: pings, names, the published port, the interfaces asked for
    assert host.ping("10.71.2.20", sandbox="web", count=3)
    assert host.ping("10.71.1.10", sandbox="client", count=3)
    assert resolve(host, "client", "www") == ["10.71.1.10"]
    assert resolve(host, "web", "database") == ["10.71.2.20"]
    db = host.ip_json("addr show", sandbox="db")
    eth = [link for link in db if link["ifname"] == "eth0"][0]
    assert eth["address"] == "02:42:0a:47:02:99"
    route = host.ip_json("route show default", sandbox="web")
    assert route and route[0]["dev"] == "eth0"  # front wins (back has gw_priority -1)
    with greeters(host, [80], sandbox="web"):
        assert tcp_answer(host, "127.0.0.1", 18080) == "hello from web 80"

    again = apply(host, TOPOLOGY, diff=True).assert_ok()
    task = again.task("topology")
    assert not task.changed, task.result["actions"]
    assert not any(o["changed"] for o in task.result["objects"].values())
    assert task.result.get("diff") == []


def test_check_mode_on_a_fresh_host_predicts_and_creates_nothing(host):
    run = apply(host, TOPOLOGY, check=True, diff=True).assert_ok()
    task = run.task("topology")
    assert task.changed
    changed = {path for path, o in task.result["objects"].items() if o["changed"]}
    assert {"networks[front]", "networks[back]", "sandboxes[web]",
            "sandboxes[web].endpoints[0]", "sandboxes[web].endpoints[0].ports",
            "sandboxes[client].endpoints[0]"} <= changed
    assert [d["before_header"] for d in task.result["diff"]][:2] == [
        "networks[front]", "networks[back]"]
    assert host.sandboxes() == []
    assert cnm_links(host) == []
    assert os.listdir(host.state_dir) == []  # not even the store


def test_purge_removes_only_what_the_topology_dropped(host):
    apply(host, TOPOLOGY).assert_ok()
    # things cnm did not make: a namespace beside the sandboxes and a host bridge
    host.run("ip link add cnmt-mine type bridge")
    foreign = os.path.join(host.netns_dir, "not-cnm")
    open(foreign, "w").close()

    smaller = copy.deepcopy(TOPOLOGY)
    smaller["purge"] = True
    smaller["networks"] = smaller["networks"][:1]  # back goes
    smaller["sandboxes"] = [sb for sb in smaller["sandboxes"] if sb["name"] != "db"]
    web = smaller["sandboxes"][0]
    web["endpoints"] = web["endpoints"][:1]
    web["endpoints"][0].pop("ports")  # its published port is withdrawn
    run = apply(host, smaller).assert_ok()
    task = run.task("topology")
    assert task.changed
    assert task.result["purged"] == {"networks": ["back"], "sandboxes": ["db"],
                                     "endpoints": ["web on back"]}
    assert sorted(host.sandboxes()) == ["client", "not-cnm", "web"]
    assert cnm_links(host)[:2] == ["cnmt-front", "cnmt-mine"]
    assert "cnmt-back" not in cnm_links(host)
    assert [link["ifname"] for link in host.ip_json("link", sandbox="web")] == ["lo", "eth0"]
    assert host.ping("10.71.1.10", sandbox="client", count=3)
    with greeters(host, [80], sandbox="web"):
        assert tcp_answer(host, "127.0.0.1", 18080, timeout=1) is None
    assert not apply(host, smaller).assert_ok().task("topology").changed


def test_bad_input_fails_naming_object_and_field_and_makes_nothing(host):
    cases = []
    bad = copy.deepcopy(TOPOLOGY)
    bad["sandboxes"][1]["endpoints"][0]["ipv4_address"] = "10.71.9.20"
    cases.append((bad, "sandboxes[db].endpoints[0].ipv4_address"))
    bad = copy.deepcopy(TOPOLOGY)
    bad["sandboxes"][2]["endpoints"][0]["network"] = "nowhere"
    cases.append((bad, "sandboxes[client].endpoints[0].network"))
    bad = copy.deepcopy(TOPOLOGY)
    bad["sandboxes"][2]["endpoints"][0]["ports"] = [{"container_port": 81,
                                                     "host_port": 18080}]
    cases.append((bad, "sandboxes[client].endpoints[0].ports[0].host_port"))
    bad = copy.deepcopy(TOPOLOGY)
    bad["sandboxes"][2]["endpoints"][0]["mac_address"] = "not-a-mac"
    cases.append((bad, "sandboxes[client].endpoints[0].mac_address"))
    bad = copy.deepcopy(TOPOLOGY)
    bad["networks"][1]["ipam"]["config"][0]["gateway"] = "10.99.0.1"
    cases.append((bad, "networks[back].ipam.config[0].gateway"))
    for topo, field in cases:
        run = apply(host, topo)
        task = run.task("topology")
        assert task.failed, field
        assert task.msg.startswith(field + ": "), (field, task.msg)
        assert host.sandboxes() == [] and cnm_links(host) == [], field


def _kill_run_marked(marker):
    """SIGKILL every process of the run that carries ``marker`` in its environment
    (ansible-playbook, its workers, nsenter, the module): the whole run's tree, even
    across the workers' setsid."""
    needle = ("CNM_FAULT_MARKER=%s" % marker).encode()
    killed = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open("/proc/%s/environ" % pid, "rb") as fh:
                if needle in fh.read().split(b"\0"):
                    os.kill(int(pid), signal.SIGKILL)
                    killed.append(int(pid))
        except OSError:
            continue
    return killed


@pytest.mark.parametrize("point", ["endpoint-interface-made", "publish-before-firewall"])
def test_a_run_killed_part_way_converges_on_the_next_run_with_nothing_leaked(host, point):
    """Killed inside the first attach (its interface made, its row still ``creating``),
    or in the ports step (the mappings saved with their intent, the firewall batch not
    applied yet)."""
    marker = os.path.join(host.root, "paused")
    env = {"CNM_FAULT_PAUSE": point, "CNM_FAULT_MARKER": marker}
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(
        run=apply(host, TOPOLOGY, env=env, timeout=300)))
    thread.start()
    try:
        assert eventually(lambda: os.path.exists(marker) or not thread.is_alive(),
                          timeout=120), "the run never reached the checkpoint"
        assert os.path.exists(marker), outcome.get("run") and outcome["run"].explain()
    finally:
        _kill_run_marked(marker)
        thread.join(60)
    assert outcome["run"].rc != 0

    rerun = apply(host, TOPOLOGY).assert_ok()
    assert rerun.task("topology").changed
    assert not apply(host, TOPOLOGY).assert_ok().task("topology").changed
    # nothing leaked: one namespace per sandbox, one host veth per bridge endpoint
    assert sorted(host.sandboxes()) == ["client", "db", "web"]
    veths = [name for name in cnm_links(host) if name.startswith("veth")]
    assert len(veths) == 4, veths
    assert host.ping("10.71.2.20", sandbox="web", count=3)
    assert resolve(host, "client", "www") == ["10.71.1.10"]
    with greeters(host, [80], sandbox="web"):
        assert tcp_answer(host, "127.0.0.1", 18080) == "hello from web 80"
