"""Engine side of the resolver that needs no daemon: install, config, status."""
import ast
import json
import os
import stat
import subprocess
import sys
import time
import zipfile

from ansible_collections.cnm.core.plugins.module_utils.dns import resolver, service

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE_DIR = os.path.dirname(resolver.__file__)
PACKAGE_FILES = {name: open(os.path.join(PACKAGE_DIR, name), "rb").read()
                 for name in os.listdir(PACKAGE_DIR) if name.endswith(".py")}


def installed_tree(state_dir):
    d = os.path.join(state_dir, "resolver", "resolver")
    return {name: open(os.path.join(d, name), "rb").read()
            for name in os.listdir(d) if name.endswith(".py")}


def test_install_resolver_copies_the_daemon_once(tmp_path):
    path = service.install_resolver(str(tmp_path))
    assert path == str(tmp_path / "resolver" / "cnm-resolver.py")
    assert open(path).read() == service.RUNNER
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
        for rel in ("__init__.py", "constants.py", "errors.py", "validation.py",
                    "dns/__init__.py", "dns/service.py", "dns/resolver_client.py",
                    "dns/resolver_process.py",
                    "dns/files.py"):
            z.write(os.path.join(REPO, "plugins", "module_utils", rel), base + "/" + rel)
        for name in PACKAGE_FILES:
            z.write(os.path.join(PACKAGE_DIR, name), base + "/dns/resolver/" + name)
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from ansible_collections.cnm.core.plugins.module_utils.dns import service\n"
            "assert service.__file__.startswith(%r), service.__file__\n"
            "print(service.install_resolver(%r))\n"
            % (str(payload), str(payload), str(tmp_path / "state")))
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert open(out.stdout.strip()).read() == service.RUNNER
    assert installed_tree(str(tmp_path / "state")) == PACKAGE_FILES


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
    unit = service._systemd_unit("/usr/bin/python3", "/var/lib/cnm/resolver/cnm-resolver.py",
                                 paths)
    assert ("ExecStart=/usr/bin/python3 /var/lib/cnm/resolver/cnm-resolver.py --config "
            "/run/cnm/dns/config.json --pidfile /run/cnm/dns/resolver.pid --log "
            "/run/cnm/dns/resolver.log\n") in unit
    assert "Restart=always" in unit
    assert service._systemd_unit_name("/run/cnm") == "cnm-resolver.service"
    assert service._systemd_unit_name("/tmp/x").startswith("cnm-resolver-")


def test_a_systemd_start_waits_for_the_first_load_not_only_the_pidfile(tmp_path):
    """The daemon writes its pidfile before its first config load; a ``reload`` on the
    control socket is answered only after that load. Here a stand-in daemon answers
    after 0.3 s: the wait returns True then, and False when nobody listens."""
    import socket
    import threading
    from ansible_collections.cnm.core.plugins.module_utils.dns import resolver_process
    paths = service.resolver_paths(str(tmp_path))
    os.makedirs(paths["dir"])
    t0 = time.monotonic()
    assert resolver_process._wait_serving(str(tmp_path), 0.3) is False
    assert time.monotonic() - t0 < 2.0
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.bind(paths["control"])
    sock.listen(1)
    seen = []

    def serve():
        conn, dummy = sock.accept()
        with conn:
            seen.append(json.loads(conn.recv(4096)))
            time.sleep(0.3)                  # the first load
            conn.send(json.dumps({"ok": True, "listening": [], "errors": {}}).encode())

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    t0 = time.monotonic()
    assert resolver_process._wait_serving(str(tmp_path), 5.0) is True
    assert time.monotonic() - t0 >= 0.25
    assert seen == [{"op": "reload", "sandboxes": []}]
    th.join(2)
    sock.close()


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
    """The daemon runs on its own, so it repeats some engine constants: they must agree."""
    from ansible_collections.cnm.core.plugins.module_utils import constants as C
    from ansible_collections.cnm.core.plugins.module_utils.dns.resolver import (
        catalog, config, control, forwarder, listeners,
    )
    assert (listeners.LISTEN_ADDRESS, listeners.LISTEN_PORT) == (C.DNS_LISTEN_ADDRESS,
                                                                 C.DNS_PORT)
    assert config.FRAGMENTS_DIR == C.DNS_FRAGMENTS_SUBDIR
    assert control.CONTROL_SOCKET == C.DNS_CONTROL_SOCKET
    assert os.path.basename(PACKAGE_DIR) == C.DNS_RESOLVER_PACKAGE
    assert catalog.DEFAULT_TTL == C.DNS_TTL
    assert forwarder.DEFAULT_UPSTREAM_TIMEOUT == C.DNS_UPSTREAM_TIMEOUT
    assert forwarder.DEFAULT_HOST_RESOLV_CONF == C.DNS_HOST_RESOLV_CONF
    paths = service.resolver_paths("/run/cnm")
    assert os.path.dirname(paths["fragments"]) == os.path.dirname(paths["config"])


