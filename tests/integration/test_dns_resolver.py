"""The resolver daemon for real: sandboxes in a simulated host, queried with dig/getent.

Each test builds sandbox namespaces under the SimHost's private netns_dir, writes the
resolver config, starts the daemon inside the simulated host's namespace (through
``ensure_resolver``, as the engine does) and asks ``dig @127.0.0.11`` inside sandboxes.
"""
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from harness import in_netns

from ansible_collections.cnm.core.plugins.module_utils.dns import files, service

pytestmark = pytest.mark.integration

PYTHON = sys.executable
if shutil.which("dig") is None:
    pytest.skip("dig is not installed", allow_module_level=True)


# --- helpers ------------------------------------------------------------------------------
def make_sandbox(host, name):
    """A sandbox namespace bind-mounted at <netns_dir>/<name>, lo up (removed by close)."""
    path = host.sandbox_path(name)
    open(path, "w").close()
    subprocess.run(["unshare", "--net=%s" % path, "true"], check=True)
    host.sandbox_run(name, "ip link set lo up")
    return path


def remove_sandbox(host, name):
    path = host.sandbox_path(name)
    subprocess.run(["umount", "-l", path], stderr=subprocess.DEVNULL, check=False)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def endpoint(sandbox, ipv4, names=(), ipv6=None):
    return {"sandbox": sandbox, "names": [sandbox] + list(names), "ipv4": ipv4,
            "ipv6": ipv6}


def write_config(host, sandboxes, networks, **kw):
    """sandboxes: {name: [networks]} (+ "!" prefix = no forwarding); networks: {net: [ep]}"""
    sbs = {}
    for name, nets in sandboxes.items():
        forward = not name.startswith("!")
        name = name.lstrip("!")
        sbs[name] = {"netns": host.sandbox_path(name), "networks": nets, "forward": forward}
    kw.setdefault("host_resolv_conf", os.path.join(host.root, "host-resolv.conf"))
    if not os.path.exists(kw["host_resolv_conf"]):
        with open(kw["host_resolv_conf"], "w") as f:
            f.write("nameserver 127.0.0.53\nsearch corp.test\n")
    cfg = service.resolver_config(sbs, networks, **kw)
    return service.write_resolver_config(host.run_dir, cfg)


def start_resolver(host):
    with in_netns(host.path):
        return service.ensure_resolver(host.state_dir, host.run_dir, python=PYTHON,
                                       use_systemd=False)


class Dig:
    def __init__(self, out):
        self.out = out
        m = re.search(r"status: (\w+)", out)
        self.status = m.group(1) if m else None
        m = re.search(r";; flags: ([a-z ]+);", out)
        self.flags = m.group(1).split() if m else []
        self.answers = []
        section = None
        for line in out.splitlines():
            if line.startswith(";; ANSWER SECTION"):
                section = "answer"
                continue
            if not line.strip() or line.startswith(";;"):
                section = None if not line.strip() else section
                continue
            if section == "answer":
                parts = line.split()
                self.answers.append((parts[0], int(parts[1]), parts[3], parts[4]))
        self.rdata = [a[3] for a in self.answers]


def dig(host, sandbox, *args, timeout=8):
    cmd = ["dig", "+time=5", "+tries=1", "@127.0.0.11"] + list(args)
    proc = host.sandbox_run(sandbox, cmd, check=False, timeout=timeout)
    return Dig(proc.stdout)


class Upstream:
    """A tiny DNS server (UDP+TCP) in the simulated host: example.test -> 192.0.2.10."""

    def __init__(self, host, address="127.0.0.53", answer=True):
        import dns.message
        import dns.rcode
        import dns.rrset
        self.dns = dns
        self.seen = []
        self.answer = answer
        self.stopped = False
        with in_netns(host.path):
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind((address, 53))
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.tcp.bind((address, 53))
            self.tcp.listen(8)
        self.udp.settimeout(0.2)
        self.tcp.settimeout(0.2)
        self.threads = [threading.Thread(target=self._serve_udp, daemon=True),
                        threading.Thread(target=self._serve_tcp, daemon=True)]
        for t in self.threads:
            t.start()

    def _reply(self, wire):
        dns = self.dns
        q = dns.message.from_wire(wire)
        name = q.question[0].name.to_text().lower()
        self.seen.append(name)
        r = dns.message.make_response(q)
        if name == "example.test.":
            r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A",
                                                "192.0.2.10"))
        else:
            r.set_rcode(dns.rcode.NXDOMAIN)
        return r.to_wire()

    def _serve_udp(self):
        while not self.stopped:
            try:
                wire, addr = self.udp.recvfrom(4096)
            except (socket.timeout, OSError):
                continue
            if self.answer:
                self.udp.sendto(self._reply(wire), addr)

    def _serve_tcp(self):
        while not self.stopped:
            try:
                conn = self.tcp.accept()[0]
            except (socket.timeout, OSError):
                continue
            with conn:
                conn.settimeout(2)
                try:
                    n = struct.unpack("!H", conn.recv(2))[0]
                    wire = b""
                    while len(wire) < n:
                        wire += conn.recv(n - len(wire))
                    out = self._reply(wire)
                    conn.sendall(struct.pack("!H", len(out)) + out)
                except (OSError, struct.error):
                    pass

    def stop(self):
        self.stopped = True
        for t in self.threads:
            t.join(2)
        self.udp.close()
        self.tcp.close()


