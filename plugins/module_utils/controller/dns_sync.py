"""Keeping the resolver's files and the per-sandbox name files in step with the store.

Called by the controller after every change of sandboxes, endpoints or DNS settings
(never in check mode). The resolver reads one small file per sandbox
(``<run_dir>/dns/sandboxes/<name>.json``: where it listens and its records on each
network) plus the global settings (``config.json``). An operation rewrites only the
files of the sandboxes it touched and tells the running resolver which ones changed over
its control socket; the resolver updates only the answers of those names. So the cost of
an attach does not grow with the number of sandboxes on the host.
"""
import os

from .. import constants as C
from ..dns import resolver_client as client
from ..errors import CnmError, DependencyError, KernelError
from ..model import Endpoint, Network, Sandbox, gateway_for
# the resolver's files and revival live in resolver_feed.py (the info path shares them);
# their names stay importable from here (recovery, endpoints, dns_settings, doctor)
from .resolver_feed import (  # noqa: F401 pylint: disable=unused-import
    DNS_DRIVERS, HOST_RESOLV_CONF, _ip, fragment, global_config, has_fragments, needed,
    require_dnspython, resolver_missing, resolver_settings, revive, uses_resolver, write_all,
)
from .session import Session

INTENT_DNS = "dns"
INTENT_ALL = "*"  # the intent key of a DNS step over every sandbox


def ensure_running(engine):
    """Every module run that may write: bring a dead (or stuck) resolver back while
    sandboxes need it, installing its code first (``resolver_feed.revive``). True when
    it was started."""
    from ..dns import service  # installs and starts: only when a start is needed
    return revive(engine, service.ensure_resolver)


def file_dirs(engine, sb):
    """Where a sandbox's resolv.conf/hosts/hostname live: under run_dir, and where
    ``ip netns exec`` looks (/etc/netns/<name>) when netns_dir is the default."""
    dirs = [os.path.join(engine.run_dir, "sandboxes", sb.name)]
    if os.path.abspath(engine.netns_dir) == C.DEFAULT_NETNS_DIR:
        dirs.append(os.path.join("/etc/netns", sb.name))
    return dirs


def render_files(engine, sb):
    """{filename: content} of the name files of sandbox ``sb``."""
    from ..dns import files
    eps = [Endpoint.from_doc(d) for d in engine.store.all("endpoints", "sandbox_id=?",
                                                          (sb.id,))]
    resolved = []
    for ep in eps:
        doc = engine.store.get("networks", ep.network_id)
        resolved.append(bool(doc) and doc["driver"] in DNS_DRIVERS and not doc.get(
            "predefined"))
    on_user_network = any(resolved)
    try:
        with open(HOST_RESOLV_CONF) as fh:
            host_text = fh.read()
    except OSError:
        host_text = ""
    dns = sb.dns or {}
    nameservers = dns.get("nameservers")
    if not on_user_network and not nameservers:
        # Docker: sandboxes only on host/none/the default bridge get the host's
        # nameservers, not 127.0.0.11; outside the host's namespace its loopback ones
        # cannot answer, so they are dropped (Google's when none is left, as Docker)
        nameservers = files.parse_resolv_conf(host_text)[0] or None
        if nameservers and sb.mode != "host":
            nameservers = files.without_loopback(nameservers) or list(
                files.FALLBACK_NAMESERVERS)
    addresses = [_ip(c) for ep in eps for c in (ep.ipv4, ep.ipv6) if c]
    extra = [tuple(e) for e in dns.get("extra_hosts") or []]
    if any(ip == files.HOST_GATEWAY for dummy, ip in extra):
        # Docker's host-gateway: the host's address as the sandbox reaches it (the
        # gateway of its first IPv4 network); left out when it has none
        gateway = next((gateway_for(Network.from_doc(engine.store.get(
            "networks", ep.network_id)), 4) for ep in eps if ep.ipv4), None)
        extra = [(name, gateway if ip == files.HOST_GATEWAY else ip)
                 for name, ip in extra if ip != files.HOST_GATEWAY or gateway]
    return files.sandbox_files(dns.get("hostname") or sb.hostname or sb.name,
                               dns.get("domainname"), addresses, extra,
                               host_resolv_conf_text=host_text, nameservers=nameservers,
                               search=dns.get("search"), options=dns.get("options"))


