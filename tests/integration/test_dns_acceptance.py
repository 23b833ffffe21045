"""The embedded DNS issue's acceptance list, through sandboxes made by the engine.

Every sandbox here is made by ``Engine.endpoint`` (``HostEngine``, in-process inside a
simulated host); answers are observed with real ``dig @127.0.0.11`` and ``getent``.
``test_dns_engine.py`` already covers the basic names (web, web.app, an alias, PTR,
getent of db, nothing for ``other``), the removed endpoint within 1 s and a restart after
``kill -9`` by a ``network`` call; this file covers the rest of the list: what ``other``
gets instead (forwarded, never the local address), round robin, forwarding to a loopback
upstream and SERVFAIL (stopped or silent upstream), internal networks, TCP and
truncation, removal of a whole sandbox, restarts by the other verbs (info modules
included), and refused input leaving files, config and store unchanged.

The upstream server (``Upstream`` from test_dns_resolver.py) listens on 127.0.0.53 inside
the simulated host's namespace, as systemd-resolved would on a real host; the resolver
is pointed at it with ``dns(upstreams=[...])``; the real /etc/resolv.conf is never read
for upstreams here and never changed.
"""
import glob
import os
import signal
import sqlite3
import time

import pytest

from engine_helpers import HostEngine
from harness import eventually
from test_dns_resolver import Dig, Upstream

from ansible_collections.cnm.core.plugins.module_utils.dns import service
from ansible_collections.cnm.core.plugins.module_utils.errors import CnmError

pytestmark = pytest.mark.integration

WEB, DB = "10.60.0.10", "10.60.0.20"


def dig(host, sandbox, *args, timeout=10):
    """``dig @127.0.0.11`` in ``sandbox`` (one try, 5 s), parsed."""
    cmd = ["dig", "+time=5", "+tries=1", "@127.0.0.11"] + list(args)
    return Dig(host.sandbox_run(sandbox, cmd, check=False, timeout=timeout).stdout)


def getent(host, sandbox, name):
    """``getent hosts name`` in ``sandbox`` with its written resolv.conf as /etc/resolv.conf
    (a private mount namespace, so nothing outside sees the bind mount)."""
    resolv = os.path.join(host.run_dir, "sandboxes", sandbox, "resolv.conf")
    proc = host.sandbox_run(sandbox, [
        "unshare", "--mount", "sh", "-c",
        "mount --bind %s /etc/resolv.conf && getent hosts %s" % (resolv, name)],
        check=False, timeout=20)
    return proc.stdout.split()


def resolver_pid(eng):
    return eng.dns().data["resolver"]["pid"]


def resolver_processes(host):
    """PIDs of processes running the resolver with this host's pid file."""
    pidfile = os.fsencode(service.resolver_paths(host.run_dir)["pidfile"])
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if pidfile in args:
            pids.append(int(entry))
    return pids


@pytest.fixture
def app(host):
    """web (alias www), db, client on ``app``; other on ``admin``; resolver forwarding to
    the test's upstream address 127.0.0.53 (nothing listens there unless a test starts
    ``Upstream``)."""
    eng = HostEngine(host)
    eng.network(name="app", ipam={"config": [{"subnet": "10.60.0.0/24"}]})
    eng.network(name="admin", ipam={"config": [{"subnet": "10.61.0.0/24"}]})
    eng.endpoint(network="app", sandbox="web", ipv4_address=WEB, aliases=["www"])
    eng.endpoint(network="app", sandbox="db", ipv4_address=DB)
    eng.endpoint(network="app", sandbox="client")
    eng.endpoint(network="admin", sandbox="other")
    eng.dns(upstreams=["127.0.0.53"])
    return eng


@pytest.fixture
def upstream(host):
    up = Upstream(host, "127.0.0.53")
    try:
        yield up
    finally:
        up.stop()


# --- names --------------------------------------------------------------------------------
def test_client_resolves_names_aliases_and_name_dot_network(host, app):
    for name, want in (("web", WEB), ("web.app", WEB), ("www", WEB), ("www.app", WEB),
                       ("db.app", DB)):
        r = dig(host, "client", name)
        assert (r.status, r.rdata) == ("NOERROR", [want]), (name, r.out)
        assert r.answers[0][1] == 600, r.out                 # Docker's TTL by default
    assert getent(host, "client", "db")[:2] == [DB, "db"]
    assert getent(host, "client", "www")[:2] == [WEB, "www"]
    assert getent(host, "client", "web.app")[:2] == [WEB, "web.app"]
    r = dig(host, "client", "-x", WEB)
    assert (r.status, r.rdata) == ("NOERROR", ["web.app."]), r.out


