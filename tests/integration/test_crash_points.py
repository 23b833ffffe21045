"""A run killed between the store write and the firewall or DNS step never leaves
permanent drift: the same task, run again, reports changed and repairs; a third run
reports nothing to do.

Each case pauses a real engine run at a checkpoint (``CNM_FAULT_PAUSE``), kills it with
SIGKILL there, and then looks the way a user would: names with ``dig @127.0.0.11`` from
another sandbox, published ports with a TCP client on the host, the kernel's rules with
``nft list ruleset`` / ``iptables-save``, and the engine's own firewall check (the
store's mappings, no more, no less). Both firewall backends.
"""
import json
import os
import signal
import subprocess
import sys

import pytest

from engine_helpers import HostEngine
from harness import eventually, greeters, tcp_answer

HERE = os.path.dirname(os.path.abspath(__file__))
SUBNET = "10.93.0.0/24"
VICTIM_IP = "10.93.0.20"
PORT = {"container_port": 80, "host_port": 8093}

RUN_SCRIPT = r"""
import json, sys
sys.path.insert(0, %(tests)r)
import conftest  # noqa: F401 (collection path)
from harness import in_netns
from ansible_collections.cnm.core.plugins.module_utils.controller import Engine
e = Engine(state_dir=%(state)r, run_dir=%(run)r, netns_dir=%(netns)r,
           firewall_backend=%(backend)r)
with in_netns(%(path)r):
    getattr(e, %(verb)r)(json.loads(%(params)r))
"""


def run_killed_at(host, backend, point, verb, params):
    """Run ``Engine.<verb>(params)`` in a child process on ``host`` and kill -9 it when
    it reaches checkpoint ``point``."""
    marker = os.path.join(host.root, "marker-" + point)
    env = dict(os.environ, CNM_FAULT_PAUSE=point, CNM_FAULT_MARKER=marker)
    script = RUN_SCRIPT % {"tests": os.path.dirname(HERE), "state": host.state_dir,
                           "run": host.run_dir, "netns": host.netns_dir, "path": host.path,
                           "backend": backend, "verb": verb, "params": json.dumps(params)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        assert eventually(lambda: os.path.exists(marker) or proc.poll() is not None,
                          timeout=30), "the run never reached %s" % point
        assert os.path.exists(marker), "the run ended before %s (rc %s)" % (
            point, proc.returncode)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)


def resolve(host, sandbox, name):
    out = host.sandbox_run(sandbox, ["dig", "+short", "+time=1", "+tries=2",
                                     "@127.0.0.11", name], check=False)
    return out.stdout.split() if out.returncode == 0 else None


def ruleset(host, backend):
    cmd = ["nft", "list", "ruleset"] if backend == "nftables" else ["iptables-save"]
    return host.run(cmd).stdout


def firewall_in_sync(host, backend):
    """The engine's own check (run in check mode): the kernel holds exactly the
    store's rules and mappings, nothing missing, nothing extra."""
    return not HostEngine(host, check_mode=True,
                          firewall_backend=backend).restore_firewall().changed


@pytest.fixture(params=["nftables", "iptables"])
def site(request, host):
    """Network ``app`` with sandbox ``client``; ``victim`` joins in each case."""
    eng = HostEngine(host, firewall_backend=request.param)
    eng.network(name="app", ipam={"config": [{"subnet": SUBNET}]})
    eng.endpoint(network="app", sandbox="client")
    return host, eng, request.param


def attach_victim(eng, publish=False):
    eng.endpoint(network="app", sandbox="victim", ipv4_address=VICTIM_IP)
    if publish:
        eng.port_mapping(sandbox="victim", ports=[PORT])


def test_attach_killed_before_dns_resolves_after_the_rerun(site):
    host, eng, backend = site
    task = {"network": "app", "sandbox": "victim", "ipv4_address": VICTIM_IP}
    run_killed_at(host, backend, "attach-before-dns", "endpoint", task)
    rerun = eng.endpoint(task)
    assert rerun.changed
    assert any(a.startswith("repair: DNS") for a in rerun.actions)
    assert eventually(lambda: resolve(host, "client", "victim") == [VICTIM_IP])
    assert resolve(host, "victim", "client")  # 127.0.0.11 answers inside it too
    assert not eng.endpoint(task).changed


def test_detach_killed_before_dns_stops_resolving_after_the_rerun(site):
    host, eng, backend = site
    attach_victim(eng)
    assert resolve(host, "client", "victim") == [VICTIM_IP]
    task = {"network": "app", "sandbox": "victim", "state": "absent"}
    run_killed_at(host, backend, "detach-before-dns", "endpoint", task)
    rerun = eng.endpoint(task)
    assert rerun.changed
    assert eventually(lambda: resolve(host, "client", "victim") == [])
    assert "victim" not in host.sandboxes()
    assert not eng.endpoint(task).changed


def test_check_mode_predicts_the_repair_of_an_interrupted_step(site):
    host, eng, backend = site
    task = {"network": "app", "sandbox": "victim", "ipv4_address": VICTIM_IP}
    run_killed_at(host, backend, "attach-before-dns", "endpoint", task)
    check = HostEngine(host, check_mode=True, firewall_backend=backend).endpoint(task)
    assert check.changed and any(a.startswith("repair: DNS") for a in check.actions)
    assert resolve(host, "client", "victim") == []  # check mode repaired nothing
    assert eng.endpoint(task).changed
    assert not HostEngine(host, check_mode=True, firewall_backend=backend).endpoint(
        task).changed


@pytest.mark.parametrize("point", ["publish-before-firewall"])
def test_publish_killed_before_the_firewall_forwards_after_the_rerun(site, point):
    host, eng, backend = site
    attach_victim(eng)
    task = {"sandbox": "victim", "ports": [PORT]}
    with greeters(host, [80], sandbox="victim", name="victim"):
        run_killed_at(host, backend, point, "port_mapping", task)
        assert "8093" not in ruleset(host, backend)
        rerun = eng.port_mapping(task)
        assert rerun.changed
        assert any(a.startswith("repair: firewall") for a in rerun.actions)
        assert tcp_answer(host, "127.0.0.1", 8093) == "hello from victim 80"
        assert firewall_in_sync(host, backend)
        assert not eng.port_mapping(task).changed


@pytest.mark.parametrize("point, verb, task", [
    ("withdraw-before-firewall", "port_mapping",
     {"sandbox": "victim", "ports": [PORT], "state": "absent"}),
    ("detach-before-firewall", "endpoint",
     {"network": "app", "sandbox": "victim", "state": "absent"}),
])
def test_withdraw_killed_before_the_firewall_stops_forwarding_after_the_rerun(
        site, point, verb, task):
    host, eng, backend = site
    attach_victim(eng, publish=True)
    with greeters(host, [80], sandbox="victim", name="victim"):
        assert tcp_answer(host, "127.0.0.1", 8093) == "hello from victim 80"
        run_killed_at(host, backend, point, verb, task)
        assert "8093" in ruleset(host, backend)  # the stale mapping, for now
        rerun = getattr(eng, verb)(task)
        assert rerun.changed
        assert any(a.startswith("repair: firewall") for a in rerun.actions)
        assert "8093" not in ruleset(host, backend)
        assert tcp_answer(host, "127.0.0.1", 8093) is None
        assert firewall_in_sync(host, backend)
        assert not getattr(eng, verb)(task).changed