def sync(engine, sandboxes=(), full=False):
    """Rewrite the resolver files of ``sandboxes`` (Sandbox objects; ones removed from
    the store lose their file) or, with ``full``, of every sandbox; (re)start the
    resolver when a sandbox needs it, and return once the running resolver applied the
    change (the sandboxes named answer on 127.0.0.11:53). Then write the name files of
    ``sandboxes`` that are still in the store.

    Returns True when anything on disk changed. Raises KernelError when the resolver
    reports it cannot listen in one of the sandboxes.
    """
    run_dir = engine.run_dir
    if not os.path.isdir(client.resolver_paths(run_dir)["fragments"]):
        # first DNS change on this host, after a reboot emptied run_dir, or after an
        # upgrade from the single-file layout: every sandbox needs its file
        full = True
    config_changed = client.write_resolver_config(run_dir, global_config(engine.store))
    if full:
        names = write_all(engine)
    else:
        names = [sb.name for sb in sandboxes
                 if client.write_fragment(run_dir, sb.name, fragment(engine.store, sb.id))]
    changed = config_changed or bool(names)
    settings = resolver_settings(engine.store)
    started = False
    # a file of a sandbox this run wrote answers at once; only without one is the
    # directory listed (it holds a file per sandbox of the host)
    if settings.get("state", "started") == "started" and (any(
            _fragment_exists(run_dir, sb.name) for sb in sandboxes) or has_fragments(run_dir)):
        require_dnspython()
        from ..dns import service  # install check and start (the code of a new release)
        started = service.ensure_resolver(engine.state_dir, engine.run_dir)
    if started:
        # a new daemon loaded every file before it reported ready
        for sb in sandboxes:
            if _fragment_exists(run_dir, sb.name):
                _wait_listening(sb.netns_path)
    elif config_changed or names:
        _tell_resolver(run_dir, names, config_changed, sandboxes)
    for sb in sandboxes:
        if sb.mode == "host" or engine.store.get("sandboxes", sb.id) is None:
            continue
        changed |= _write_name_files(engine, sb)
    return changed


def _write_name_files(engine, sb):
    """Write the resolv.conf, hosts and hostname of ``sb`` and of the sandboxes sharing
    its namespace (``network_mode: container:``: the owner's files, as Docker gives a
    container-mode sidecar its owner's); a sharer itself gets its owner's. Returns True
    when a file changed. One index lookup for the sharers."""
    from ..dns import files
    owner = sb
    if sb.mode == "container":
        owner = Sandbox.from_doc(engine.store.get("sandboxes", sb.shares))
        if owner is None:
            return False
    rendered = render_files(engine, owner)
    changed = bool(files.write_sandbox_files(file_dirs(engine, owner), rendered))
    for doc in engine.store.all("sandboxes", "json_extract(doc, '$.shares') = ?",
                                (owner.id,)):
        sharer = Sandbox.from_doc(doc)
        changed |= bool(files.write_sandbox_files(file_dirs(engine, sharer), rendered))
    return changed


def _fragment_exists(run_dir, name):
    return os.path.exists(os.path.join(client.resolver_paths(run_dir)["fragments"],
                                       name + ".json"))