@pytest.fixture
def upstream(host):
    up = Upstream(host)
    try:
        yield up
    finally:
        up.stop()


@pytest.fixture
def app(host):
    """Sandboxes web, db (network app) and other (network net2); resolver running."""
    for name in ("web", "db", "other"):
        make_sandbox(host, name)
    write_config(host, {"web": ["app"], "db": ["app"], "other": ["net2"]}, {
        "app": [endpoint("web", "172.18.0.2", ["web-host", "api"]),
                endpoint("db", "172.18.0.3", ["database"], ipv6="fd00:18::3")],
        "net2": [endpoint("other", "172.19.0.2")],
    })
    assert start_resolver(host) is True
    return host


def wait_for(predicate, timeout):
    end = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.02)


# --- names ----------------------------------------------------------------------------------
def test_sandbox_names_aliases_and_name_dot_network_resolve(app):
    for name, want in (("web", "172.18.0.2"), ("web.app", "172.18.0.2"),
                       ("web-host", "172.18.0.2"), ("api", "172.18.0.2"),
                       ("DATABASE.App", "172.18.0.3"), ("db", "172.18.0.3")):
        r = dig(app, "web", name)
        assert (r.status, r.rdata) == ("NOERROR", [want]), (name, r.out)
        assert r.answers[0][1] == 600
    assert dig(app, "db", "db", "AAAA").rdata == ["fd00:18::3"]


def test_nothing_listens_on_the_host_itself(app):
    out = app.run(["ss", "-Hlnu"]).stdout + app.run(["ss", "-Hlnt"]).stdout
    assert "127.0.0.11" not in out


def test_query_with_edns_gets_an_opt_record_back(app):
    r = dig(app, "web", "web")
    assert "OPT PSEUDOSECTION" in r.out and r.rdata == ["172.18.0.2"]
    r = dig(app, "web", "+noedns", "web")
    assert "OPT PSEUDOSECTION" not in r.out and r.rdata == ["172.18.0.2"]


def test_getent_hosts_resolves_through_the_resolver(app):
    d = os.path.join(app.run_dir, "sandboxes", "web")
    files.write_sandbox_files([d], files.sandbox_files(
        "web", addresses=["172.18.0.2"], host_resolv_conf_text="search corp.test\n"))
    cmd = ("mount --bind %s/resolv.conf /etc/resolv.conf && mount --bind %s/hosts /etc/hosts"
           " && getent hosts web.app && getent hosts db && getent ahosts db" % (d, d))
    proc = subprocess.run(["nsenter", "--net=%s" % app.sandbox_path("web"), "unshare",
                           "--mount", "sh", "-c", cmd], capture_output=True, text=True,
                          timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0].split() == ["172.18.0.2", "web.app"]
    assert out[1].split() == ["fd00:18::3", "db"]              # getent prefers IPv6
    assert "172.18.0.3" in [ln.split()[0] for ln in out[2:]]


def test_names_on_another_network_are_not_answered_locally(app, upstream):
    r = dig(app, "web", "other")
    assert r.status == "NXDOMAIN" and r.rdata == []      # the upstream's answer
    assert "other." in upstream.seen
    assert dig(app, "other", "other").rdata == ["172.19.0.2"]
    assert dig(app, "other", "web").status == "NXDOMAIN"


def test_ptr_answers_sandbox_dot_network(app):
    assert dig(app, "web", "-x", "172.18.0.3").rdata == ["db.app."]
    assert dig(app, "web", "-x", "fd00:18::3").rdata == ["db.app."]


def test_aaaa_for_ipv4_only_name_is_noerror_without_answer(app):
    r = dig(app, "web", "web", "AAAA")
    assert (r.status, r.rdata) == ("NOERROR", [])


