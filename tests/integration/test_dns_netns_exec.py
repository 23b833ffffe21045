"""With the default netns_dir (/run/netns), `ip netns exec <sandbox>` uses our files.

Uses a random test-owned sandbox name (cnmt-dnsexec-<suffix>) under /run/netns and
/etc/netns; both are removed in ``finally``.
"""
import os
import subprocess
import sys

import pytest

from harness import in_netns, suffix

from ansible_collections.cnm.core.plugins.module_utils.constants import DNS_ETC_NETNS_DIR
from ansible_collections.cnm.core.plugins.module_utils.dns import files, service

pytestmark = pytest.mark.integration


def test_ip_netns_exec_getent_hosts_resolves_through_the_resolver(host):
    name = "cnmt-dnsexec-%s" % suffix()
    ns_path = os.path.join("/run/netns", name)
    etc_dir = os.path.join(DNS_ETC_NETNS_DIR, name)
    run_files = os.path.join(host.run_dir, "sandboxes", name)
    etc_netns_existed = os.path.isdir(DNS_ETC_NETNS_DIR)
    try:
        open(ns_path, "w").close()
        subprocess.run(["unshare", "--net=%s" % ns_path, "true"], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        cfg = service.resolver_config(
            {name: {"netns": ns_path, "networks": ["app"]}},
            {"app": [{"sandbox": name, "names": [name, "web"], "ipv4": "172.18.0.2"},
                     {"sandbox": "db", "names": ["db"], "ipv4": "172.18.0.3"}]},
            host_resolv_conf=os.path.join(host.root, "absent-resolv.conf"))
        service.write_resolver_config(host.run_dir, cfg)
        with in_netns(host.path):
            service.ensure_resolver(host.state_dir, host.run_dir, python=sys.executable,
                                    use_systemd=False)
        content = files.sandbox_files("web", addresses=["172.18.0.2"],
                                      extra_hosts=files.parse_extra_hosts(["gw:10.0.0.1"]))
        changed = files.write_sandbox_files([run_files, etc_dir], content)
        assert len(changed) == 6
        proc = subprocess.run(["ip", "netns", "exec", name, "sh", "-c",
                               "getent hosts db; getent hosts gw; cat /etc/hostname"],
                              capture_output=True, text=True, timeout=30, check=False)
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout.splitlines()
        assert out[0].split() == ["172.18.0.3", "db"]         # from the resolver
        assert out[1].split() == ["10.0.0.1", "gw"]           # from our hosts file
        assert out[2] == "web"
    finally:
        files.remove_sandbox_files([etc_dir, run_files])
        if not etc_netns_existed:
            try:
                os.rmdir(DNS_ETC_NETNS_DIR)
            except OSError:
                pass
        subprocess.run(["umount", "-l", ns_path], stderr=subprocess.DEVNULL, check=False)
        if os.path.exists(ns_path):
            os.unlink(ns_path)
    assert not os.path.exists(etc_dir)
