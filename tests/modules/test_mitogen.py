"""The modules under Mitogen (``mitogen_linear``): one warm interpreter runs many tasks.

Mitogen accelerates only the connections it knows (``local``, ``ssh``...), not
``cnm.core.nsenter``: so here ``ansible-playbook`` itself runs inside the simulated
host's namespace (``nsenter --net=<host>``) with ``-c local``, and Mitogen's interpreter
for the host, a child of the run, is in that namespace too. Nothing touches the real
host's network.

What one interpreter keeps between tasks (libnftables contexts, the ctnetlink socket,
imported modules) must stay right when the world changes under it between two tasks of
one play: a sandbox's namespace deleted and made again, a second state_dir, a firewall
flushed by hand, a bridge deleted by hand. The effects are observed as a user would
(ping, TCP through a published port, dig @127.0.0.11, ``ip -j``, ``nft -j``). Last, a run
is killed with SIGKILL (its whole process tree, Mitogen's interpreters included) in the
middle of its attaches, and the next run converges.
"""
import glob
import json
import os
import signal
import subprocess
import tempfile

import pytest
import yaml

import ansible_runner as runner
from harness import SimHost, eventually, greeters, tcp_answer

STRATEGY_DIRS = glob.glob(os.path.join(runner.REPO, ".venv", "lib", "python3*",
                                       "site-packages", "ansible_mitogen", "plugins",
                                       "strategy"))
pytestmark = pytest.mark.skipif(not STRATEGY_DIRS, reason="mitogen is not installed in "
                                "the venv (requirements.txt; run `make deps`)")

SUBNET = "10.77.0.0/24"
WEB, CLIENT = "10.77.0.10", "10.77.0.20"


