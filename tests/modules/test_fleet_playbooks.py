"""The fleet playbooks (site, rollout, verify, teardown) on simulated hosts.

Each host is a throwaway network namespace on a shared LAN (a bridge in one more
namespace), reached with the ``cnm.core.nsenter`` connection and keeping its engine
state in its own directories. The hosts share this machine's file system, as several
hosts would share nothing: the CLI they install goes to one temporary directory all of
them write, and the sysctl.d file is not written (``host_manage_sysctl_file: false``).
What the playbooks did is observed inside the hosts: pings between sandboxes, ``dig
@127.0.0.11`` in a sandbox, a TCP connection from another host to a published port.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "integration"))

from ansible_runner import (ANSIBLE_PLAYBOOK, CALLBACK_PLUGINS, COLLECTIONS,  # noqa: E402
                            PYTHON, REPO, VENV_BIN)
from harness import greeters, suffix, tcp_answer  # noqa: E402

PLAYBOOKS = os.path.join(REPO, "playbooks")
LAN = "192.168.91.%d"
WEB_IP = "10.91.1.10"

NETWORKS = [
    {"name": "app", "ipam": {"config": [{"subnet": "10.91.1.0/24"}]}},
    {"name": "data", "internal": True, "ipam": {"config": [{"subnet": "10.91.2.0/24"}]}},
]
SANDBOXES = [
    {"name": "web", "hostname": "web",
     "endpoints": [{"network": "app", "ipv4_address": WEB_IP}],
     "ports": [{"container_port": 80, "host_port": 8080}]},
    {"name": "api", "endpoints": [{"network": "app"},
                                  {"network": "data", "aliases": ["api.internal"]}]},
    {"name": "db", "endpoints": [{"network": "data"}]},
]
# A subnet the engine refuses: the host's topology task fails, nothing is made there.
BROKEN_NETWORKS = [{"name": "app", "ipam": {"config": [{"subnet": "10.91.300.0/24"}]}}]


class Fleet:
    """Simulated hosts on one LAN, an inventory of them, and playbook runs against it."""

    def __init__(self, make_host, count, broken=()):
        self.workdir = tempfile.mkdtemp(prefix="cnm-fleet-")
        self.shared = os.path.join(self.workdir, "shared")     # the hosts' common files
        # The engine the hosts get: a snapshot, so that edits to the checkout during the
        # test are not (rightly) reported as changes by the second run.
        self.source = os.path.join(self.workdir, "source")
        shutil.copytree(os.path.join(REPO, "plugins", "module_utils"),
                        os.path.join(self.source, "plugins", "module_utils"),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        self.torn_down = False
        lan = make_host("lan")
        lan.run("ip link add br0 type bridge && ip link set br0 up")
        self.hosts = []
        for i in range(count):
            h = make_host("f%d" % (i + 1))
            peer = "p%s" % suffix(6)
            subprocess.run(["ip", "link", "add", "lan0", "netns", h.name, "type", "veth",
                            "peer", "name", peer, "netns", lan.name], check=True)
            lan.run("ip link set %s master br0 && ip link set %s up" % (peer, peer))
            h.lan_ip = LAN % (i + 1)
            h.run("ip addr add %s/24 dev lan0 && ip link set lan0 up" % h.lan_ip)
            self.hosts.append(h)
        self.lan = lan
        self.broken = {self.hosts[i].name for i in broken}
        self.inventory = os.path.join(self.workdir, "inventory.yml")
        with open(self.inventory, "w") as f:
            yaml.safe_dump(self._inventory(), f, default_flow_style=False)

    def _inventory(self):
        hosts = {}
        for h in self.hosts:
            hosts[h.name] = {"ansible_host": h.path, "cnm_state_dir": h.state_dir,
                             "cnm_run_dir": h.run_dir, "cnm_netns_dir": h.netns_dir}
            if h.name in self.broken:
                hosts[h.name]["cnm_networks"] = BROKEN_NETWORKS
        return {"all": {"children": {"cnm_hosts": {"hosts": hosts, "vars": {
            "ansible_connection": "cnm.core.nsenter",
            "ansible_python_interpreter": PYTHON,
            "host_manage_sysctl_file": False,
            "host_cli_source": self.source,
            "host_cli_lib_dir": os.path.join(self.shared, "lib", "cnm-core"),
            "host_cli_path": os.path.join(self.shared, "bin", "cnm"),
            "cnm_networks": NETWORKS,
            "cnm_sandboxes": SANDBOXES,
        }}}}}

    def play(self, name, extra_vars=None, check=False):
        """Run playbooks/<name>.yml against the fleet; returns a Run."""
        record = os.path.join(self.workdir, "record-%s.jsonl" % suffix(6))
        argv = [ANSIBLE_PLAYBOOK, "-i", self.inventory, os.path.join(PLAYBOOKS, name + ".yml")]
        if extra_vars:
            argv += ["-e", json.dumps(extra_vars)]
        if check:
            argv.append("--check")
        env = dict(os.environ)
        for var in ("CNM_STATE_DIR", "CNM_RUN_DIR", "CNM_NETNS_DIR"):
            env.pop(var, None)       # every host's directories come from the inventory
        env.update({
            "ANSIBLE_CONFIG": os.path.join(REPO, "ansible.cfg"),
            "ANSIBLE_COLLECTIONS_PATH": COLLECTIONS,
            "ANSIBLE_CALLBACK_PLUGINS": CALLBACK_PLUGINS,
            "ANSIBLE_CALLBACKS_ENABLED": "cnm_record",
            "CNM_RECORD_FILE": record,
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCAL_TEMP": os.path.join(self.workdir, "local-tmp"),
            "PATH": VENV_BIN + os.pathsep + env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        })
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=1200, check=False)
        return Run(proc, record)

    def close(self):
        shutil.rmtree(self.workdir, ignore_errors=True)


class Run:
    """One ansible-playbook run: rc, per-host stats, results in the order they came."""

    def __init__(self, proc, record):
        self.rc, self.stdout, self.stderr = proc.returncode, proc.stdout, proc.stderr
        self.results, self.stats = [], {}
        if os.path.exists(record):
            with open(record, encoding="utf-8") as f:
                for line in f:
                    entry = json.loads(line)
                    if entry["kind"] == "stats":
                        self.stats = entry["stats"]
                    else:
                        self.results.append(entry)

    def of(self, host):
        return [r for r in self.results if r["host"] == host.name]

    def failed(self, host):
        return [r["task"] for r in self.of(host) if r["status"] in ("failed", "unreachable")]

    def explain(self):
        lines = ["rc=%d" % self.rc]
        for r in self.results:
            if r["status"] in ("failed", "unreachable") or r["result"].get("changed"):
                why = str(r["result"].get("msg") or r["result"].get("stderr") or "")[:300]
                lines.append("  %s [%s%s] %s: %s" % (
                    r["host"], r["status"], " changed" if r["result"].get("changed") else "",
                    r["task"], why))
        lines.append("stats: %s" % self.stats)
        lines.append("stdout tail:\n%s" % self.stdout[-3000:])
        if self.stderr.strip():
            lines.append("stderr tail:\n%s" % self.stderr[-2000:])
        return "\n".join(lines)


@pytest.fixture
def fleet_factory(make_host):
    made = []

    def factory(count, broken=()):
        fleet = Fleet(make_host, count, broken)
        made.append(fleet)
        return fleet

    try:
        yield factory
    finally:
        for fleet in made:
            # Best effort: the hosts (namespaces, processes, directories) go with make_host.
            if not fleet.torn_down:
                fleet.play("teardown", {"cnm_teardown_all": True})
            fleet.close()


# --- what a user of a host observes -----------------------------------------------------
def address(host, sandbox, ifname="eth0"):
    for link in host.ip_json("-4 addr show dev %s" % ifname, sandbox=sandbox):
        for a in link.get("addr_info", []):
            return a["local"]
    return None


def dig(host, sandbox, name):
    proc = host.sandbox_run(sandbox, ["dig", "+short", "+time=2", "+tries=3",
                                      "@127.0.0.11", name, "A"], check=False)
    return proc.stdout.split()


def assert_topology_works(host, peer):
    """web and api ping each other on app, api and db on data, names resolve at
    127.0.0.11, and web's published port 8080 answers from ``peer`` over the LAN."""
    api_app = address(host, "api", "eth0")
    assert host.ping(WEB_IP, sandbox="api"), "api cannot ping web on %s" % host.name
    assert host.ping(api_app, sandbox="web"), "web cannot ping api on %s" % host.name
    db_data = address(host, "db")
    assert host.ping(db_data, sandbox="api"), "api cannot ping db on %s" % host.name
    assert dig(host, "api", "web") == [WEB_IP]
    assert db_data in dig(host, "api", "db")
    assert dig(host, "db", "api.internal"), "db cannot resolve api.internal on %s" % host.name
    with greeters(host, [80], sandbox="web", name="web-%s" % host.name):
        assert tcp_answer(peer, host.lan_ip, 8080) == "hello from web-%s 80" % host.name