def test_other_network_names_are_forwarded_not_answered_locally(host, app, upstream):
    for name in ("web", "web.app", "www"):
        r = dig(host, "other", name)
        assert r.status == "NXDOMAIN" and r.rdata == [], (name, r.out)  # upstream's answer
        assert name + "." in upstream.seen, (name, upstream.seen)
    r = dig(host, "other", "-x", WEB)
    assert WEB not in " ".join(r.rdata) and "web.app." not in r.rdata, r.out
    assert "10.0.60.10.in-addr.arpa." in upstream.seen
    assert dig(host, "other", "other").rdata == ["10.61.0.2"]
    # names the client can resolve were never sent upstream
    assert dig(host, "client", "web").rdata == [WEB]
    assert upstream.seen.count("web.") == 1


def test_ttl_of_local_answers_is_configurable(host, app):
    assert app.dns(ttl=30).changed
    assert eventually(lambda: [a[1] for a in dig(host, "client", "web").answers] == [30],
                      timeout=1.0)


# --- round robin ----------------------------------------------------------------------
def test_three_endpoints_sharing_an_alias_answer_all_in_changing_order(host, app):
    for i in (1, 2, 3):
        app.endpoint(network="app", sandbox="api%d" % i, ipv4_address="10.60.0.3%d" % i,
                     aliases=["api"])
    want = ["10.60.0.31", "10.60.0.32", "10.60.0.33"]
    orders = set()
    for dummy in range(20):
        r = dig(host, "client", "api")
        assert r.status == "NOERROR" and sorted(r.rdata) == want, r.out
        orders.add(tuple(r.rdata))
    assert len(orders) > 1, orders


# --- forwarding -----------------------------------------------------------------------
def test_forwarded_to_loopback_upstream_then_servfail_within_5s_once_it_stops(
        host, app, upstream):
    r = dig(host, "client", "example.test")
    assert (r.status, r.rdata) == ("NOERROR", ["192.0.2.10"]), r.out
    assert dig(host, "client", "+tcp", "example.test").rdata == ["192.0.2.10"]
    assert dig(host, "other", "example.test").rdata == ["192.0.2.10"]
    upstream.stop()
    start = time.monotonic()
    r = dig(host, "client", "example.test")
    elapsed = time.monotonic() - start
    assert r.status == "SERVFAIL" and r.rdata == [], r.out
    assert elapsed < 5, elapsed
    assert dig(host, "client", "web").rdata == [WEB]        # local names still answered
    back = Upstream(host, "127.0.0.53")                      # the upstream comes back
    try:
        assert eventually(lambda: dig(host, "client", "example.test").rdata
                          == ["192.0.2.10"], timeout=5.0)
    finally:
        back.stop()


def test_silent_upstream_gives_servfail_within_5s(host, app, upstream):
    upstream.answer = False                 # receives, never answers (a dead link)
    start = time.monotonic()
    r = dig(host, "client", "example.test")
    elapsed = time.monotonic() - start
    assert r.status == "SERVFAIL", r.out
    assert elapsed < 5, elapsed


def test_upstream_set_later_is_used_without_restart(host, upstream):
    eng = HostEngine(host)
    eng.network(name="app", ipam={"config": [{"subnet": "10.60.0.0/24"}]})
    eng.endpoint(network="app", sandbox="client")
    eng.dns(upstreams=["127.0.0.54"])                          # nothing listens there
    pid = resolver_pid(eng)
    assert dig(host, "client", "example.test").status == "SERVFAIL"
    assert eng.dns(upstreams=["127.0.0.53"]).changed
    assert eventually(lambda: dig(host, "client", "example.test").rdata == ["192.0.2.10"],
                      timeout=1.0)
    assert resolver_pid(eng) == pid


def test_sandbox_upstreams_replace_the_global_ones_for_that_sandbox(host, app, upstream):
    other_up = Upstream(host, "127.0.0.54")
    try:
        app.dns(sandbox="client", sandbox_upstreams=["127.0.0.54"])
        assert eventually(lambda: dig(host, "client", "example.test").rdata
                          == ["192.0.2.10"] and "example.test." in other_up.seen,
                          timeout=2.0)
        assert "example.test." not in upstream.seen
        assert dig(host, "other", "example.test").rdata == ["192.0.2.10"]
        assert "example.test." in upstream.seen
    finally:
        other_up.stop()