def test_three_endpoints_under_one_alias_come_back_in_changing_order(host):
    for name in ("a", "b", "c"):
        make_sandbox(host, name)
    write_config(host, {"a": ["app"], "b": ["app"], "c": ["app"]}, {
        "app": [endpoint("a", "10.5.0.1", ["svc"]), endpoint("b", "10.5.0.2", ["svc"]),
                endpoint("c", "10.5.0.3", ["svc"])]})
    start_resolver(host)
    orders = set()
    for _round in range(20):
        r = dig(host, "a", "+short", "svc")
        got = r.out.split()
        assert sorted(got) == ["10.5.0.1", "10.5.0.2", "10.5.0.3"]
        orders.add(tuple(got))
    assert len(orders) > 1


# --- forwarding -------------------------------------------------------------------------
def test_other_names_are_forwarded_to_a_loopback_upstream_then_servfail_once_it_stops(
        app, upstream):
    r = dig(app, "web", "example.test")
    assert (r.status, r.rdata) == ("NOERROR", ["192.0.2.10"])
    assert dig(app, "web", "+tcp", "example.test").rdata == ["192.0.2.10"]
    upstream.stop()
    t0 = time.monotonic()
    r = dig(app, "web", "example.test")
    assert r.status == "SERVFAIL"
    assert time.monotonic() - t0 < 5


def test_silent_upstream_gives_servfail_within_5s_and_the_next_upstream_is_tried(host):
    make_sandbox(host, "web")
    silent = Upstream(host, "127.0.0.54", answer=False)
    try:
        write_config(host, {"web": ["app"]}, {"app": [endpoint("web", "10.6.0.2")]},
                     upstreams=["127.0.0.54"])
        start_resolver(host)
        t0 = time.monotonic()
        r = dig(host, "web", "example.test")
        assert r.status == "SERVFAIL" and time.monotonic() - t0 < 5
        good = Upstream(host, "127.0.0.53")
        try:
            write_config(host, {"web": ["app"]}, {"app": [endpoint("web", "10.6.0.2")]},
                         upstreams=["127.0.0.54", "127.0.0.53"])
            assert wait_for(lambda: dig(host, "web", "example.test").rdata == ["192.0.2.10"],
                            5)
            # the silent one is remembered as failing: next answers come at once
            t0 = time.monotonic()
            assert dig(host, "web", "example.test").rdata == ["192.0.2.10"]
            assert time.monotonic() - t0 < 0.9
        finally:
            good.stop()
    finally:
        silent.stop()


def test_internal_only_sandbox_gets_no_forwarded_answer(host, upstream):
    make_sandbox(host, "secret")
    write_config(host, {"!secret": ["intnet"]}, {"intnet": [endpoint("secret", "10.7.0.2")]})
    start_resolver(host)
    r = dig(host, "secret", "example.test")
    assert r.status == "SERVFAIL" and r.rdata == []
    assert "example.test." not in upstream.seen
    assert dig(host, "secret", "secret").rdata == ["10.7.0.2"]


def test_upstreams_are_re_read_when_the_host_resolv_conf_changes(host):
    make_sandbox(host, "web")
    resolv = os.path.join(host.root, "host-resolv.conf")
    with open(resolv, "w") as f:
        f.write("nameserver 127.0.0.55\n")            # nothing listens there
    write_config(host, {"web": ["app"]}, {"app": [endpoint("web", "10.6.0.2")]},
                 host_resolv_conf=resolv)
    start_resolver(host)
    assert dig(host, "web", "example.test").status == "SERVFAIL"
    up = Upstream(host, "127.0.0.53")
    try:
        with open(resolv + ".new", "w") as f:
            f.write("search corp.test\nnameserver 127.0.0.53\n")
        os.replace(resolv + ".new", resolv)
        assert wait_for(lambda: dig(host, "web", "example.test").rdata == ["192.0.2.10"], 3)
    finally:
        up.stop()


# --- transport ------------------------------------------------------------------------------
def test_tcp_queries_are_answered(app):
    r = dig(app, "web", "+tcp", "db")
    assert (r.status, r.rdata) == ("NOERROR", ["172.18.0.3"])


