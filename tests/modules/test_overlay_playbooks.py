"""Overlay networks through real playbooks on a simulated fleet (4 hosts, 3 etcd members).

Each host is reached with the cnm.core.nsenter connection and has its own state; the
cluster store and the advertise address reach the modules through CNM_CLUSTER_STORE and
CNM_ADVERTISE_ADDRESS. Many playbook runs go at once, on every host, as a fleet rollout
does; the cluster's IPAM must never hand out one address twice, not even while the etcd
leader is killed under them.
"""
import concurrent.futures
import threading
import time

import pytest

from ansible_runner import run_playbook
from cluster_harness import EtcdCluster
from harness import suffix

from ansible_collections.cnm.core.plugins.module_utils.cluster import agent_service

ATTACH = """
- hosts: all
  gather_facts: false
  tasks:
    - name: overlay network
      cnm.core.cnm_network:
        name: "{{ net }}"
        driver: overlay
    - name: attach
      cnm.core.cnm_endpoint:
        sandbox: "{{ prefix }}-{{ item }}"
        network: "{{ net }}"
      loop: [1, 2, 3, 4, 5]
"""


@pytest.fixture(scope="module")
def fleet():
    with EtcdCluster(members=3, extra_hosts=4, election_ms=1000) as cluster:
        try:
            yield cluster
        finally:
            for host in cluster.hosts:
                agent_service.stop_agent(host.run_dir)


def _lan_ip(host):
    return host.ip_json("addr show dev lan0")[0]["addr_info"][0]["local"]


def _env(fleet, host):
    return {"CNM_CLUSTER_STORE": ",".join(fleet.endpoints),
            "CNM_ADVERTISE_ADDRESS": _lan_ip(host)}


def _run(fleet, host, net, prefix, check=False):
    return run_playbook(host, ATTACH, extra_vars={"net": net, "prefix": prefix},
                        env=_env(fleet, host), check=check, timeout=300)


def _addresses(result):
    try:
        return [r["endpoint"]["IPAddress"] for r in result["attach"]["results"]]
    except KeyError:
        return []


def _eight_runs(fleet, net, during=None):
    """8 playbook runs, 2 per host, at once; ``during`` is called 1.5 s in."""
    jobs = [(host, "r%d" % (2 * i + k)) for i, host in enumerate(fleet.hosts) for k in (0, 1)]
    timer = threading.Timer(1.5, during) if during else None
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(_run, fleet, host, net, prefix) for host, prefix in jobs]
        if timer:
            timer.start()
        results = [f.result() for f in futures]
    if timer:
        timer.join()
    return jobs, results


def _cleanup(fleet, net):
    remove = """
- hosts: all
  gather_facts: false
  tasks:
    - cnm.core.cnm_network: {name: "{{ net }}", state: absent, force: true}
"""
    for host in fleet.hosts:
        run_playbook(host, remove, extra_vars={"net": net}, env=_env(fleet, host))


def test_eight_runs_on_four_hosts_get_forty_distinct_addresses(fleet):
    net = "ov-%s" % suffix()
    try:
        jobs, results = _eight_runs(fleet, net)
        addresses = []
        for result in results:
            result.assert_ok()
            addresses += _addresses(result)
        assert len(addresses) == 40 and len(set(addresses)) == 40
        # every host again: nothing to change
        again = _run(fleet, fleet.hosts[0], net, "r0").assert_ok()
        assert again.changed_tasks == []
    finally:
        _cleanup(fleet, net)


def test_killing_the_etcd_leader_mid_run_gives_no_duplicates_and_a_rerun_converges(fleet):
    net = "ov-%s" % suffix()
    killed = []
    try:
        jobs, results = _eight_runs(fleet, net, during=lambda: killed.append(
            fleet.kill_leader()))
        assert killed
        addresses = []
        for (host, prefix), result in zip(jobs, results):
            if not result.ok:
                # a clear error, never a traceback
                assert "Traceback" not in result.stdout + result.stderr, result.explain()
            addresses += _addresses(result)
        assert len(addresses) == len(set(addresses)), addresses
        fleet.restart(killed[0])
        final = []
        for (host, prefix), result in zip(jobs, results):
            rerun = _run(fleet, host, net, prefix).assert_ok()
            final += _addresses(rerun)
        assert len(final) == 40 and len(set(final)) == 40
    finally:
        if killed and not killed[0].running:
            fleet.restart(killed[0])
        _cleanup(fleet, net)


def test_check_mode_on_a_fresh_fleet_predicts_the_changes_and_creates_nothing(fleet):
    net = "ov-%s" % suffix()
    host = fleet.hosts[0]
    result = _run(fleet, host, net, "chk", check=True).assert_ok()
    assert result.changed_tasks == ["overlay network", "attach"]
    links = [link["ifname"] for link in host.ip_json("link show")]
    assert not [link for link in links if link.startswith(("ov-", "vx-"))]
    assert not [s for s in host.sandboxes() if s.startswith("chk")]
    time.sleep(0)  # no etcd key either: the next run still creates the definition
    made = _run(fleet, host, net, "chk").assert_ok()
    assert "create global network" in " ".join(made["overlay network"]["actions"])
    _cleanup(fleet, net)