def untouched(host):
    """Nothing of cnm on ``host``: no sandbox, no store, only lo and the LAN link."""
    links = sorted(link["ifname"] for link in host.ip_json("link"))
    return (host.sandboxes() == [] and os.listdir(host.state_dir) == []
            and links == ["lan0", "lo"])


# --- the tests --------------------------------------------------------------------------
def test_site_converges_on_three_hosts_and_a_second_run_changes_nothing(fleet_factory):
    fleet = fleet_factory(3)
    h1, h2, h3 = fleet.hosts

    # Check mode on fresh hosts predicts changes and makes nothing.
    dry = fleet.play("site", check=True)
    assert dry.rc == 0, dry.explain()
    for h in fleet.hosts:
        assert dry.stats[h.name]["changed"] > 0, dry.explain()
        assert h.sandboxes() == []
        assert sorted(link["ifname"] for link in h.ip_json("link")) == ["lan0", "lo"]
    assert not os.path.exists(fleet.shared)

    first = fleet.play("site")
    assert first.rc == 0, first.explain()
    for h in fleet.hosts:
        assert first.stats[h.name]["failures"] == 0, first.explain()
        assert first.stats[h.name]["changed"] > 0, first.explain()
        assert h.sandboxes() == ["api", "db", "web"]
    assert_topology_works(h1, h2)
    assert_topology_works(h2, h3)
    assert_topology_works(h3, h1)

    # The CLI all three wrote: one wrapper, the engine unpacked without caches.
    shared_lib = os.path.join(fleet.shared, "lib", "cnm-core", "plugins", "module_utils")
    wrapper = os.path.join(fleet.shared, "bin", "cnm")
    assert os.access(wrapper, os.X_OK)
    assert os.path.exists(os.path.join(shared_lib, "controller", "engine.py"))
    assert not [d for _root, dirs, _files in os.walk(shared_lib) for d in dirs
                if d == "__pycache__"]
    if os.path.exists(os.path.join(shared_lib, "cli", "main.py")):
        proc = h1.run([wrapper, "--help"], check=False)
        assert proc.returncode == 0, proc.stderr

    second = fleet.play("site")
    assert second.rc == 0, second.explain()
    for h in fleet.hosts:
        assert second.stats[h.name]["changed"] == 0, second.explain()

    check = fleet.play("site", check=True)
    assert check.rc == 0, check.explain()
    for h in fleet.hosts:
        assert check.stats[h.name]["changed"] == 0, check.explain()

    verify = fleet.play("verify")
    assert verify.rc == 0, verify.explain()

    # Verification fails a host whose sandbox lost its address (drift made by hand).
    h2.sandbox_run("web", "ip addr flush dev eth0")
    broken = fleet.play("verify")
    assert broken.rc != 0, broken.explain()
    assert broken.failed(h2) and not broken.failed(h1) and not broken.failed(h3), \
        broken.explain()

    down = fleet.play("teardown")
    assert down.rc == 0, down.explain()
    for h in fleet.hosts:
        assert h.sandboxes() == []
        links = sorted(link["ifname"] for link in h.ip_json("link"))
        assert links == ["lan0", "lo"], links
    fleet.torn_down = True


