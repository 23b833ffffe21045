"""The files the engine writes for the daemon: ``config.json`` and one file per sandbox.

Config (JSON, unknown keys ignored): ``version`` (1), ``ttl`` (600), ``upstreams``
(``["ip", "ip:port", "[v6]:port"]``; empty: the nameservers of ``host_resolv_conf``,
re-read when that file changes), ``host_resolv_conf`` (/etc/resolv.conf),
``upstream_timeout`` (seconds per upstream try, 1.0).
Sandboxes: one file each, ``sandboxes/<name>.json`` beside the config: ``{"netns":
path, "forward": bool, "upstreams": [...] (optional, replaces the global list for that
sandbox, like Docker's --dns on user-defined networks), "networks": {net: {"names":
[...], "ipv4", "ipv6", "seq"}}}`` (its records on each network it resolves; ``seq``
orders several addresses of one name, older first). The config may also hold the
older whole layout, ``sandboxes`` (``{name: {"netns", "networks": [net], "forward",
"upstreams"}}``) and ``networks`` (``{net: {"endpoints": [{"sandbox", "names", "ipv4",
"ipv6"}]}}``); a sandbox file wins over it.
"""
import json
import logging
import os

from .catalog import DEFAULT_TTL, Catalog, Spec
from .logs import log, log_once

FRAGMENTS_DIR = "sandboxes"  # beside the config: one <sandbox>.json per sandbox


def spec_from_fragment(doc):
    """A Spec from one sandbox file (``<config dir>/sandboxes/<name>.json``), or None
    when the document is not usable. Tolerant: unknown keys are ignored."""
    if not isinstance(doc, dict):
        return None
    records = {}
    nets = doc.get("networks")
    for net, rec in (nets.items() if isinstance(nets, dict) else ()):
        if not isinstance(rec, dict):
            continue
        names = [str(x) for x in (rec.get("names") or []) if x]
        try:
            seq = int(rec.get("seq") or 0)
        except (TypeError, ValueError):
            seq = 0
        records[str(net)] = (names, rec.get("ipv4"), rec.get("ipv6"), seq)
    ups = doc.get("upstreams")
    netns = doc.get("netns")
    return Spec(str(netns) if netns else None, tuple(sorted(records)),
                bool(doc.get("forward", True)), tuple(str(u) for u in ups) if ups else None,
                records)


def specs_from_config(cfg):
    """``{sandbox: Spec}`` from a whole config in the version 1 layout (``sandboxes`` and
    ``networks`` keys; a network's endpoint may belong to a sandbox without an entry)."""
    specs = {}
    seq = 0
    for net, ndata in (cfg.get("networks") or {}).items():
        if not isinstance(ndata, dict):
            continue
        for ep in ndata.get("endpoints") or []:
            if not isinstance(ep, dict):
                continue
            names = [str(x) for x in (ep.get("names") or []) if x]
            sandbox = str(ep.get("sandbox") or (names[0] if names else ""))
            if not sandbox:
                continue
            seq += 1
            spec = specs.get(sandbox)
            if spec is None:
                spec = specs[sandbox] = Spec(None, (), True, None, {})
            spec.records[str(net)] = (names, ep.get("ipv4"), ep.get("ipv6"), seq)
    for sb, sdata in (cfg.get("sandboxes") or {}).items():
        if not isinstance(sdata, dict):
            continue
        spec = specs.get(str(sb))
        if spec is None:
            spec = specs[str(sb)] = Spec(None, (), True, None, {})
        ups = sdata.get("upstreams")
        spec.netns = str(sdata["netns"]) if sdata.get("netns") else None
        spec.nets = tuple(sorted(str(n) for n in (sdata.get("networks") or [])))
        spec.forward = bool(sdata.get("forward", True))
        spec.upstreams = tuple(str(u) for u in ups) if ups else None
    for spec in specs.values():
        if spec.netns is None:
            spec.nets = tuple(sorted(spec.records))
    return specs


def build_views(cfg):
    """Per-sandbox views from a whole config: ``{sandbox: (netns, view)}``.

    A view is ``(table, names, forward, upstreams)``: ``table`` maps the question key
    to a prebuilt entry, ``names`` is the set of local name keys (for NODATA), and
    sandboxes with the same networks share one table.
    """
    return Catalog.from_specs(specs_from_config(cfg), cfg.get("ttl", DEFAULT_TTL)).desired()


def file_stamp(path):
    """What tells that a file changed: (mtime, inode, size, device), None if missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ino, st.st_size, st.st_dev)


class EngineFiles:
    """Reads ``config_path`` and the sandbox files beside it, tolerant of bad ones: an
    unreadable config keeps the previous one, an unreadable sandbox file is skipped."""

    def __init__(self, config_path):
        self.config_path = config_path
        self.fragments_dir = os.path.join(os.path.dirname(os.path.abspath(config_path)),
                                          FRAGMENTS_DIR)

    def stamp(self):
        """Changes when the config or the set of sandbox files changes."""
        return (file_stamp(self.config_path), file_stamp(self.fragments_dir))

    def load_config(self):
        """The config as a dict ({} when there is none yet), or None when it cannot be
        read (the caller keeps the previous one)."""
        try:
            with open(self.config_path, encoding="utf-8") as f:
                cfg = json.load(f)
        except FileNotFoundError:
            log_once("cfg-missing", logging.INFO, "config %s does not exist (yet)",
                     self.config_path)
            return {}
        except (OSError, ValueError) as e:
            log.error("cannot read config %s: %s (keeping the previous one)",
                      self.config_path, e)
            return None
        if not isinstance(cfg, dict):
            log.error("config %s is not a JSON object (keeping the previous one)",
                      self.config_path)
            return None
        if cfg.get("version", 1) != 1:
            log_once("cfg-version", logging.WARNING,
                     "config version %r is newer than this resolver knows (1); "
                     "reading the keys it knows", cfg.get("version"))
        return cfg

    def load_catalog(self, cfg):
        """A Catalog from the config's own sandboxes/networks (version 1 layout) and the
        sandbox files in ``fragments_dir`` (which win)."""
        specs = specs_from_config(cfg)
        try:
            entries = os.listdir(self.fragments_dir)
        except OSError:
            entries = []
        for entry in entries:
            if entry.endswith(".json") and not entry.startswith("."):
                spec = self.read_fragment(entry[:-5])
                if spec is not None:
                    specs[entry[:-5]] = spec
        return Catalog.from_specs(specs, cfg.get("ttl", DEFAULT_TTL))

    def read_fragment(self, name):
        """The Spec in sandbox ``name``'s file, or None (no file, or unreadable)."""
        path = os.path.join(self.fragments_dir, name + ".json")
        try:
            with open(path, encoding="utf-8") as f:
                return spec_from_fragment(json.load(f))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.error("cannot read %s: %s (ignored)", path, e)
            return None