def test_forty_addresses_are_truncated_over_udp_and_complete_over_tcp(host):
    make_sandbox(host, "s")
    eps = [endpoint("m%d" % i, "10.8.0.%d" % (i + 1), ["many"]) for i in range(40)]
    write_config(host, {"s": ["big"]}, {"big": eps})
    start_resolver(host)
    r = dig(host, "s", "+noedns", "+ignore", "many")
    assert "tc" in r.flags and len(r.rdata) < 40
    r = dig(host, "s", "+noedns", "many")               # dig retries over TCP by itself
    assert len(r.rdata) == 40
    r = dig(host, "s", "+tcp", "many")
    assert "tc" not in r.flags and len(r.rdata) == 40


# --- life cycle -------------------------------------------------------------------------
def test_removed_endpoint_stops_resolving_within_1s_without_restart(app):
    pid = service.resolver_status(app.run_dir)["pid"]
    assert dig(app, "web", "db").rdata == ["172.18.0.3"]
    write_config(app, {"web": ["app"], "db": ["app"]}, {
        "app": [endpoint("web", "172.18.0.2", ["web-host", "api", "new-alias"])]})
    t0 = time.monotonic()
    assert wait_for(lambda: dig(app, "web", "db").rdata == [], 1.0), "db still resolves"
    assert time.monotonic() - t0 <= 1.0
    assert dig(app, "web", "new-alias").rdata == ["172.18.0.2"]
    assert service.resolver_status(app.run_dir) == {"running": True, "pid": pid}
    assert service.ensure_resolver(app.state_dir, app.run_dir, python=PYTHON,
                                   use_systemd=False) is False


def test_removed_sandbox_loses_its_listener_and_others_keep_theirs(app):
    write_config(app, {"web": ["app"]}, {"app": [endpoint("web", "172.18.0.2")]})
    assert wait_for(lambda: dig(app, "db", "+time=1", "web").status is None, 3)
    assert dig(app, "web", "web").rdata == ["172.18.0.2"]


def test_killed_resolver_is_restarted_by_ensure_resolver(app):
    pid = service.resolver_status(app.run_dir)["pid"]
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: not service.resolver_status(app.run_dir)["running"], 5)
    assert dig(app, "web", "+time=1", "web").status is None     # nobody answers
    assert start_resolver(app) is True
    new = service.resolver_status(app.run_dir)
    assert new["running"] and new["pid"] != pid
    assert dig(app, "web", "web").rdata == ["172.18.0.2"]


def test_stop_resolver_terminates_it_and_removes_the_pidfile(app):
    assert service.stop_resolver(app.run_dir, use_systemd=False) is True
    assert not os.path.exists(service.resolver_paths(app.run_dir)["pidfile"])
    assert "stopped" in open(service.resolver_paths(app.run_dir)["log"]).read()
    assert service.stop_resolver(app.run_dir, use_systemd=False) is False


def test_recreated_namespace_is_picked_up_again(app):
    remove_sandbox(app, "db")
    make_sandbox(app, "db")
    assert wait_for(lambda: dig(app, "db", "+time=1", "web").rdata == ["172.18.0.2"], 4)


def test_sandbox_whose_namespace_appears_later_is_served_once_it_exists(host):
    make_sandbox(host, "web")
    write_config(host, {"web": ["app"], "late": ["app"]}, {
        "app": [endpoint("web", "10.9.0.2"), endpoint("late", "10.9.0.3")]})
    start_resolver(host)
    assert dig(host, "web", "late").rdata == ["10.9.0.3"]
    log = open(service.resolver_paths(host.run_dir)["log"]).read()
    assert "sandbox late: cannot listen" in log
    make_sandbox(host, "late")
    assert wait_for(lambda: dig(host, "late", "+time=1", "web").rdata == ["10.9.0.2"], 4)


def test_second_instance_refuses_to_start_on_the_same_pidfile(app):
    paths = service.resolver_paths(app.run_dir)
    script = service.install_resolver(app.state_dir)
    proc = app.run([PYTHON, script, "--config", paths["config"], "--pidfile",
                    paths["pidfile"], "--log", paths["log"], "--daemonize"], check=False)
    assert proc.returncode != 0 and "another resolver" in proc.stderr
    assert service.resolver_status(app.run_dir)["running"]


def test_changed_installed_code_restarts_the_resolver_on_the_next_run(app):
    old = service.resolver_status(app.run_dir)["pid"]
    script = service.install_resolver(app.state_dir)
    with open(script, "a") as f:
        f.write("# an older release\n")
    assert start_resolver(app) is True
    new = service.resolver_status(app.run_dir)["pid"]
    assert new != old
    assert not service._is_ours(old, service.resolver_paths(app.run_dir)["pidfile"])
    assert dig(app, "web", "web").rdata == ["172.18.0.2"]
    assert start_resolver(app) is False
