"""The engine's side of a running resolver: the files it reads, its pidfile, its socket.

Everything an operation needs to keep a running resolver in step, and nothing that
installs or starts one (``service.py`` does that): the paths under ``<run_dir>/dns``,
``config.json`` and the per-sandbox files (built and written atomically), whether the
daemon runs (pidfile checked against ``/proc``), its health and the ``update``/``reload``
requests on its control socket (JSON, one SOCK_SEQPACKET message each way; the daemon's
end is ``resolver/control.py``).

Stdlib only and small on purpose: every module run that touches DNS imports it, and
AnsiballZ ships every module_utils file a module imports. No module imports
``service.py`` (nor the resolver package, nor dnspython) to tell the resolver something.
"""
import json
import os

from ..constants import (
    DNS_CONFIG_FILE, DNS_CONFIG_VERSION, DNS_CONTROL_SOCKET, DNS_CONTROL_TIMEOUT,
    DNS_FRAGMENTS_SUBDIR, DNS_HOST_RESOLV_CONF, DNS_LOGFILE, DNS_PIDFILE,
    DNS_RESOLVER_LEGACY_SCRIPT, DNS_RESOLVER_RUNNER, DNS_RUN_SUBDIR, DNS_TTL,
    DNS_UPSTREAM_TIMEOUT,
)
from .files import atomic_write

HEALTH_TIMEOUT = 5.0     # a daemon that does not answer its health request is stuck


# --- paths ------------------------------------------------------------------------------
def resolver_paths(run_dir):
    """``{"dir", "config", "fragments", "control", "pidfile", "log"}`` under
    ``<run_dir>/dns`` (absolute)."""
    d = os.path.join(os.path.abspath(run_dir), DNS_RUN_SUBDIR)
    return {"dir": d, "config": os.path.join(d, DNS_CONFIG_FILE),
            "fragments": os.path.join(d, DNS_FRAGMENTS_SUBDIR),
            "control": os.path.join(d, DNS_CONTROL_SOCKET),
            "pidfile": os.path.join(d, DNS_PIDFILE), "log": os.path.join(d, DNS_LOGFILE)}


# --- configuration ----------------------------------------------------------------------
def resolver_config(sandboxes, networks, ttl=DNS_TTL, upstreams=(),
                    host_resolv_conf=DNS_HOST_RESOLV_CONF,
                    upstream_timeout=DNS_UPSTREAM_TIMEOUT):
    """Build the daemon's config (the contract of ``config.json``), names lower-cased.

    ``sandboxes``: ``{name: {"netns": path, "networks": [net], "forward": bool}}``
    (optionally ``"upstreams": [...]`` per sandbox). ``networks``: ``{net: [{"sandbox":
    name, "names": [sandbox, hostname, aliases...], "ipv4": ip or None, "ipv6": ip or
    None}]}``. Only sandboxes on at least one network with DNS belong in ``sandboxes``.
    """
    out_sb = {}
    for name in sorted(sandboxes):
        s = sandboxes[name]
        entry = {"netns": s["netns"], "networks": sorted(s.get("networks") or []),
                 "forward": bool(s.get("forward", True))}
        if s.get("upstreams"):
            entry["upstreams"] = list(s["upstreams"])
        out_sb[name] = entry
    out_net = {}
    for net in sorted(networks):
        eps = []
        for ep in networks[net]:
            names = []
            for n in ep.get("names") or []:
                n = str(n).lower().rstrip(".")
                if n and n not in names:
                    names.append(n)
            eps.append({"sandbox": ep.get("sandbox"), "names": names,
                        "ipv4": ep.get("ipv4"), "ipv6": ep.get("ipv6")})
        eps.sort(key=lambda e: (str(e["sandbox"]), e["names"]))
        out_net[net] = {"endpoints": eps}
    return {"version": DNS_CONFIG_VERSION, "ttl": int(ttl), "upstreams": list(upstreams),
            "host_resolv_conf": host_resolv_conf,
            "upstream_timeout": float(upstream_timeout),
            "sandboxes": out_sb, "networks": out_net}


def write_resolver_config(run_dir, config):
    """Write ``<run_dir>/dns/config.json`` atomically (mode 0600) if it changed.

    The running daemon notices the new file within 200 ms and applies it without
    closing the sockets of sandboxes that stay. Returns True when the content changed.
    """
    p = resolver_paths(run_dir)
    os.makedirs(p["dir"], mode=0o755, exist_ok=True)
    text = json.dumps(config, sort_keys=True, separators=(",", ":")) + "\n"
    return atomic_write(p["config"], text, mode=0o600)


def sandbox_fragment(netns, forward, records, upstreams=None):
    """The content of one sandbox's file for the daemon (the contract of
    ``<run_dir>/dns/sandboxes/<name>.json``), names lower-cased.

    ``records``: ``{net: {"names": [...], "ipv4": ip or None, "ipv6": ip or None,
    "seq": n}}`` for each network with DNS the sandbox is on (``seq`` orders answers
    with several addresses: older endpoints first).
    """
    nets = {}
    for net in sorted(records):
        rec = records[net]
        names = []
        for n in rec.get("names") or []:
            n = str(n).lower().rstrip(".")
            if n and n not in names:
                names.append(n)
        nets[net] = {"names": names, "ipv4": rec.get("ipv4"), "ipv6": rec.get("ipv6"),
                     "seq": int(rec.get("seq") or 0)}
    doc = {"version": DNS_CONFIG_VERSION, "netns": netns, "forward": bool(forward),
           "networks": nets}
    if upstreams:
        doc["upstreams"] = list(upstreams)
    return doc