def test_internal_network_sandbox_gets_no_forwarded_answer(host, app, upstream):
    app.network(name="secure", internal=True, ipam={"config": [{"subnet": "10.63.0.0/24"}]})
    app.endpoint(network="secure", sandbox="vault", ipv4_address="10.63.0.5")
    app.endpoint(network="secure", sandbox="bridgehead", ipv4_address="10.63.0.6")
    app.endpoint(network="app", sandbox="bridgehead")
    r = dig(host, "vault", "example.test")
    assert r.status == "SERVFAIL" and r.rdata == [], r.out
    assert "example.test." not in upstream.seen
    assert dig(host, "vault", "bridgehead").rdata == ["10.63.0.6"]   # local still works
    assert dig(host, "vault", "web").status != "NOERROR"             # not its network
    # a sandbox on an internal and a normal network is forwarded (Docker does the same)
    assert dig(host, "bridgehead", "example.test").rdata == ["192.0.2.10"]
    assert "example.test." in upstream.seen


# --- transport --------------------------------------------------------------------------
def test_tcp_queries_are_answered(host, app):
    for name, want in (("web", WEB), ("www.app", WEB)):
        r = dig(host, "client", "+tcp", name)
        assert (r.status, r.rdata) == ("NOERROR", [want]), r.out
    assert dig(host, "client", "+tcp", "-x", DB).rdata == ["db.app."]


def test_forty_addresses_truncated_over_udp_complete_over_tcp(host):
    eng = HostEngine(host)
    eng.network(name="big", ipam={"config": [{"subnet": "10.62.0.0/24"}]})
    for i in range(40):
        eng.endpoint(network="big", sandbox="m%d" % i, ipv4_address="10.62.0.%d" % (i + 10),
                     aliases=["many"])
    eng.endpoint(network="big", sandbox="client", ipv4_address="10.62.0.200")
    want = sorted("10.62.0.%d" % (i + 10) for i in range(40))
    for args in (["+noedns"], ["+bufsize=512"]):               # 512-byte UDP limit
        r = dig(host, "client", "+ignore", *args, "many")
        assert "tc" in r.flags and 0 < len(r.rdata) < 40, (args, r.out)
        assert set(r.rdata) <= set(want)
    r = dig(host, "client", "+noedns", "many")                  # dig retries over TCP
    assert sorted(r.rdata) == want, r.out
    r = dig(host, "client", "+tcp", "many")
    assert "tc" not in r.flags and sorted(r.rdata) == want, r.out
    r = dig(host, "client", "many")                             # EDNS 1232 bytes: fits
    assert "tc" not in r.flags and sorted(r.rdata) == want, r.out


# --- life cycle -------------------------------------------------------------------------
def test_removed_sandbox_stops_resolving_within_1s_with_the_same_resolver(host, app):
    pid = resolver_pid(app)
    assert dig(host, "client", "db").rdata == [DB]
    app.sandbox(name="db", state="absent")
    assert eventually(lambda: dig(host, "client", "db").rdata == [], timeout=1.0)
    assert resolver_pid(app) == pid
    assert dig(host, "client", "web").rdata == [WEB]


def test_reattached_sandbox_answers_its_new_address_within_1s(host, app):
    pid = resolver_pid(app)
    app.endpoint(network="app", sandbox="db", state="absent")
    app.endpoint(network="app", sandbox="db", ipv4_address="10.60.0.21")
    assert eventually(lambda: dig(host, "client", "db").rdata == ["10.60.0.21"],
                      timeout=1.0)
    assert dig(host, "client", "-x", DB).rdata == []
    assert resolver_pid(app) == pid


@pytest.mark.parametrize("verb,params", [
    ("network", {"name": "app", "ipam": {"config": [{"subnet": "10.60.0.0/24"}]}}),
    ("endpoint", {"network": "app", "sandbox": "client"}),
    ("dns", {}),
    ("dns", {"sandbox": "client"}),
    ("endpoint", {"network": "admin", "sandbox": "other2"}),
], ids=["network", "endpoint-unchanged", "dns", "dns-sandbox", "endpoint-new"])
def test_killed_resolver_is_restarted_by_the_next_engine_call(host, app, verb, params):
    pid = resolver_pid(app)
    os.kill(pid, signal.SIGKILL)
    assert eventually(lambda: not service.resolver_status(host.run_dir)["running"], 5)
    assert dig(host, "client", "+time=1", "web").status is None      # nobody answers
    getattr(app, verb)(**params)
    status = service.resolver_status(host.run_dir)
    assert status["running"] and status["pid"] != pid
    assert dig(host, "client", "web").rdata == [WEB]
    assert dig(host, "other", "other").rdata == ["10.61.0.2"]
    assert resolver_processes(host) == [status["pid"]]               # exactly one


