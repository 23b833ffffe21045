"""cnm.core.cnm_prune in real ansible-playbook runs: check mode predicts, the first run
removes, the second finds nothing; a bad filter fails the task and removes nothing."""
from ansible_runner import run_playbook

SETUP = """
- hosts: all
  gather_facts: false
  tasks:
    - name: test networks
      cnm.core.cnm_network:
        name: "{{ item.name }}"
        labels: "{{ item.labels }}"
        driver_options: {com.docker.network.bridge.name: "cnmp-{{ item.name }}"}
        ipam: {config: [{subnet: "{{ item.subnet }}"}]}
      loop:
        - {name: t1, labels: {env: test}, subnet: 10.95.1.0/24}
        - {name: t2, labels: {env: test}, subnet: 10.95.2.0/24}
        - {name: p1, labels: {env: prod}, subnet: 10.95.3.0/24}
        - {name: used, labels: {env: test}, subnet: 10.95.4.0/24}
    - name: web on used
      cnm.core.cnm_endpoint: {network: used, sandbox: web}
"""

PRUNE = """
- hosts: all
  gather_facts: false
  tasks:
    - name: prune test networks
      cnm.core.cnm_prune:
        networks: true
        networks_filters:
          label: env=test
          until: "%s"
        sandboxes: true
"""


def bridges(host):
    return sorted(link["ifname"] for link in host.ip_json("link")
                  if link["ifname"].startswith("cnmp-"))


def test_check_mode_predicts_the_first_run_removes_the_second_changes_nothing(host):
    run_playbook(host, SETUP).assert_ok()
    everything = ["cnmp-p1", "cnmp-t1", "cnmp-t2", "cnmp-used"]
    assert bridges(host) == everything
    prune = PRUNE % "-1m"  # created before one minute from now: all of them

    checked = run_playbook(host, prune, check=True, diff=True).assert_ok()
    task = checked["prune test networks"]
    assert task["changed"] and task["networks"] == ["t1", "t2"] and task["sandboxes"] == []
    assert task["diff"]["after"]["networks"] == ["p1", "used"]
    assert bridges(host) == everything

    first = run_playbook(host, prune, diff=True).assert_ok()
    assert first["prune test networks"]["networks"] == ["t1", "t2"]
    assert first.changed_tasks == ["prune test networks"]
    assert first["prune test networks"]["diff"] == task["diff"]
    assert bridges(host) == ["cnmp-p1", "cnmp-used"]

    second = run_playbook(host, prune).assert_ok()
    assert second.changed_tasks == [], second.explain()
    assert second["prune test networks"]["networks"] == []
    assert not run_playbook(host, prune, check=True).changed_tasks


def test_until_in_the_past_keeps_the_new_networks(host):
    run_playbook(host, SETUP).assert_ok()
    result = run_playbook(host, PRUNE % "1h").assert_ok()
    assert result.changed_tasks == []
    assert len(bridges(host)) == 4


def test_a_bad_filter_fails_the_task_naming_the_field_and_removes_nothing(host):
    run_playbook(host, SETUP).assert_ok()
    result = run_playbook(host, PRUNE % "last tuesday")
    task = result.task("prune test networks")
    assert task.failed
    assert task.msg.startswith("networks_filters.until: 'last tuesday' is not a Go duration")
    assert "Traceback" not in task.msg
    assert len(bridges(host)) == 4
