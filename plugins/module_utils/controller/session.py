"""The core of one engine operation: its session.

Owns what every operation shares: the store (opened per call, under the host lock the
store takes), the netlink handles, the firewall backend chosen once per run, check
mode, and the lookups and saves of networks, sandboxes and endpoints. It imports none
of the object files above it; crash recovery is the ``_on_open`` hook that the top
layer (``recovery.py``) fills in."""
import os

from .. import constants as C
from ..model import Endpoint, Network, Sandbox, fixed_id
from ..netns.links import Netlink
from ..store import Store

PREDEFINED = {"host": "host", "none": "null"}
LOOPBACK_INDEX = 1  # loopback is interface 1 in every network namespace


def _predefined_network(name):
    return Network(id=fixed_id(name), name=name, driver=PREDEFINED[name], predefined=True,
                   created="1970-01-01T00:00:00Z")


class Session(object):
    """One operation's session: store, netlink, firewall, check mode; lookups and saves."""

    def __init__(self, state_dir=C.DEFAULT_STATE_DIR, run_dir=C.DEFAULT_RUN_DIR,
                 netns_dir=C.DEFAULT_NETNS_DIR, firewall_backend="auto", check_mode=False,
                 cluster=None):
        self.state_dir = state_dir
        self.run_dir = run_dir
        self.netns_dir = netns_dir
        self.firewall_backend = firewall_backend
        self.check_mode = check_mode
        self.store = None
        self.netlink = None
        self._firewall = None
        self._read_only = False
        self._repairs = []  # what the open hook rolled forward (or would, in check mode)
        # cluster_store, cluster_store_tls, cluster_store_auth, advertise_address: read
        # only when a global network is touched (overlay.py opens the store then)
        self.cluster_options = dict(cluster or {})
        self._cluster_handles = None

    def _open(self):
        fresh = not os.path.exists(os.path.join(self.state_dir, C.STORE_FILE))
        if (self.check_mode or self._read_only) and fresh:
            # check mode (or a read) on a fresh host creates nothing, not even the database
            self.store = Store.open_memory()
        else:
            self.store = Store.open(self.state_dir)
        self.netlink = Netlink()
        self._ensure_predefined()
        self._on_open(fresh)

    def _on_open(self, fresh):
        """Called once the store is open, before the operation runs; ``fresh``: the
        store did not exist. The top layer (``recovery.py``) fills it in."""

    def _close(self):
        if self._cluster_handles:
            self._cluster_handles[0].close()
            self._cluster_handles = None
        if self.netlink:
            self.netlink.close()
        if self.store:
            self.store.close()
        self.store = self.netlink = None

    def _run(self, func, *args):
        """Called by every public verb: open the session, run ``func(*args)`` (which
        returns a Result), close. Steps a dead run left undone and the open hook rolled
        forward (or, in check mode, found) make the result changed, as repairs."""
        self._repairs = []
        self._open()
        try:
            result = func(*args)
        finally:
            self._close()
        if self._repairs:
            result.changed = True
            result.actions = ["repair: %s" % r for r in self._repairs] + result.actions
            result.diff.setdefault("before", {})["interrupted"] = list(self._repairs)
            result.diff.setdefault("after", {})["interrupted"] = []
        return result

    def _ensure_predefined(self):
        for name in PREDEFINED:
            if self.store.get("networks", name=name) is None:
                self.store.put("networks", _predefined_network(name).to_doc(), name=name)

    def _network(self, name):
        return Network.from_doc(self.store.get("networks", name=name))

    def _network_by_id(self, network_id):
        return Network.from_doc(self.store.get("networks", network_id))

    def _sandbox(self, name):
        return Sandbox.from_doc(self.store.get("sandboxes", name=name))

    def _sandbox_by_id(self, sandbox_id):
        return Sandbox.from_doc(self.store.get("sandboxes", sandbox_id))

    def _endpoints(self, network_id=None, sandbox_id=None):
        if network_id is not None:
            docs = self.store.all("endpoints", "network_id=?", (network_id,))
        elif sandbox_id is not None:
            docs = self.store.all("endpoints", "sandbox_id=?", (sandbox_id,))
        else:
            docs = self.store.all("endpoints")
        return [Endpoint.from_doc(d) for d in docs]

    def _endpoint(self, network_id, sandbox_id):
        for ep in self._endpoints(sandbox_id=sandbox_id):
            if ep.network_id == network_id:
                return ep
        return None

    def _save_network(self, net):
        self.store.put("networks", net.to_doc(), name=net.name)

    def _save_sandbox(self, sb):
        self.store.put("sandboxes", sb.to_doc(), name=sb.name)

    def _save_endpoint(self, ep):
        self.store.put("endpoints", ep.to_doc(), network_id=ep.network_id,
                       sandbox_id=ep.sandbox_id)

    @property
    def firewall(self):
        """The firewall backend of this run, chosen once (``auto`` probes nftables, then
        iptables); drivers never decide firewalling. Raises ValidationError for an
        unknown name, DependencyError when no backend works."""
        if self._firewall is None:
            from ..firewall import get_backend
            self._firewall = get_backend(self.firewall_backend)
        return self._firewall