def _tell_resolver(run_dir, names, reload, sandboxes):
    """Make a running resolver apply the change now: over its control socket (it
    replies once done), else (an older daemon) with SIGHUP and polling for its sockets.
    A stopped resolver is left alone: it reads every file when it starts."""
    if not client.resolver_status(run_dir).get("running"):
        return
    reply = client.notify_resolver(run_dir, names, reload=reload)
    if reply is None:
        _reload(run_dir)
        for sb in sandboxes:
            if _fragment_exists(run_dir, sb.name):
                _wait_listening(sb.netns_path)
        return
    errors = reply.get("errors") or {}
    if errors:
        raise KernelError("the DNS resolver cannot listen in %s" % "; ".join(
            "%s (%s)" % item for item in sorted(errors.items())))


def _reload(run_dir):
    """SIGHUP: the resolver re-reads its config now instead of at its next poll, so a
    removed sandbox's sockets (which keep its namespace alive) close at once."""
    import signal
    pid = client.resolver_status(run_dir).get("pid")
    if pid:
        try:
            os.kill(pid, signal.SIGHUP)
        except OSError:
            pass


def _wait_listening(netns, timeout=1.0):
    """Return once the resolver listens on 127.0.0.11 inside ``netns`` (bounded): a
    workload started right after this run gets answers from its first query. The
    resolver listens at a private port (its redirect from port 53, written before it
    reports the sandbox, sends queries there) or, without a redirect, on port 53: a
    UDP socket on 127.0.0.11 is taken as its. (Only used after the resolver was
    started, which reports ready once listening, and for an older daemon.)"""
    import time
    from ..netns import namespace
    from ..ports.allocator import diag_sockets
    deadline = time.monotonic() + timeout
    while True:
        try:
            with namespace.entered(netns):
                found = any(ip == C.DNS_LISTEN_ADDRESS
                            for dummy, ip, dummy2 in diag_sockets("udp"))
        except (OSError, KernelError):
            return  # the namespace vanished meanwhile: nothing to wait for
        if found or time.monotonic() > deadline:
            return
        time.sleep(0.0005)


class DnsSync(Session):
    """The DNS step of every operation that changes sandboxes, endpoints or settings."""

    def _sync_dns(self, sandboxes=(), full=False):
        """Rewrite the resolver files of ``sandboxes`` (every sandbox with ``full``) from
        the store, starting the resolver when a sandbox needs it, and the name files of
        ``sandboxes``."""
        return sync(self, sandboxes, full=full)

    def _intend_dns(self, *sandboxes, full=False):
        """Called before (or in the transaction of) the store write that changes what
        ``sandboxes`` resolve or serve: records the DNS step as intent, so a run killed
        before ``_sync_dns_safely`` is rolled forward by the next run (recovery.py).
        ``full``: every sandbox's records (network changes). Nothing in check mode."""
        if self.check_mode:
            return
        if full:
            self.store.set_intent(INTENT_DNS, INTENT_ALL, {})
        for sb in sandboxes:
            if sb is not None:
                self.store.set_intent(INTENT_DNS, sb.name, sb.to_doc())

    def _sync_dns_safely(self, result, *sandboxes, full=False):
        """DNS follows the network change; a DNS failure is a warning, not a failed
        network operation (the links and addresses are in place and stay). On success
        the intents of ``_intend_dns`` are cleared; on failure they stay, so the next
        run reports and retries the step."""
        try:
            self._sync_dns(sandboxes, full=full)
        except DependencyError:
            raise  # a missing library fails the task (its intent stays for the next run)
        except CnmError as exc:
            result.warnings.append("DNS: %s" % exc)
            return
        self._clear_dns_intents(sandboxes, full)

    def _clear_dns_intents(self, sandboxes, full):
        """The DNS step of ``sandboxes`` (of all, with ``full``) is done."""
        if full:
            for kind, key, dummy in self.store.intents():
                if kind == INTENT_DNS:
                    self.store.clear_intent(INTENT_DNS, key)
            return
        for sb in sandboxes:
            if sb is not None and self.store.intent(INTENT_DNS, sb.name) is not None:
                self.store.clear_intent(INTENT_DNS, sb.name)
