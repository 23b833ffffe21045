"""Keeps the resolver's configuration and the per-sandbox name files in step with the store.

Called by the controller after every change of sandboxes, endpoints or DNS settings
(never in check mode). The resolver configuration is rebuilt from the store as a whole
(one small JSON file, rewritten only when it differs); name files are rendered only for
the sandboxes the operation touched, so the cost of an attach does not grow with the
number of sandboxes.
"""
import json
import os

from . import constants as C
from .errors import KernelError
from .model import Endpoint

DNS_DRIVERS = ("bridge", "macvlan", "ipvlan")  # user-defined networks get the resolver
HOST_RESOLV_CONF = "/etc/resolv.conf"


def resolver_settings(store):
    """The host resolver settings made by cnm_dns (defaults when never set)."""
    return store.get_setting("resolver", {"state": "started", "upstreams": [],
                                          "ttl": C.DNS_TTL})


def _ip(cidr):
    """The address part of a stored (already normalised) ``ip/prefix``."""
    return cidr.split("/", 1)[0] if cidr else None


def build_config(store):
    """The resolver's config.json content from the store (see dns/server.py).

    Runs after every change: it reads only the fields it needs (json_extract in
    SQLite) instead of decoding every document.
    """
    from .dns import service
    networks = {row[0]: row[1:] for row in store.conn.execute(
        "SELECT id, name, json_extract(doc, '$.driver'), json_extract(doc, '$.internal') "
        "FROM networks")}
    sandboxes = {row[0]: row[1:] for row in store.conn.execute(
        "SELECT id, name, json_extract(doc, '$.netns_path'), json_extract(doc, '$.hostname'),"
        " json_extract(doc, '$.dns.hostname'), json_extract(doc, '$.dns.upstreams') "
        "FROM sandboxes")}
    cfg_sandboxes, cfg_networks = {}, {}
    for network_id, sandbox_id, aliases, ipv4, ipv6 in store.conn.execute(
            "SELECT network_id, sandbox_id, json_extract(doc, '$.aliases'), "
            "json_extract(doc, '$.ipv4'), json_extract(doc, '$.ipv6') FROM endpoints "
            "ORDER BY rowid"):
        net, sb = networks.get(network_id), sandboxes.get(sandbox_id)
        if net is None or sb is None or net[1] not in DNS_DRIVERS:
            continue
        net_name, dummy_driver, internal = net
        sb_name, netns, hostname, dns_hostname, upstreams = sb
        names = [n for n in dict.fromkeys([sb_name, dns_hostname or hostname]) if n]
        cfg_networks.setdefault(net_name, []).append({
            "sandbox": sb_name, "names": names + json.loads(aliases or "[]"),
            "ipv4": _ip(ipv4), "ipv6": _ip(ipv6)})
        entry = cfg_sandboxes.setdefault(sb_name, {"netns": netns, "networks": [],
                                                   "forward": False})
        entry["networks"].append(net_name)
        entry["forward"] = entry["forward"] or not internal
        if upstreams and upstreams != "[]":
            entry["upstreams"] = json.loads(upstreams)
    settings = resolver_settings(store)
    return service.resolver_config(cfg_sandboxes, cfg_networks, ttl=settings.get("ttl"),
                                   upstreams=settings.get("upstreams") or [],
                                   host_resolv_conf=HOST_RESOLV_CONF)


def file_dirs(engine, sb):
    """Where a sandbox's resolv.conf/hosts/hostname live: under run_dir, and where
    ``ip netns exec`` looks (/etc/netns/<name>) when netns_dir is the default."""
    dirs = [os.path.join(engine.run_dir, "sandboxes", sb.name)]
    if os.path.abspath(engine.netns_dir) == C.DEFAULT_NETNS_DIR:
        dirs.append(os.path.join("/etc/netns", sb.name))
    return dirs


