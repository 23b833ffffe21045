"""The resolver's view of the store: its files built from the rows, and its revival.

Pure functions over the store (no netlink, no firewall, no session): the DNS step of
the writing operations (``dns_sync.py``) and the read-only info path (``reader.py``)
both use them. They talk to a running resolver through ``dns/resolver_client.py``;
``dns/service.py`` (install and start, which ships the resolver's package) is imported
only on the path that starts one.
"""
import json
import os
import sys

from .. import constants as C
from ..dns import resolver_client as client
from ..errors import DependencyError
from ..host_packages import install_hint, python_library_missing

DNS_DRIVERS = ("bridge", "macvlan", "ipvlan", "overlay")  # user-defined networks get the resolver
HOST_RESOLV_CONF = "/etc/resolv.conf"


def uses_resolver(net):
    """True for a network whose sandboxes get the embedded resolver: user-defined
    networks of a DNS driver, not the predefined default ``bridge`` (as Docker's
    docker0 has no embedded DNS)."""
    return net.driver in DNS_DRIVERS and not net.predefined


def require_dnspython():
    """Called before an operation makes anything that will need the resolver, and before
    the resolver is started: raises DependencyError naming the package for this host's OS
    when this Python cannot import dnspython (checked with a finder lookup, not an
    import: modules never import dnspython themselves)."""
    if python_library_missing("dns"):
        raise DependencyError("the embedded DNS resolver needs dnspython, which %s cannot "
                              "import: %s" % (sys.executable, install_hint("dnspython")))


def resolver_settings(store):
    """The host resolver settings made by cnm_dns (defaults when never set)."""
    return store.get_setting("resolver", {"state": "started", "upstreams": [],
                                          "ttl": C.DNS_TTL})


def _ip(cidr):
    """The address part of a stored (already normalised) ``ip/prefix``."""
    return cidr.split("/", 1)[0] if cidr else None


def global_config(store):
    """The resolver's config.json content: settings only (sandboxes have their files)."""
    settings = resolver_settings(store)
    return client.resolver_config({}, {}, ttl=settings.get("ttl"),
                                  upstreams=settings.get("upstreams") or [],
                                  host_resolv_conf=HOST_RESOLV_CONF)


def fragment(store, sandbox_id):
    """The resolver's file content for one sandbox, or None when the sandbox is gone or
    on no network with DNS. Reads only that sandbox's rows (json_extract in SQLite)."""
    row = store.conn.execute(
        "SELECT name, json_extract(doc, '$.netns_path'), json_extract(doc, '$.hostname'),"
        " json_extract(doc, '$.dns.hostname'), json_extract(doc, '$.dns.upstreams') "
        "FROM sandboxes WHERE id=?", (sandbox_id,)).fetchone()
    if row is None:
        return None
    sb_name, netns, hostname, dns_hostname, upstreams = row
    names = [n for n in dict.fromkeys([sb_name, dns_hostname or hostname]) if n]
    records, forward = {}, False
    for seq, net_name, driver, internal, aliases, ipv4, ipv6, predefined in store.conn.execute(
            "SELECT e.rowid, n.name, json_extract(n.doc, '$.driver'), "
            "json_extract(n.doc, '$.internal'), json_extract(e.doc, '$.aliases'), "
            "json_extract(e.doc, '$.ipv4'), json_extract(e.doc, '$.ipv6'), "
            "json_extract(n.doc, '$.predefined') "
            "FROM endpoints e JOIN networks n ON n.id = e.network_id "
            "WHERE e.sandbox_id=? ORDER BY e.rowid", (sandbox_id,)):
        if driver not in DNS_DRIVERS or predefined:
            continue
        records[net_name] = {"names": names + json.loads(aliases or "[]"),
                             "ipv4": _ip(ipv4), "ipv6": _ip(ipv6), "seq": seq}
        forward = forward or not internal
    if not records:
        return None
    upstreams = json.loads(upstreams) if upstreams and upstreams != "[]" else None
    return client.sandbox_fragment(netns, forward, records, upstreams)


def needed(store):
    """True when some sandbox is on a network with DNS (the resolver must run)."""
    return store.conn.execute(
        "SELECT 1 FROM endpoints e JOIN networks n ON n.id = e.network_id "
        "WHERE json_extract(n.doc, '$.driver') IN (%s) "
        "AND NOT coalesce(json_extract(n.doc, '$.predefined'), 0) LIMIT 1"
        % ",".join("'%s'" % d for d in DNS_DRIVERS)).fetchone() is not None


def write_all(engine):
    """Rewrite every sandbox's file from the store and remove the files of sandboxes
    that are gone. O(sandboxes): for network rebuilds and a revived resolver only.
    Returns the names whose file changed."""
    changed = []
    present = set()
    for sandbox_id, name in engine.store.conn.execute("SELECT id, name FROM sandboxes"):
        present.add(name)
        if client.write_fragment(engine.run_dir, name, fragment(engine.store, sandbox_id)):
            changed.append(name)
    for name in client.fragment_names(engine.run_dir):
        if name.startswith(C.AGENT_REMOTE_PREFIX):
            continue   # names of sandboxes on other hosts: the host agent's files
        if name not in present and client.write_fragment(engine.run_dir, name, None):
            changed.append(name)
    return changed


def has_fragments(run_dir):
    try:
        with os.scandir(client.resolver_paths(run_dir)["fragments"]) as it:
            return any(e.name.endswith(".json") and not e.name.startswith(".") for e in it)
    except OSError:
        return False


def revive(engine, start):
    """Every module run: restart the resolver if it died, or if it runs but fails its
    health check (a serving loop dead or stuck: one control request, well under 1 ms),
    while sandboxes need it (its files are rewritten first: after a reboot run_dir is
    empty). ``start(state_dir, run_dir, restart=bool)`` starts it: installing first
    (``dns_sync.ensure_running``) or, for the info runs, which ship no resolver code,
    from the copy installed under state_dir (``reader.py``). Returns what ``start``
    returned (True when it started one), False when nothing was to do."""
    settings = resolver_settings(engine.store)
    if settings.get("state", "started") != "started":
        return False
    unhealthy = False
    if client.resolver_status(engine.run_dir).get("running"):
        if client.resolver_health(engine.run_dir) is not False:
            return False
        unhealthy = True
    if not needed(engine.store):
        return False
    client.write_resolver_config(engine.run_dir, global_config(engine.store))
    write_all(engine)
    require_dnspython()
    return start(engine.state_dir, engine.run_dir, restart=unhealthy)


def resolver_missing(engine):
    """Read-only (check mode): True when sandboxes need the resolver, it should run and
    it does not: drift the next real run repairs (``ensure_running``)."""
    if resolver_settings(engine.store).get("state", "started") != "started":
        return False
    return not client.resolver_status(engine.run_dir).get("running") and needed(
        engine.store)
