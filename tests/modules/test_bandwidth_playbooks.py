"""cnm_endpoint ``bandwidth`` through ansible-playbook: suboptions, idempotency, check mode
prediction, removal with ``{}`` and a bad value naming its field."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "integration"))

from ansible_runner import run_playbook  # noqa: E402

PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - name: network
      cnm.core.cnm_network: {name: bw, ipam: {config: [{subnet: 10.91.0.0/24}]}}
    - name: limited
      cnm.core.cnm_endpoint:
        network: bw
        sandbox: web
        bandwidth: %s
"""


def _root_kinds(host, dev):
    return [q["kind"] for q in json.loads(host.run("tc -j qdisc show dev " + dev).stdout)
            if q.get("root")]


def test_bandwidth_option_through_a_playbook(host):
    limits = "{egress_rate: 10mbit, ingress_rate: 20000000, ingress_burst: 64kb}"
    first = run_playbook(host, PLAY % limits, diff=True)
    first.assert_ok()
    endpoint = first["limited"]["endpoint"]
    assert endpoint["Bandwidth"] == {"egress_rate": 10000000, "egress_burst": 16384,
                                     "ingress_rate": 20000000, "ingress_burst": 65536}
    assert _root_kinds(host, endpoint["HostInterfaceName"]) == ["tbf"]
    again = run_playbook(host, PLAY % limits)
    again.assert_ok()
    assert again.changed_tasks == [], again.explain()
    host.run("tc qdisc del dev %s root" % endpoint["HostInterfaceName"])
    check = run_playbook(host, PLAY % limits, check=True)
    assert check.changed_tasks == ["limited"], check.explain()
    assert _root_kinds(host, endpoint["HostInterfaceName"]) == ["noqueue"]
    repaired = run_playbook(host, PLAY % limits)
    assert repaired.changed_tasks == ["limited"], repaired.explain()
    assert _root_kinds(host, endpoint["HostInterfaceName"]) == ["tbf"]
    removed = run_playbook(host, PLAY % "{}")
    assert removed.changed_tasks == ["limited"], removed.explain()
    assert removed["limited"]["endpoint"]["Bandwidth"] == {}
    assert _root_kinds(host, endpoint["HostInterfaceName"]) == ["noqueue"]
    bad = run_playbook(host, PLAY % "{egress_rate: 10 furlongs}")
    assert bad.failed_tasks == ["limited"]
    assert "bandwidth.egress_rate" in bad["limited"]["msg"]
