"""cnm_dns through real ansible-playbook runs: idempotency, check mode with diff, and
what a workload in a sandbox sees afterwards (dig @127.0.0.11, getent via resolv.conf).

One simulated host for the whole file (the play runs once, ~10 s); the tests after the
first read it or make check-mode runs that must leave it as it was.
"""
import glob
import os
import sqlite3

import pytest
import yaml

from ansible_runner import run_playbook
from harness import SimHost

SUBNET = "10.70.0.0/24"
WEB, CLIENT = "10.70.0.10", "10.70.0.20"

PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - name: network
      cnm.core.cnm_network: {name: app, ipam: {config: [{subnet: %(subnet)s}]}}
    - name: web
      cnm.core.cnm_endpoint: {network: app, sandbox: web, ipv4_address: %(web)s,
                              aliases: [www]}
    - name: client
      cnm.core.cnm_endpoint: {network: app, sandbox: client, ipv4_address: %(client)s}
    - name: resolver
      cnm.core.cnm_dns: {upstreams: [127.0.0.53], ttl: %(ttl)d}
    - name: web names
      cnm.core.cnm_dns:
        sandbox: web
        hostname: web01
        search: [corp.test]
        extra_hosts: ["legacy:192.0.2.1"]
    - name: client names
      cnm.core.cnm_dns:
        sandbox: client
        hostname: client01
        search: [corp.test]
        extra_hosts: %(client_hosts)s