def test_installed_tree_equals_the_package_and_a_second_install_changes_nothing(tmp_path):
    state = str(tmp_path)
    base = tmp_path / "resolver"
    legacy = base / "cnm_resolver.py"
    os.makedirs(str(base))
    legacy.write_text("# the single-file daemon of an older release\n")
    runner, changed = service._install(state)
    assert changed is True and not legacy.exists()
    assert installed_tree(state) == PACKAGE_FILES
    assert sorted(os.listdir(str(base))) == ["cnm-resolver.py", "resolver"]  # no temp dirs
    pkg = base / "resolver"
    assert stat.S_IMODE(os.stat(str(pkg)).st_mode) == 0o755
    assert {stat.S_IMODE(os.stat(str(pkg / n)).st_mode) for n in PACKAGE_FILES} == {0o644}
    before = {n: os.stat(str(pkg / n)) for n in os.listdir(str(pkg))}
    before[""] = os.stat(str(pkg))
    assert service._install(state) == (runner, False)
    after = {n: os.stat(str(pkg / n)) for n in os.listdir(str(pkg))}
    after[""] = os.stat(str(pkg))
    assert {n: (st.st_ino, st.st_mtime_ns) for n, st in after.items()} == \
        {n: (st.st_ino, st.st_mtime_ns) for n, st in before.items()}
    # an edited or stray file counts as a change: the whole tree is put back
    (pkg / "wire.py").write_bytes(b"# edited\n")
    (pkg / "stray.py").write_bytes(b"")
    assert service._install(state) == (runner, True)
    assert installed_tree(state) == PACKAGE_FILES
    assert sorted(os.listdir(str(base))) == ["cnm-resolver.py", "resolver"]


def test_the_package_files_are_all_listed_and_all_imported_for_ansiballz():
    """AnsiballZ ships only what a module imports: every module of the package must be
    named in RESOLVER_MODULES (read as data) and imported by _import_resolver."""
    modules = sorted(n[:-3] for n in PACKAGE_FILES if n != "__init__.py")
    assert list(service.RESOLVER_MODULES) == modules
    tree = ast.parse(open(service.__file__).read())
    func = [n for n in tree.body if isinstance(n, ast.FunctionDef)
            and n.name == "_import_resolver"][0]
    imported = sorted(alias.name for node in ast.walk(func)
                      if isinstance(node, ast.ImportFrom) and node.module == "resolver"
                      for alias in node.names)
    assert imported == modules
    assert [m.__name__.rpartition(".")[2] for m in service._import_resolver()[1:]] == modules
    assert service._resolver_files() == PACKAGE_FILES


def test_the_installed_runner_runs_the_installed_package_from_any_directory(tmp_path):
    runner = service.install_resolver(str(tmp_path / "state"))
    env = dict(os.environ, PYTHONSAFEPATH="1")
    env.pop("PYTHONPATH", None)
    out = subprocess.run([sys.executable, runner, "--help"], capture_output=True, text=True,
                         cwd="/", env=env, timeout=60, check=False)
    assert out.returncode == 0 and "--pidfile" in out.stdout, out.stderr


def test_both_the_runner_and_the_single_file_daemon_of_older_releases_are_ours(tmp_path):
    paths = service.resolver_paths(str(tmp_path))
    os.makedirs(paths["dir"])
    for script, legacy in (("/var/lib/cnm/resolver/cnm-resolver.py", False),
                           ("/var/lib/cnm/resolver/cnm_resolver.py", True)):
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", script,
                                 "--pidfile", paths["pidfile"]])
        try:
            with open(paths["pidfile"], "w") as f:
                f.write("%d\n" % proc.pid)
            deadline = time.monotonic() + 10
            while not service._is_ours(proc.pid, paths["pidfile"]):
                assert time.monotonic() < deadline, "cmdline never showed up"
                time.sleep(0.01)
            assert service.resolver_status(str(tmp_path)) == {"running": True,
                                                              "pid": proc.pid}
            assert service._runs_legacy(proc.pid, paths["pidfile"]) is legacy
        finally:
            proc.kill()
            proc.wait()
