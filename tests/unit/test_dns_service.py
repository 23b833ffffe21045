"""Engine side of the resolver that needs no daemon: install, config, status."""
import json
import os
import stat
import subprocess
import sys
import zipfile

from ansible_collections.cnm.core.plugins.module_utils.dns import server, service

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVER_SRC = open(server.__file__, "rb").read()


def test_install_resolver_copies_the_daemon_once(tmp_path):
    path = service.install_resolver(str(tmp_path))
    assert path == str(tmp_path / "resolver" / "cnm_resolver.py")
    assert open(path, "rb").read() == SERVER_SRC
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    ino = os.stat(path).st_ino
    assert service.install_resolver(str(tmp_path)) == path
    assert os.stat(path).st_ino == ino          # unchanged content: not rewritten


def test_install_resolver_works_from_a_zip_payload_like_ansiballz(tmp_path):
    """In Ansible the engine is imported from a zip: the source must come from there."""
    payload = tmp_path / "payload.zip"
    base = "ansible_collections/cnm/core/plugins/module_utils"
    with zipfile.ZipFile(payload, "w") as z:
        for pkg in ("ansible_collections", "ansible_collections/cnm",
                    "ansible_collections/cnm/core", "ansible_collections/cnm/core/plugins"):
            z.writestr(pkg + "/__init__.py", "")
        for rel in ("__init__.py", "constants.py", "errors.py", "dns/__init__.py",
                    "dns/server.py", "dns/service.py", "dns/files.py"):
            z.write(os.path.join(REPO, "plugins", "module_utils", rel), base + "/" + rel)
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from ansible_collections.cnm.core.plugins.module_utils.dns import service\n"
            "assert service.__file__.startswith(%r), service.__file__\n"
            "print(service.install_resolver(%r))\n"
            % (str(payload), str(payload), str(tmp_path / "state")))
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert open(out.stdout.strip(), "rb").read() == SERVER_SRC


def test_write_resolver_config_is_atomic_private_and_reports_changes(tmp_path):
    cfg = service.resolver_config(
        sandboxes={"web": {"netns": "/run/netns/web", "networks": ["app"]}},
        networks={"app": [{"sandbox": "web", "names": ["Web", "web", "API."],
                           "ipv4": "172.18.0.2", "ipv6": None}]})
    assert service.write_resolver_config(str(tmp_path), cfg) is True
    path = service.resolver_paths(str(tmp_path))["config"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    data = json.load(open(path))
    assert data["version"] == 1 and data["ttl"] == 600 and data["upstream_timeout"] == 1.0
    assert data["networks"]["app"]["endpoints"][0]["names"] == ["web", "api"]
    assert data["sandboxes"]["web"] == {"netns": "/run/netns/web", "networks": ["app"],
                                        "forward": True}
    assert service.write_resolver_config(str(tmp_path), cfg) is False
    cfg["ttl"] = 30
    assert service.write_resolver_config(str(tmp_path), cfg) is True


def test_stale_pidfile_of_another_process_is_not_our_resolver(tmp_path):
    paths = service.resolver_paths(str(tmp_path))
    os.makedirs(paths["dir"])
    assert service.resolver_status(str(tmp_path)) == {"running": False, "pid": None}
    with open(paths["pidfile"], "w") as f:
        f.write("%d\n" % os.getpid())            # alive, but pytest is not the resolver
    assert service.resolver_status(str(tmp_path)) == {"running": False, "pid": None}
    with open(paths["pidfile"], "w") as f:
        f.write("garbage\n")
    assert service.resolver_status(str(tmp_path))["running"] is False
    assert service.stop_resolver(str(tmp_path), use_systemd=False) is False
    assert not os.path.exists(paths["pidfile"])


def test_systemd_unit_runs_the_installed_daemon_and_restarts_it():
    paths = service.resolver_paths("/run/cnm")
    unit = service._systemd_unit("/usr/bin/python3", "/var/lib/cnm/resolver/cnm_resolver.py",
                                 paths)
    assert ("ExecStart=/usr/bin/python3 /var/lib/cnm/resolver/cnm_resolver.py --config "
            "/run/cnm/dns/config.json --pidfile /run/cnm/dns/resolver.pid --log "
            "/run/cnm/dns/resolver.log\n") in unit
    assert "Restart=always" in unit
    assert service._systemd_unit_name("/run/cnm") == "cnm-resolver.service"
    assert service._systemd_unit_name("/tmp/x").startswith("cnm-resolver-")


def test_sandbox_files_are_private_written_only_when_changed_and_removed_with_none(tmp_path):
    frag = service.sandbox_fragment("/run/netns/web", True, {
        "app": {"names": ["Web", "web", "www."], "ipv4": "10.0.0.2", "ipv6": None,
                "seq": 3}})
    assert frag["networks"]["app"]["names"] == ["web", "www"]
    assert service.write_fragment(str(tmp_path), "web", frag) is True
    path = os.path.join(service.resolver_paths(str(tmp_path))["fragments"], "web.json")
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert service.write_fragment(str(tmp_path), "web", frag) is False
    assert service.fragment_names(str(tmp_path)) == ["web"]
    assert service.write_fragment(str(tmp_path), "web", None) is True
    assert service.write_fragment(str(tmp_path), "web", None) is False
    assert service.fragment_names(str(tmp_path)) == []


def test_notify_without_a_resolver_returns_none(tmp_path):
    assert service.notify_resolver(str(tmp_path), ["web"]) is None


def test_the_daemon_agrees_with_the_engine_on_names_it_duplicates():
    """server.py runs on its own, so it repeats some engine constants: they must agree."""
    from ansible_collections.cnm.core.plugins.module_utils import constants as C
    from ansible_collections.cnm.core.plugins.module_utils.dns import server
    assert (server.LISTEN_ADDRESS, server.LISTEN_PORT) == (C.DNS_LISTEN_ADDRESS, C.DNS_PORT)
    assert server.FRAGMENTS_DIR == C.DNS_FRAGMENTS_SUBDIR
    assert server.CONTROL_SOCKET == C.DNS_CONTROL_SOCKET
    assert server.SCRIPT_NAME == C.DNS_RESOLVER_SCRIPT
    paths = service.resolver_paths("/run/cnm")
    assert os.path.dirname(paths["fragments"]) == os.path.dirname(paths["config"])