def test_rollout_stops_at_a_broken_host_of_the_second_batch(fleet_factory):
    # Batches: [f1] (canary), [f2, f3], [f4, f5]; f3's topology is invalid.
    fleet = fleet_factory(5, broken=[2])
    h1, h2, h3, h4, h5 = fleet.hosts

    run = fleet.play("rollout", {"cnm_rollout_canary": 1, "cnm_rollout_batch": 2})
    assert run.rc != 0, run.explain()
    assert run.failed(h3), run.explain()
    assert "10.91.300.0/24" in json.dumps([r["result"] for r in run.of(h3)
                                           if r["status"] == "failed"]), run.explain()

    # The canary was verified before the second batch began.
    order = [r["host"] for r in run.results]
    verified = [i for i, r in enumerate(run.results)
                if r["host"] == h1.name and r["task"].endswith(
                    "Ping between sandboxes, ask the embedded DNS, connect to published ports")
                and r["status"] == "ok"]
    assert verified, run.explain()
    assert verified[0] < order.index(h2.name), run.explain()

    # The first batch keeps working; the rest is untouched.
    assert_topology_works(h1, h2)
    assert not run.of(h4) and not run.of(h5), run.explain()
    assert untouched(h4) and untouched(h5)
    assert h3.sandboxes() == []