def render_files(engine, sb):
    """{filename: content} of the name files of sandbox ``sb``."""
    from .dns import files
    eps = [Endpoint.from_doc(d) for d in engine.store.all("endpoints", "sandbox_id=?",
                                                          (sb.id,))]
    drivers = {}
    for ep in eps:
        doc = engine.store.get("networks", ep.network_id)
        drivers[ep.id] = doc["driver"] if doc else None
    on_user_network = any(drivers[ep.id] in DNS_DRIVERS for ep in eps)
    try:
        with open(HOST_RESOLV_CONF) as fh:
            host_text = fh.read()
    except OSError:
        host_text = ""
    dns = sb.dns or {}
    nameservers = dns.get("nameservers")
    if not on_user_network and not nameservers:
        # Docker: sandboxes only on host/none get the host's nameservers, not 127.0.0.11
        nameservers = files.parse_resolv_conf(host_text)[0] or None
    addresses = [_ip(c) for ep in eps for c in (ep.ipv4, ep.ipv6) if c]
    extra = [tuple(e) for e in dns.get("extra_hosts") or []]
    return files.sandbox_files(dns.get("hostname") or sb.hostname or sb.name,
                               dns.get("domainname"), addresses, extra,
                               host_resolv_conf_text=host_text, nameservers=nameservers,
                               search=dns.get("search"), options=dns.get("options"))


def sync(engine, sandboxes=()):
    """Rewrite config.json, (re)start the resolver when a sandbox needs it, and write the
    name files of ``sandboxes`` (Sandbox objects still present in the store).

    Returns True when anything on disk changed.
    """
    from .dns import files, service
    changed = False
    config = build_config(engine.store)
    config_changed = service.write_resolver_config(engine.run_dir, config)
    changed |= config_changed
    settings = resolver_settings(engine.store)
    if config["sandboxes"] and settings.get("state", "started") == "started":
        started = service.ensure_resolver(engine.state_dir, engine.run_dir)
        if config_changed and not started:
            # re-read now, not at the next 200 ms poll: a new sandbox must answer as soon
            # as this run returns, and a removed one's sockets (which keep its namespace
            # and veths alive) must go
            _reload(service, engine.run_dir)
        for sb in sandboxes:
            entry = config["sandboxes"].get(sb.name)
            if entry is not None:
                _wait_listening(entry["netns"])
    for sb in sandboxes:
        if sb.mode != "own" or engine.store.get("sandboxes", sb.id) is None:
            continue
        changed |= bool(files.write_sandbox_files(file_dirs(engine, sb),
                                                  render_files(engine, sb)))
    return changed


def _reload(service, run_dir):
    """SIGHUP: the resolver re-reads its config now instead of at its next poll, so a
    removed sandbox's sockets (which keep its namespace alive) close at once."""
    import signal
    pid = service.resolver_status(run_dir).get("pid")
    if pid:
        try:
            os.kill(pid, signal.SIGHUP)
        except OSError:
            pass


def _wait_listening(netns, timeout=1.0):
    """Return once the resolver listens on 127.0.0.11:53 inside ``netns`` (bounded):
    a workload started right after this run gets answers from its first query."""
    import time
    from .netns import namespace
    from .ports.allocator import diag_sockets
    deadline = time.monotonic() + timeout
    while True:
        try:
            with namespace.entered(netns):
                found = any(port == C.DNS_PORT and ip == C.DNS_LISTEN_ADDRESS
                            for port, ip, dummy in diag_sockets("udp"))
        except (OSError, KernelError):
            return  # the namespace vanished meanwhile: nothing to wait for
        if found or time.monotonic() > deadline:
            return
        time.sleep(0.0005)


def ensure_running(engine):
    """Every module run: restart the resolver if it died while sandboxes need it."""
    from .dns import service
    settings = resolver_settings(engine.store)
    if settings.get("state", "started") != "started":
        return False
    if not os.path.exists(service.resolver_paths(engine.run_dir)["config"]):
        return False  # no sandbox ever needed it on this host
    status = service.resolver_status(engine.run_dir)
    if status.get("running"):
        return False
    config = build_config(engine.store)
    if not config["sandboxes"]:
        return False
    service.write_resolver_config(engine.run_dir, config)
    return service.ensure_resolver(engine.state_dir, engine.run_dir)