def write_fragment(run_dir, name, fragment):
    """Write (or, for ``fragment`` None, remove) sandbox ``name``'s file atomically,
    mode 0600. O(1): nothing else is read or written. Returns True when it changed."""
    d = resolver_paths(run_dir)["fragments"]
    path = os.path.join(d, name + ".json")
    os.makedirs(d, mode=0o755, exist_ok=True)  # its existence means: files are complete
    if fragment is None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        return True
    text = json.dumps(fragment, sort_keys=True, separators=(",", ":")) + "\n"
    return atomic_write(path, text, mode=0o600)


def fragment_names(run_dir):
    """Names of the sandboxes that have a file for the daemon."""
    try:
        entries = os.listdir(resolver_paths(run_dir)["fragments"])
    except OSError:
        return []
    return sorted(e[:-5] for e in entries if e.endswith(".json") and not e.startswith("."))


def notify_resolver(run_dir, names=(), reload=False, timeout=DNS_CONTROL_TIMEOUT):
    """Tell the running daemon what changed and wait until it has applied it.

    Called by the engine after writing sandbox files (``names``) or the config
    (``reload``). The daemon re-reads only those files and replies once the sandboxes
    named answer on 127.0.0.11:53 (or failed to), so a workload started after this call
    gets answers from its first query. Returns the reply (``{"ok", "listening",
    "errors"}``), or None when no daemon answers on the control socket (not running,
    or one without a control socket): the caller then falls back to SIGHUP.
    """
    try:
        return _control_request(resolver_paths(run_dir)["control"],
                                {"op": "reload" if reload else "update",
                                 "sandboxes": sorted(names)}, timeout)
    except (OSError, ValueError):
        return None


def resolver_health(run_dir, timeout=HEALTH_TIMEOUT):
    """Whether the running daemon serves: True when it reports its UDP, TCP and
    forwarding loops alive, False when it reports one dead or stuck or does not answer
    its control socket within ``timeout``, None when it cannot tell: no control socket,
    or nobody listening on it (a daemon starting, or one that could not bind it), or a
    daemon of an older release that has no ``health`` request.

    One request on the control socket, answered by the daemon without taking its lock:
    ~0.2 ms (median, busy 2-core test machine; the pidfile check before it ~0.05 ms).
    """
    try:
        reply = _control_request(resolver_paths(run_dir)["control"], {"op": "health"},
                                 timeout)
    except (FileNotFoundError, ConnectionRefusedError):
        return None
    except (OSError, ValueError):
        return False                    # no answer in time, or garbage
    if not isinstance(reply, dict):
        return False
    if "failed" not in reply:
        return None                     # an older daemon: unknown op
    return bool(reply.get("ok"))


def _control_request(path, request, timeout):
    """Send ``request`` (a dict) on the daemon's control socket ``path`` and return the
    decoded reply (None when the daemon closed without one). Raises OSError (no
    socket: FileNotFoundError, nobody listening: ConnectionRefusedError, timeout) or
    ValueError (not JSON)."""
    import socket
    request = json.dumps(request).encode()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    dir_fd = -1
    try:
        sock.settimeout(timeout)
        address = path
        if len(os.fsencode(path)) >= 100:
            dir_fd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
            address = "/proc/self/fd/%d/%s" % (dir_fd, os.path.basename(path))
        sock.connect(address)
        sock.send(request)
        reply = sock.recv(1 << 20)
        return json.loads(reply) if reply else None
    finally:
        sock.close()
        if dir_fd >= 0:
            os.close(dir_fd)


# --- process ----------------------------------------------------------------------------
def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def _daemon_script(pid, pidfile):
    """The script process ``pid`` runs if it is our resolver with ``pidfile`` (the
    runner, or the single file of older releases), else None."""
    args = _cmdline(pid)
    if os.fsencode(pidfile) not in args:
        return None
    scripts = (DNS_RESOLVER_RUNNER.encode(), DNS_RESOLVER_LEGACY_SCRIPT.encode())
    for a in args:
        if a.endswith(scripts):
            return a
    return None


def _is_ours(pid, pidfile):
    return _daemon_script(pid, pidfile) is not None


def _runs_legacy(pid, pidfile):
    """True when ``pid`` is the single-file daemon of an older release."""
    script = _daemon_script(pid, pidfile)
    return script is not None and script.endswith(DNS_RESOLVER_LEGACY_SCRIPT.encode())


def resolver_status(run_dir):
    """``{"running": bool, "pid": int or None}`` from the pidfile and /proc.

    A pid is only ours if ``/proc/<pid>/cmdline`` runs the daemon (cnm-resolver.py, or
    cnm_resolver.py of older releases) with this pidfile: a stale pidfile whose pid now
    belongs to another process reads as not running (zombies have an empty cmdline and
    read as not running too).
    """
    pidfile = resolver_paths(run_dir)["pidfile"]
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return {"running": False, "pid": None}
    if pid > 0 and _is_ours(pid, pidfile):
        return {"running": True, "pid": pid}
    return {"running": False, "pid": None}