"""


def play(ttl=60, client_hosts='["gw:192.0.2.254"]'):
    return PLAY % {"subnet": SUBNET, "web": WEB, "client": CLIENT, "ttl": ttl,
                   "client_hosts": client_hosts}


def sandbox_file(host, sandbox, name):
    return os.path.join(host.run_dir, "sandboxes", sandbox, name)


def on_disk(host):
    """Name files, resolver config and the whole store."""
    out = {}
    for path in sorted(glob.glob(os.path.join(host.run_dir, "**"), recursive=True)):
        if os.path.isfile(path) and not path.endswith((".log", ".pid")):
            with open(path) as f:
                out[os.path.relpath(path, host.run_dir)] = f.read()
    conn = sqlite3.connect(os.path.join(host.state_dir, "cnm.db"))
    try:
        out["store"] = list(conn.iterdump())
    finally:
        conn.close()
    return out


def dig(host, sandbox, *args):
    proc = host.sandbox_run(sandbox, ["dig", "+time=3", "+tries=1", "@127.0.0.11"]
                            + list(args), check=False, timeout=15)
    return proc.stdout


def in_sandbox_with_its_files(host, sandbox, cmd):
    """``cmd`` in ``sandbox`` with its written resolv.conf and hosts bind-mounted over
    /etc's (what ``ip netns exec`` does with /etc/netns/<name>), in a private mount
    namespace."""
    mounts = " && ".join("mount --bind %s /etc/%s" % (sandbox_file(host, sandbox, f), f)
                         for f in ("resolv.conf", "hosts"))
    proc = host.sandbox_run(sandbox, ["unshare", "--mount", "sh", "-c",
                                      "%s && %s" % (mounts, cmd)], check=False, timeout=20)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def played():
    """A simulated host on which PLAY ran once: (host, first run's result)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    host = SimHost("dnsplay")
    try:
        first = run_playbook(host, play(), diff=True)
        yield host, first
    finally:
        host.close()


def test_first_run_changes_every_task_second_run_none(played):
    host, first = played
    first.assert_ok()
    assert first.changed_tasks == [t.name for t in first.tasks], first.explain()
    assert first["resolver"]["resolver"]["running"] is True
    assert first["resolver"]["resolver"]["upstreams"] == ["127.0.0.53"]
    assert first["client names"]["sandbox"]["dns"]["hostname"] == "client01"
    second = run_playbook(host, play(), diff=True)
    second.assert_ok()
    assert second.changed_tasks == [], second.explain()
    assert second["resolver"]["resolver"]["pid"] == first["resolver"]["resolver"]["pid"]


def test_written_files_hold_the_settings(played):
    host = played[0]
    with open(sandbox_file(host, "client", "resolv.conf")) as f:
        resolv = f.read()
    assert "nameserver 127.0.0.11" in resolv and "ndots:0" in resolv
    assert "search corp.test" in resolv
    assert "127.0.0.53" not in resolv          # upstreams are the resolver's, not the file's
    with open(sandbox_file(host, "client", "hosts")) as f:
        hosts = f.read().split("\n")
    assert ["192.0.2.254", "gw"] in [line.split() for line in hosts]
    with open(sandbox_file(host, "client", "hostname")) as f:
        assert f.read().strip() == "client01"


def test_dig_from_a_sandbox_answers_the_other_sandbox(played):
    host = played[0]
    for name, want in (("web", WEB), ("web01", WEB), ("www", WEB), ("web.app", WEB)):
        out = dig(host, "client", "+noall", "+answer", name)
        assert out.split()[4:5] == [want], (name, out)
        assert out.split()[1] == "60", out          # the ttl the play set
    assert dig(host, "web", "+short", "client01").split() == [CLIENT]
    assert dig(host, "web", "+short", "-x", CLIENT).split() == ["client.app."]


def test_resolution_through_the_written_resolv_conf(played):
    host = played[0]
    out = in_sandbox_with_its_files(host, "client",
                                    "getent hosts web; getent hosts www; getent hosts gw; "
                                    "getent hosts client01")
    lines = [line.split() for line in out.splitlines()]
    assert lines[0] == [WEB, "web"]                  # from the resolver
    assert lines[1] == [WEB, "www"]
    assert lines[2] == ["192.0.2.254", "gw"]        # from the written hosts file
    assert lines[3][0] == CLIENT and "client01" in lines[3]


def test_check_diff_of_a_changed_setting_shows_the_files_and_writes_nothing(played):
    host = played[0]
    before = on_disk(host)
    pid = played[1]["resolver"]["resolver"]["pid"]
    changed = play(ttl=30, client_hosts='["gw:192.0.2.254", "backup:192.0.2.99"]')
    checked = run_playbook(host, changed, check=True, diff=True)
    checked.assert_ok()
    assert checked.changed_tasks == ["resolver", "client names"], checked.explain()
    diff = checked["client names"]["diff"]
    path = "file:" + sandbox_file(host, "client", "hosts")
    assert path in diff["before"] and path in diff["after"], diff
    assert "192.0.2.99" not in diff["before"][path]
    assert "192.0.2.99\tbackup" in diff["after"][path] or \
        "192.0.2.99 backup" in diff["after"][path], diff["after"][path]
    assert diff["before"][path] == before["sandboxes/client/hosts"]
    assert diff["before"]["sandbox.extra_hosts"] == [["gw", "192.0.2.254"]]
    assert diff["after"]["sandbox.extra_hosts"] == [["gw", "192.0.2.254"],
                                                    ["backup", "192.0.2.99"]]
    ttl = checked["resolver"]["diff"]
    assert (ttl["before"]["resolver.ttl"], ttl["after"]["resolver.ttl"]) == (60, 30)
    assert "192.0.2.99" in checked.stdout           # ansible printed the diff
    assert on_disk(host) == before
    assert checked["resolver"]["resolver"]["pid"] == pid
    out = dig(host, "client", "+noall", "+answer", "web")
    assert out.split()[1] == "60", out              # the resolver kept the old ttl


BAD = [
    ("upstream not an address", {"cnm.core.cnm_dns": {"upstreams": ["127.0.0.53", "dns1"]}},
     "upstreams[1]"),
    ("alias with a space", {"cnm.core.cnm_endpoint": {"network": "app", "sandbox": "web",
                                                      "aliases": ["www", "my web"]}},
     "aliases[1]"),
    ("extra host without ip", {"cnm.core.cnm_dns": {"sandbox": "client", "hostname": "c2",
                                                    "extra_hosts": ["gw"]}},
     "extra_hosts[0]"),
]


def test_bad_input_fails_naming_the_field_and_writes_nothing(played):
    host = played[0]
    before = on_disk(host)
    tasks = [dict(task, name=name, ignore_errors=True) for name, task, dummy in BAD]
    res = run_playbook(host, yaml.safe_dump([{"hosts": "all", "gather_facts": False,
                                              "tasks": tasks}]))
    for name, dummy, field in BAD:
        task = res.task(name)
        assert task.failed and not task.changed, (name, res.explain())
        assert task.msg.startswith(field + ":"), (name, task.msg)
        assert "Traceback" not in task.msg
    assert on_disk(host) == before
