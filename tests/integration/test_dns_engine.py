"""The embedded DNS as users meet it: sandboxes made by the engine, real dig/getent."""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from engine_helpers import HostEngine
from harness import eventually, in_netns
from ansible_collections.cnm.core.plugins.module_utils.errors import CnmError


def dig(host, sandbox, *args):
    proc = host.sandbox_run(sandbox, ["dig", "+short", "+time=2", "+tries=1",
                                      "@127.0.0.11"] + list(args), check=False)
    return proc.stdout.split()


@pytest.fixture
def app(host):
    eng = HostEngine(host)
    eng.network(name="app", ipam={"config": [{"subnet": "10.60.0.0/24"}]})
    eng.network(name="admin", ipam={"config": [{"subnet": "10.61.0.0/24"}]})
    eng.endpoint(network="app", sandbox="web", ipv4_address="10.60.0.10", aliases=["www"])
    eng.endpoint(network="app", sandbox="db", ipv4_address="10.60.0.20")
    eng.endpoint(network="app", sandbox="client")
    eng.endpoint(network="admin", sandbox="other")
    return eng


def test_names_aliases_and_ptr_resolve_only_on_shared_networks(host, app):
    assert dig(host, "client", "web") == ["10.60.0.10"]
    assert dig(host, "client", "web.app") == ["10.60.0.10"]
    assert dig(host, "client", "WWW") == ["10.60.0.10"]
    assert dig(host, "client", "-x", "10.60.0.10") == ["web.app."]
    assert dig(host, "other", "web") == []
    resolv = os.path.join(host.run_dir, "sandboxes", "client", "resolv.conf")
    text = open(resolv).read()
    assert "nameserver 127.0.0.11" in text and "ndots:0" in text
    out = host.sandbox_run("client", ["unshare", "--mount", "sh", "-c",
                                      "mount --bind %s /etc/resolv.conf && getent hosts db"
                                      % resolv]).stdout
    assert out.split()[0] == "10.60.0.20"


def test_removed_endpoint_stops_resolving_with_the_same_resolver(host, app):
    pid_before = app.dns().data["resolver"]["pid"]
    app.endpoint(network="app", sandbox="db", state="absent")
    assert eventually(lambda: dig(host, "client", "db") == [], timeout=1.0)
    assert app.dns().data["resolver"]["pid"] == pid_before


def test_killed_resolver_is_restarted_by_the_next_run(host, app):
    pid = app.dns().data["resolver"]["pid"]
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.1)
    app.network(name="app", ipam={"config": [{"subnet": "10.60.0.0/24"}]})
    new_pid = app.dns().data["resolver"]["pid"]
    assert new_pid and new_pid != pid
    assert dig(host, "client", "web") == ["10.60.0.10"]


def test_dns_settings_change_the_sandbox_files(host, app):
    res = app.dns(sandbox="client", hostname="client01", extra_hosts=["legacy:10.9.9.9"],
                  search=["example.test"])
    assert res.changed
    hosts = open(os.path.join(host.run_dir, "sandboxes", "client", "hosts")).read()
    assert "10.9.9.9\tlegacy" in hosts or "10.9.9.9 legacy" in hosts
    assert not app.dns(sandbox="client", hostname="client01",
                       extra_hosts=["legacy:10.9.9.9"], search=["example.test"]).changed
    client = app.endpoint(network="app", sandbox="client").data["endpoint"]["IPAddress"]
    assert dig(host, "web", "client01") == [client], "the new hostname names the client"


@pytest.mark.parametrize("params,field", [
    ({"upstreams": ["not-an-ip"]}, "upstreams"),
    ({"sandbox": "client", "extra_hosts": ["nohostip"]}, "extra_hosts"),
    ({"sandbox": "client", "hostname": "bad name"}, "hostname"),
])
def test_bad_dns_input_names_the_field_and_writes_nothing(host, app, params, field):
    before = {f: open(os.path.join(host.run_dir, "sandboxes", "client", f)).read()
              for f in ("hosts", "resolv.conf")}
    with pytest.raises(CnmError) as err:
        app.dns(**params)
    assert field in str(err.value)
    after = {f: open(os.path.join(host.run_dir, "sandboxes", "client", f)).read()
             for f in ("hosts", "resolv.conf")}
    assert before == after


def test_alias_with_spaces_is_refused(host, app):
    with pytest.raises(CnmError, match="aliases"):
        app.endpoint(network="app", sandbox="x", aliases=["bad alias"])


def resolver_log(host):
    from ansible_collections.cnm.core.plugins.module_utils.dns import service
    with open(service.resolver_paths(host.run_dir)["log"]) as fh:
        return fh.read()