def mitogen_env(host, workdir, record, state=None):
    """ansible-playbook's environment: Mitogen's linear strategy, the record callback."""
    env = dict(os.environ)
    env.update(host.env())
    env.update({
        "ANSIBLE_CONFIG": os.path.join(runner.REPO, "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": runner.COLLECTIONS,
        "ANSIBLE_CALLBACK_PLUGINS": runner.CALLBACK_PLUGINS,
        "ANSIBLE_CALLBACKS_ENABLED": "cnm_record",
        "CNM_RECORD_FILE": record,
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_LOCAL_TEMP": os.path.join(workdir, "local-tmp"),
        "ANSIBLE_REMOTE_TEMP": os.path.join(workdir, "remote-tmp"),
        "ANSIBLE_STRATEGY": "mitogen_linear",
        "ANSIBLE_STRATEGY_PLUGINS": STRATEGY_DIRS[0],
        "PATH": runner.VENV_BIN + os.pathsep + env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    })
    return env


def mitogen_argv(host, playbook, workdir, check=False):
    """``nsenter --net=<host> ansible-playbook -c local ...`` for ``playbook`` (YAML
    text: the host's directories are added as module_defaults, as ansible_runner does)."""
    inventory = os.path.join(workdir, "inventory.yml")
    with open(inventory, "w") as f:
        yaml.safe_dump({"all": {"hosts": {host.name: {
            "ansible_connection": "local",
            "ansible_python_interpreter": runner.PYTHON,
            "cnm_state_dir": host.state_dir,
            "cnm_run_dir": host.run_dir,
            "cnm_netns_dir": host.netns_dir,
        }}}}, f)
    argv = ["nsenter", "--net=%s" % host.path, runner.ANSIBLE_PLAYBOOK, "-i", inventory,
            runner._playbook_file(playbook, workdir)]  # pylint: disable=protected-access
    if check:
        argv.append("--check")
    return argv


def run_mitogen(host, playbook, check=False, timeout=600):
    """Run ``playbook`` under mitogen_linear in ``host``'s namespace; a PlaybookResult."""
    with tempfile.TemporaryDirectory(prefix="cnm-mitogen-") as workdir:
        record = os.path.join(workdir, "results.jsonl")
        argv = mitogen_argv(host, playbook, workdir, check=check)
        proc = subprocess.run(argv, cwd=runner.REPO, env=mitogen_env(host, workdir, record),
                              capture_output=True, text=True, timeout=timeout, check=False)
        return runner.PlaybookResult(proc.returncode, proc.stdout, proc.stderr, host.name,
                                     argv, record)


def process_tree(pid):
    """``pid`` and every process below it (by parent pid, read from /proc)."""
    children = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                text = f.read()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        children.setdefault(int(fields[1]), []).append(int(stat.split("/")[2]))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def dig(host, sandbox, name):
    out = host.sandbox_run(sandbox, ["dig", "+short", "+time=2", "+tries=2",
                                     "@127.0.0.11", name], check=False)
    return out.stdout.split()


def bridge_of(result):
    return "br-" + result["network"]["Id"][:12]


@pytest.fixture
def mhost():
    """A throwaway simulated host; every process left in it is killed at the end."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    h = SimHost("mi")
    try:
        yield h
    finally:
        h.close()


def pids_of_ppid_task(result, name):
    return int(result[name]["stdout"].strip())


STORY = """
- hosts: all
  gather_facts: false
  tasks:
    - name: one interpreter (a)
      ansible.builtin.command: sh -c 'echo $PPID'
      changed_when: false
    - name: network
      cnm.core.cnm_network: {name: app, ipam: {config: [{subnet: %(subnet)s}]}}
    - name: attach web
      cnm.core.cnm_endpoint: {network: app, sandbox: web, ipv4_address: %(web)s,
                              aliases: [www]}
    - name: attach client
      cnm.core.cnm_endpoint: {network: app, sandbox: client, ipv4_address: %(client)s}
    - name: publish web
      cnm.core.cnm_port_mapping:
        sandbox: web
        ports: [{container_port: 80, host_port: 8080}]
    - name: info
      cnm.core.cnm_network_info: {name: app}
    - name: check mode predicts an attach
      cnm.core.cnm_endpoint: {network: app, sandbox: ghost}
      check_mode: true
    - name: sandbox namespace deleted by hand
      ansible.builtin.shell: umount {{ cnm_netns_dir }}/web && rm {{ cnm_netns_dir }}/web
    - name: web again (its namespace is made again)
      cnm.core.cnm_endpoint: {network: app, sandbox: web, ipv4_address: %(web)s,
                              aliases: [www]}
    - name: firewall flushed by hand
      ansible.builtin.command: nft flush ruleset
    - name: network again (puts the rules back)
      cnm.core.cnm_network: {name: app, ipam: {config: [{subnet: %(subnet)s}]}}
    - name: bridge deleted by hand
      ansible.builtin.command: ip link del {{ bridge }}
    - name: network repaired
      cnm.core.cnm_network: {name: app, ipam: {config: [{subnet: %(subnet)s}]}}
    - name: second state_dir network
      cnm.core.cnm_network:
        name: other
        ipam: {config: [{subnet: 10.78.0.0/24}]}
        state_dir: "{{ cnm_state_dir }}2"
        run_dir: "{{ cnm_run_dir }}2"
        netns_dir: "{{ cnm_netns_dir }}2"
    - name: second state_dir attach
      cnm.core.cnm_endpoint:
        network: other
        sandbox: lone
        ipv4_address: 10.78.0.10
        state_dir: "{{ cnm_state_dir }}2"
        run_dir: "{{ cnm_run_dir }}2"
        netns_dir: "{{ cnm_netns_dir }}2"
    - name: detach client from app
      cnm.core.cnm_endpoint: {network: app, sandbox: client, state: absent}
    - name: attach client again
      cnm.core.cnm_endpoint: {network: app, sandbox: client, ipv4_address: %(client)s}
    - name: info of the first state_dir
      cnm.core.cnm_network_info: {}
    - name: one interpreter (b)
      ansible.builtin.command: sh -c 'echo $PPID'
      changed_when: false
""" % {"subnet": SUBNET, "web": WEB, "client": CLIENT}


def test_one_warm_interpreter_keeps_a_changing_host_right(mhost):
    """A whole story in one play under mitogen_linear, the world changed by hand between
    tasks; every effect checked from outside afterwards."""
    # The bridge's name comes from the network's id: make the network first, then run
    # the story with the name filled in (the network task is then unchanged).
    made = run_mitogen(mhost, """
- hosts: all
  gather_facts: false
  tasks:
    - name: network
      cnm.core.cnm_network: {name: app, ipam: {config: [{subnet: %s}]}}
""" % SUBNET).assert_ok()
    bridge = bridge_of(made["network"])
    res = run_mitogen(mhost, STORY.replace("{{ bridge }}", bridge))
    res.assert_ok()
    # Mitogen really ran the play: both command tasks were spawned by one interpreter
    assert pids_of_ppid_task(res, "one interpreter (a)") == pids_of_ppid_task(
        res, "one interpreter (b)"), res.explain()
    assert res.task("network").changed is False
    assert res.task("attach web").changed and res.task("attach client").changed
    # check mode predicted the attach and made nothing
    assert res.task("check mode predicts an attach").changed
    assert "ghost" not in mhost.sandboxes()
    # the namespace made again, the bridge and the rules put back: repairs are changes
    assert res.task("web again (its namespace is made again)").changed, res.explain()
    assert res.task("network again (puts the rules back)").changed, res.explain()
    assert res.task("network repaired").changed, res.explain()
    assert res.task("detach client from app").changed
    assert res.task("second state_dir attach").changed
    info = res["info"]["networks"][0]
    assert info["Name"] == "app" and len(info["Containers"]) == 2
    names = {n["Name"] for n in res["info of the first state_dir"]["networks"]}
    assert "app" in names and "other" not in names
    # what a user sees afterwards
    assert mhost.ping(WEB, sandbox="client")
    assert mhost.ping(CLIENT, sandbox="web")
    assert dig(mhost, "client", "www") == [WEB]
    assert dig(mhost, "web", "client") == [CLIENT]
    links = {link["ifname"]: link for link in mhost.ip_json("link show")}
    assert links[bridge]["operstate"] in ("UP", "UNKNOWN")
    enslaved = mhost.ip_json("link show master %s" % bridge)
    assert len(enslaved) == 2, enslaved
    tables = json.loads(mhost.run(["nft", "-j", "list", "tables"]).stdout)["nftables"]
    assert any(t.get("table", {}).get("name", "").startswith("cnm") for t in tables), tables
    with greeters(mhost, [80], sandbox="web"):
        assert tcp_answer(mhost, "10.77.0.1", 8080) == "hello from web 80"
        assert tcp_answer(mhost, WEB, 80, sandbox="client") == "hello from web 80"
    # the second state_dir is a separate world on the same host
    other_ns = os.path.join(mhost.netns_dir + "2", "lone")
    assert os.path.exists(other_ns)
    out = subprocess.run(["nsenter", "--net=%s" % other_ns, "ip", "-j", "addr", "show"],
                         capture_output=True, text=True, check=True)
    assert "10.78.0.10" in out.stdout
    # and a second run changes nothing
    again = run_mitogen(mhost, """
- hosts: all
  gather_facts: false
  tasks:
    - {name: network, cnm.core.cnm_network: {name: app, ipam: {config: [{subnet: %s}]}}}
    - {name: web, cnm.core.cnm_endpoint: {network: app, sandbox: web, ipv4_address: %s,
                                         aliases: [www]}}
    - {name: client, cnm.core.cnm_endpoint: {network: app, sandbox: client,
                                            ipv4_address: %s}}
    - {name: ports, cnm.core.cnm_port_mapping: {sandbox: web, ports: [{container_port: 80,
                                                                      host_port: 8080}]}}
""" % (SUBNET, WEB, CLIENT))
    again.assert_ok()
    assert again.changed_tasks == [], again.explain()


KILLED = """
- hosts: all
  gather_facts: false
  tasks:
    - name: network
      cnm.core.cnm_network: {name: app, ipam: {config: [{subnet: %(subnet)s}]}}
    - name: attach
      cnm.core.cnm_endpoint: {network: app, sandbox: "s{{ item }}"}
      loop: "{{ range(%(count)d) | list }}"
    - name: publish
      cnm.core.cnm_port_mapping:
        sandbox: "s{{ item }}"
        ports: [{container_port: 80, host_port: "{{ 9000 + item }}"}]
      loop: "{{ range(%(count)d) | list }}"
"""


def test_a_run_killed_with_sigkill_mid_play_converges_on_the_next_run(mhost):
    count = 12
    play = KILLED % {"subnet": SUBNET, "count": count}
    with tempfile.TemporaryDirectory(prefix="cnm-mitogen-") as workdir:
        record = os.path.join(workdir, "results.jsonl")
        argv = mitogen_argv(mhost, play, workdir)
        proc = subprocess.Popen(argv, cwd=runner.REPO, env=mitogen_env(mhost, workdir, record),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # kill once a few sandboxes are made: the next attach is on its way
            assert eventually(lambda: len(mhost.sandboxes()) >= 4 or proc.poll() is not None,
                              timeout=300, interval=0.005)
            assert proc.poll() is None, "the play ended before it could be killed"
            tree = process_tree(proc.pid)
            for pid in tree:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
    assert eventually(lambda: not any(os.path.exists("/proc/%d" % p) for p in tree), 10)
    assert len(mhost.sandboxes()) < count, "killed too late: every attach was through"
    res = run_mitogen(mhost, play)
    res.assert_ok()
    assert res.task("attach").changed and res.task("publish").changed, res.explain()
    # every sandbox is attached once, with a working published port and DNS
    info = run_mitogen(mhost, """
- hosts: all
  gather_facts: false
  tasks:
    - {name: info, cnm.core.cnm_network_info: {name: app}}
""").assert_ok()["info"]["networks"][0]
    assert sorted(c["Name"] for c in info["Containers"].values()) == sorted(
        "s%d" % i for i in range(count))
    bridge = "br-" + info["Id"][:12]
    assert len(mhost.ip_json("link show master %s" % bridge)) == count
    addresses = {c["Name"]: c["IPv4Address"].split("/")[0] for c in info["Containers"].values()}
    assert len(set(addresses.values())) == count
    assert mhost.ping(addresses["s0"], sandbox="s%d" % (count - 1))
    assert dig(mhost, "s0", "s%d" % (count - 1)) == [addresses["s%d" % (count - 1)]]
    with greeters(mhost, [80], sandbox="s3"):
        assert tcp_answer(mhost, "10.77.0.1", 9003) == "hello from web 80"
    # and nothing is left to repair
    again = run_mitogen(mhost, play)
    again.assert_ok()
    assert again.changed_tasks == [], again.explain()


def test_simulated_hosts_through_an_nsenter_interpreter_under_mitogen(make_host):
    """Mitogen splits ``ansible_python_interpreter`` with shell syntax: with
    ``ansible_connection: local`` and ``nsenter --net=<host> python`` as the interpreter,
    each simulated host gets its own warm interpreter inside its namespace, several in
    one play (``cnm.core.nsenter`` still works under Mitogen, unaccelerated). The run
    itself is inside a throwaway namespace too, so nothing could reach the real host."""
    controller, hosts = make_host("ctl"), [make_host("ha"), make_host("hb")]
    play = """
- hosts: all
  gather_facts: false
  tasks:
    - {name: network, cnm.core.cnm_network: {name: app, ipam: {config: [{subnet: %s}]}}}
    - {name: web, cnm.core.cnm_endpoint: {network: app, sandbox: web, ipv4_address: %s}}
    - {name: client, cnm.core.cnm_endpoint: {network: app, sandbox: client}}
""" % (SUBNET, WEB)
    with tempfile.TemporaryDirectory(prefix="cnm-mitogen-") as workdir:
        inventory = os.path.join(workdir, "inventory.yml")
        with open(inventory, "w") as f:
            yaml.safe_dump({"all": {"hosts": {h.name: {
                "ansible_connection": "local",
                "ansible_python_interpreter": "nsenter --net=%s %s" % (h.path, runner.PYTHON),
                "cnm_state_dir": h.state_dir, "cnm_run_dir": h.run_dir,
                "cnm_netns_dir": h.netns_dir} for h in hosts}}}, f)
        record = os.path.join(workdir, "results.jsonl")
        env = mitogen_env(controller, workdir, record)
        for name in ("CNM_STATE_DIR", "CNM_RUN_DIR", "CNM_NETNS_DIR"):
            env.pop(name, None)
        argv = ["nsenter", "--net=%s" % controller.path, runner.ANSIBLE_PLAYBOOK, "-i",
                inventory, runner._playbook_file(play, workdir)]  # pylint: disable=protected-access
        proc = subprocess.run(argv, cwd=runner.REPO, env=env, capture_output=True,
                              text=True, timeout=600, check=False)
        for h in hosts:
            res = runner.PlaybookResult(proc.returncode, proc.stdout, proc.stderr, h.name,
                                        argv, record)
            res.assert_ok()
            assert res.changed_tasks == ["network", "web", "client"], res.explain()
            bridge = bridge_of(res["network"])
            assert len(h.ip_json("link show master %s" % bridge)) == 2
            assert h.ping(WEB, sandbox="client")
            assert dig(h, "client", "web") == [WEB]
    assert [link["ifname"] for link in controller.ip_json("link show")] == ["lo"]