@pytest.mark.parametrize("verb,params", [
    ("network_info", {"name": "app"}),
    ("sandbox_info", {}),
])
def test_killed_resolver_is_restarted_by_an_info_module_run(host, app, verb, params):
    """DESIGN/README: "restarted by the next module run if it died"; the info modules are
    module runs too. (The engine runs them in check mode, and ``Engine._open`` revives
    the resolver only outside check mode.)"""
    os.kill(resolver_pid(app), signal.SIGKILL)
    assert eventually(lambda: not service.resolver_status(host.run_dir)["running"], 5)
    result = getattr(app, verb)(**params)
    assert not result.changed
    assert service.resolver_status(host.run_dir)["running"]
    assert dig(host, "client", "web").rdata == [WEB]


# --- refused input ----------------------------------------------------------------------
def on_disk(host):
    """Everything a DNS change could write: sandbox name files, resolver config, the
    whole store (every table), the namespaces, the resolver's pid."""
    files = {}
    for path in sorted(glob.glob(os.path.join(host.run_dir, "sandboxes", "**"),
                                 recursive=True)):
        if os.path.isfile(path):
            with open(path) as f:
                files[os.path.relpath(path, host.run_dir)] = f.read()
    with open(service.resolver_paths(host.run_dir)["config"]) as f:
        config = f.read()
    conn = sqlite3.connect(os.path.join(host.state_dir, "cnm.db"))
    try:
        store = list(conn.iterdump())
    finally:
        conn.close()
    return {"files": files, "config": config, "store": store,
            "namespaces": host.sandboxes(),
            "pid": service.resolver_status(host.run_dir)["pid"]}


BAD_INPUT = [
    ("dns", {"upstreams": ["not-an-ip"]}, "upstreams[0]"),
    ("dns", {"upstreams": ["192.0.2.1", "192.0.2.300"]}, "upstreams[1]"),
    ("dns", {"upstreams": ["192.0.2.1:99999"]}, "upstreams[0]"),
    ("dns", {"ttl": 60, "upstreams": ["8.8.8.8", "dns.example"]}, "upstreams[1]"),
    ("dns", {"sandbox": "client", "sandbox_upstreams": ["nope"]}, "sandbox_upstreams[0]"),
    ("endpoint", {"network": "app", "sandbox": "newbie", "aliases": ["bad alias"]},
     "aliases[0]"),
    ("endpoint", {"network": "app", "sandbox": "web", "aliases": ["www", "has space"]},
     "aliases[1]"),
    ("dns", {"sandbox": "client", "extra_hosts": ["nohostip"]}, "extra_hosts[0]"),
    ("dns", {"sandbox": "client", "extra_hosts": ["ok:192.0.2.1", "empty:"]},
     "extra_hosts[1]"),
    ("dns", {"sandbox": "client", "extra_hosts": {"legacy": None}}, "extra_hosts.legacy"),
    ("dns", {"sandbox": "client", "hostname": "fine", "search": ["corp.test"],
             "extra_hosts": ["gw"]}, "extra_hosts[0]"),
]


@pytest.mark.parametrize("verb,params,field", BAD_INPUT,
                         ids=["upstream-word", "upstream-octet", "upstream-port",
                              "upstream-hostname-with-ttl", "sandbox-upstream",
                              "alias-new-sandbox", "alias-existing-endpoint",
                              "extra-host-no-ip", "extra-host-empty-ip",
                              "extra-host-dict-none", "extra-host-with-valid-settings"])
def test_bad_input_names_the_field_and_writes_nothing(host, app, verb, params, field):
    app.dns(sandbox="client", extra_hosts=["legacy:192.0.2.7"])   # files exist, non-trivial
    before = on_disk(host)
    with pytest.raises(CnmError) as err:
        getattr(app, verb)(**params)
    assert str(err.value).startswith(field + ":"), str(err.value)
    assert on_disk(host) == before
    assert dig(host, "client", "web").rdata == [WEB]
