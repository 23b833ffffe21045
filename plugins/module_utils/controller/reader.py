"""Reading: ``cnm_network_info`` and ``cnm_sandbox_info`` from the store alone.

The info modules run through ``Reader``, not ``Engine``: a read touches no kernel object,
so its module imports no netlink, firewall, driver or resolver code (AnsiballZ ships
every module_utils file a module imports, and a module run pays for every import). The
queries themselves (``network_info``, ``sandbox_info``) are shared with ``Engine``, whose
verbs of the same names call them. As every module run outside check mode, a read brings
a dead resolver back, from the copy installed under state_dir (``resolver_feed.revive``);
it writes nothing else.
"""
import os

from .. import constants as C
from .. import inspect as shape
from ..dns import resolver_process
from ..errors import CnmError, ValidationError
from ..model import Endpoint, Network, Sandbox, fixed_id
from ..store import Store
from .resolver_feed import revive
from .result import Result

# the networks every host has (session.py makes them in the store on first write)
PREDEFINED_DRIVERS = {"host": "host", "none": "null"}


def _endpoints(store, **where):
    if "network_id" in where:
        docs = store.all("endpoints", "network_id=?", (where["network_id"],))
    else:
        docs = store.all("endpoints", "sandbox_id=?", (where["sandbox_id"],))
    return [Endpoint.from_doc(d) for d in docs]


def _selected(nets, name, filters):
    if name:
        prefix = name if len(name) >= 12 else None
        nets = [n for n in nets if name in (n.name, n.id) or (
            prefix and n.id.startswith(prefix))]
    for key, value in filters.items():
        values = value if isinstance(value, list) else [value]
        if key == "driver":
            nets = [n for n in nets if n.driver in values]
        elif key == "name":
            nets = [n for n in nets if any(v in n.name for v in values)]
        elif key == "label":
            nets = [n for n in nets if all(_has_label(n, v) for v in values)]
        else:
            raise ValidationError("unknown filter %r (driver, label, name)" % key,
                                  field="filters.%s" % key)
    return nets


def _has_label(net, spec):
    key, dummy, value = str(spec).partition("=")
    return key in net.labels and (not value or net.labels[key] == value)


def network_info(store, params):
    """cnm_network_info's query: networks by ``name`` (name, id or an id prefix of 12+
    characters) and ``filters`` (driver, label, name), in ``docker network inspect``'s
    shape. Reads only. Never fails for a missing name (``exists`` is False); raises
    ValidationError naming ``filters.<key>`` for an unknown filter."""
    nets = _selected([Network.from_doc(d) for d in store.all("networks")],
                     params.get("name"), params.get("filters") or {})
    out = []
    for net in nets:
        eps = _endpoints(store, network_id=net.id)
        sbs = {ep.sandbox_id: Sandbox.from_doc(store.get("sandboxes", ep.sandbox_id))
               for ep in eps}
        out.append(shape.network(net, eps, sbs))
    return Result(data={"exists": bool(out), "networks": out})


def sandbox_info(store, params):
    """cnm_sandbox_info's query: every sandbox (or the one named ``name``) with its
    endpoints and DNS settings. Reads only; a missing name gives ``exists`` False."""
    sbs = [Sandbox.from_doc(d) for d in store.all("sandboxes")]
    if params.get("name"):
        sbs = [s for s in sbs if s.name == params["name"]]
    out = []
    for sb in sbs:
        eps = _endpoints(store, sandbox_id=sb.id)
        nets = {ep.network_id: Network.from_doc(store.get("networks", ep.network_id))
                for ep in eps}
        out.append(shape.sandbox(sb, eps, nets))
    return Result(data={"exists": bool(out), "sandboxes": out})


class Reader(object):
    """The info verbs of one module run, with ``Engine``'s constructor: ``network_info``
    and ``sandbox_info``. The store is read under the host lock (a run that writes is
    never seen half-way); on a host without a store nothing is created."""

    def __init__(self, state_dir=C.DEFAULT_STATE_DIR, run_dir=C.DEFAULT_RUN_DIR,
                 netns_dir=C.DEFAULT_NETNS_DIR, firewall_backend="auto", check_mode=False,
                 cluster=None):
        self.state_dir = state_dir
        self.cluster_options = dict(cluster or {})  # unused: reads use the local copy
        self.run_dir = run_dir
        self.netns_dir = netns_dir
        self.firewall_backend = firewall_backend  # unused: a read touches no firewall
        self.cluster = cluster or {}  # unused: a read touches no cluster store
        self.check_mode = check_mode
        self.store = None

    def network_info(self, params):
        """cnm_network_info (see ``network_info``). Raises ValidationError."""
        return self._read(network_info, params)

    def sandbox_info(self, params):
        """cnm_sandbox_info (see ``sandbox_info``)."""
        return self._read(sandbox_info, params)

    def _read(self, query, params):
        fresh = not os.path.exists(os.path.join(self.state_dir, C.STORE_FILE))
        self.store = Store.open_memory() if fresh else Store.open(self.state_dir)
        try:
            for name, driver in PREDEFINED_DRIVERS.items():
                if self.store.get("networks", name=name) is None:  # as Session does
                    net = Network(id=fixed_id(name), name=name, driver=driver,
                                  predefined=True, created="1970-01-01T00:00:00Z")
                    self.store.put("networks", net.to_doc(), name=name)
            if not fresh and not self.check_mode:
                self._revive_resolver()
                self._revive_agent()
            return query(self.store, params)
        finally:
            self.store.close()
            self.store = None

    def _revive_resolver(self):
        """A dead resolver is started again from its installed copy (a failure is left
        to the next writing run, which reports it)."""
        try:
            revive(self, resolver_process.revive_installed)
        except CnmError:
            pass

    def _revive_agent(self):
        """A dead host agent (a host with overlay networks) is started again from its
        configuration, as by any module run; a failure is left to the next writing run."""
        from ..cluster.agent_process import revive_agent
        try:
            revive_agent(self.state_dir, self.run_dir)
        except (CnmError, OSError):
            pass
