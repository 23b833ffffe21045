"""Compatibility smoke test: tests/compat/smoke.yml with the ansible-core of this venv.

`make compat` runs this file twice, with .venv-2.18/bin/pytest (ansible-core 2.18) and with
.venv/bin/pytest (2.19): ansible-playbook is taken from the directory of the Python that
runs the test, and the modules run with that same Python. The environment variable
``CNM_COMPAT_ANSIBLE`` (for example ``2.18``), when set, must match the ansible-core found,
so a wrong venv fails instead of testing the other version twice.

The managed host and a client host are throwaway network namespaces joined by a veth
"LAN" (tests/harness.py); the ``make_host`` fixture removes both, with every sandbox and
process in them, also when the test fails.
"""
import json
import os
import re
import subprocess
import sys
import tempfile

import pytest

from harness import connect, eventually, greeters, tcp_answer

pytestmark = pytest.mark.modules

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLAYBOOK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "smoke.yml")
BIN = os.path.dirname(sys.executable)
ANSIBLE_PLAYBOOK = os.path.join(BIN, "ansible-playbook")
HOST_IP, CLIENT_IP = "192.168.79.1", "192.168.79.2"
WEB, API = "10.87.0.10", "10.87.0.11"
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)",
                   re.M)


def ansible_core_version():
    """The ansible-core version of this venv's ansible-playbook, e.g. ``2.18.19``."""
    out = subprocess.run([ANSIBLE_PLAYBOOK, "--version"], capture_output=True, text=True,
                         check=True).stdout
    return re.search(r"\[core ([0-9.]+)", out).group(1)


def play(host, **extra_vars):
    """Run the smoke play against ``host``; return (recap dict, output). Never raises."""
    with tempfile.TemporaryDirectory(prefix="cnm-compat-") as tmp:
        inventory = os.path.join(tmp, "inventory.json")
        with open(inventory, "w") as f:
            json.dump({"all": {"hosts": {host.name: {
                "ansible_connection": "cnm.core.nsenter",
                "ansible_host": host.path,
                "ansible_python_interpreter": sys.executable,
                "cnm_state_dir": host.state_dir,
                "cnm_run_dir": host.run_dir,
                "cnm_netns_dir": host.netns_dir,
            }}}}, f)
        argv = [ANSIBLE_PLAYBOOK, "-i", inventory, PLAYBOOK, "-e", json.dumps(extra_vars)]
        env = dict(os.environ)
        env.update({
            "ANSIBLE_CONFIG": os.path.join(REPO, "ansible.cfg"),
            "ANSIBLE_COLLECTIONS_PATH": os.path.join(REPO, "build", "collections"),
            "ANSIBLE_LOCAL_TEMP": os.path.join(tmp, "local-tmp"),
            "ANSIBLE_REMOTE_TEMP": os.path.join(tmp, "remote-tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "PATH": BIN + os.pathsep + env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        })
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=600, check=False)
    output = "rc=%d\n%s\n%s" % (proc.returncode, proc.stdout[-6000:], proc.stderr[-3000:])
    recap = {m.group(1): {"ok": int(m.group(2)), "changed": int(m.group(3)),
                          "unreachable": int(m.group(4)), "failed": int(m.group(5))}
             for m in RECAP.finditer(proc.stdout)}
    assert proc.returncode == 0 and host.name in recap, output
    # meta/runtime.yml's requires_ansible must admit this ansible-core
    assert "does not support Ansible version" not in proc.stderr, output
    return recap[host.name], output


def links(host):
    return sorted(link["ifname"] for link in host.ip_json("link"))


def test_smoke_play(make_host):
    version = ansible_core_version()
    wanted = os.environ.get("CNM_COMPAT_ANSIBLE")
    if wanted:
        assert version == wanted or version.startswith(wanted + "."), (version, wanted)
    print("ansible-core %s, %s" % (version, ANSIBLE_PLAYBOOK))
    host, client = make_host("cmp"), make_host("cmc")
    connect(host, client, HOST_IP, CLIENT_IP)

    first, output = play(host)
    assert first["changed"] >= 4 and first["failed"] == 0, output
    assert host.sandboxes() == ["api", "web"]
    assert "cnm-smoke" in links(host)
    assert host.ping(WEB, sandbox="api"), "api cannot ping web"
    assert host.ping(API, sandbox="web"), "web cannot ping api"
    with greeters(host, [80], sandbox="web"):
        assert tcp_answer(client, HOST_IP, 8080) == "hello from web 80"

    second, output = play(host)
    assert second["changed"] == 0, output

    removed, output = play(host, smoke_state="absent")
    assert removed["changed"] >= 3 and removed["failed"] == 0, output
    assert host.sandboxes() == []
    # a removed namespace takes its veth with it a few milliseconds later (the kernel)
    assert eventually(lambda: links(host) == ["lan0", "lo"]), links(host)
    assert tcp_answer(client, HOST_IP, 8080) is None
    assert "cnm" not in host.run("nft list ruleset").stdout.lower()
