"""Call the engine in-process as if it ran on a simulated host."""
from harness import in_netns

from ansible_collections.cnm.core.plugins.module_utils.controller import Engine


class HostEngine:
    """``HostEngine(host).network(params)`` runs Engine.network inside ``host``."""

    def __init__(self, host, check_mode=False, firewall_backend="none"):
        self.host = host
        self.check_mode = check_mode
        self.firewall_backend = firewall_backend

    def __getattr__(self, verb):
        def call(params=None, **kw):
            params = dict(params or {}, **kw)
            engine = Engine(state_dir=self.host.state_dir, run_dir=self.host.run_dir,
                            netns_dir=self.host.netns_dir, check_mode=self.check_mode,
                            firewall_backend=self.firewall_backend)
            with in_netns(self.host.path):
                return getattr(engine, verb)(params)
        return call
