"""The cnm.core.nsenter connection runs tasks inside the simulated host's namespace."""
import json

from ansible_runner import run_playbook

PLAYBOOK = """
- name: Look around inside the simulated host
  hosts: all
  gather_facts: false
  tasks:
    - name: List links
      ansible.builtin.command: ip -j link
      changed_when: false

    - name: Read the namespace the task runs in
      ansible.builtin.command: readlink /proc/self/ns/net
      changed_when: false
"""


def test_tasks_run_inside_the_host_namespace_and_see_only_lo(host):
    result = run_playbook(host, PLAYBOOK).assert_ok()

    links = json.loads(result["List links"]["stdout"])
    assert [link["ifname"] for link in links] == ["lo"], result.explain()

    host_ns = host.run("readlink /proc/self/ns/net").stdout.strip()
    assert result["Read the namespace the task runs in"]["stdout"].strip() == host_ns
    assert result.changed_tasks == []


def test_a_missing_namespace_makes_the_host_unreachable(host):
    class Gone:
        name = host.name + "-gone"
        path = host.path + "-gone"
        state_dir, run_dir, netns_dir = host.state_dir, host.run_dir, host.netns_dir

    result = run_playbook(Gone(), PLAYBOOK)

    assert result.rc != 0
    assert result.failed_tasks == ["List links"]
    assert "does not exist" in result.task("List links").msg