def test_attach_answers_at_once_and_the_resolver_only_reads_that_sandbox(host, app):
    """The engine names the changed sandbox on the resolver's control socket: the new
    sandbox's own listener and the others' answers are there when the attach returns,
    and the resolver did not reload its whole configuration for it."""
    full_reloads = resolver_log(host).count("config applied")
    app.endpoint(network="app", sandbox="late", ipv4_address="10.60.0.30")
    assert dig(host, "late", "web") == ["10.60.0.10"]
    assert dig(host, "client", "late") == ["10.60.0.30"]
    app.endpoint(network="app", sandbox="late", state="absent")
    assert dig(host, "client", "late") == []
    assert resolver_log(host).count("config applied") == full_reloads


def test_attach_answers_at_once_with_a_resolver_without_control_socket(host, app):
    """An older resolver (no control socket) gets a SIGHUP and is waited for."""
    from ansible_collections.cnm.core.plugins.module_utils.dns import service
    os.unlink(service.resolver_paths(host.run_dir)["control"])
    app.endpoint(network="app", sandbox="late", ipv4_address="10.60.0.30")
    assert dig(host, "late", "web") == ["10.60.0.10"]
    assert dig(host, "client", "late") == ["10.60.0.30"]


def test_every_sandbox_file_is_rewritten_when_they_are_gone(host, app):
    """run_dir emptied by a reboot, or an upgrade from the single-file layout: the next
    change writes every sandbox's resolver file, not only its own."""
    import shutil
    from ansible_collections.cnm.core.plugins.module_utils.dns import service
    shutil.rmtree(service.resolver_paths(host.run_dir)["fragments"])
    app.endpoint(network="app", sandbox="late", ipv4_address="10.60.0.30")
    assert dig(host, "late", "web") == ["10.60.0.10"]
    assert dig(host, "client", "late") == ["10.60.0.30"]
    assert dig(host, "client", "db") == ["10.60.0.20"]
    names = service.fragment_names(host.run_dir)
    assert sorted(names) == ["client", "db", "late", "other", "web"]


def single_file_resolver_source():
    """The daemon as releases before the package split shipped it, one file, from git:
    the last commit that has ``dns/server.py`` (the commit before the one deleting it)."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    rel = "plugins/module_utils/dns/server.py"

    def git(*args):
        return subprocess.run(["git", "-c", "safe.directory=*", "-C", repo] + list(args),
                              capture_output=True, check=False)
    last = git("rev-list", "-1", "HEAD", "--", rel).stdout.decode().strip()
    for rev in (last, last + "^") if last else ():
        shown = git("show", "%s:%s" % (rev, rel))
        if shown.returncode == 0:
            return shown.stdout
    pytest.skip("no git history with %s" % rel)


def test_a_running_single_file_resolver_of_an_older_release_is_replaced_by_the_next_change(
        host, app):
    """A host upgraded from the single-file layout: the old daemon, started the old way,
    is stopped by its pid at the next DNS change, the package's daemon takes over, the
    old file is gone and names still resolve."""
    from ansible_collections.cnm.core.plugins.module_utils.dns import service
    paths = service.resolver_paths(host.run_dir)
    source = single_file_resolver_source()
    assert service.stop_resolver(host.run_dir, use_systemd=False) is True
    base = os.path.join(host.state_dir, "resolver")
    shutil.rmtree(base)
    os.makedirs(base)
    legacy = os.path.join(base, "cnm_resolver.py")
    with open(legacy, "wb") as f:
        f.write(source)
    with in_netns(host.path):
        started = subprocess.run(
            [sys.executable, legacy, "--config", paths["config"], "--pidfile",
             paths["pidfile"], "--log", paths["log"], "--daemonize"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
            start_new_session=True, cwd="/", check=False)
    assert started.returncode == 0, started.stderr
    old = service.resolver_status(host.run_dir)
    assert old["running"] and service._runs_legacy(old["pid"], paths["pidfile"])
    assert dig(host, "client", "web") == ["10.60.0.10"]        # the old daemon answers

    app.endpoint(network="app", sandbox="late", ipv4_address="10.60.0.30")

    new = service.resolver_status(host.run_dir)
    assert new["running"] and new["pid"] != old["pid"]
    assert not service._is_ours(old["pid"], paths["pidfile"])
    assert not service._runs_legacy(new["pid"], paths["pidfile"])
    assert sorted(os.listdir(base)) == ["cnm-resolver.py", "resolver"]
    assert dig(host, "client", "web") == ["10.60.0.10"]
    assert dig(host, "late", "db") == ["10.60.0.20"]
    assert dig(host, "client", "late") == ["10.60.0.30"]
    assert app.dns().data["resolver"]["pid"] == new["pid"]
