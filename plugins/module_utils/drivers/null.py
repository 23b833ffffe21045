"""The ``null`` driver (predefined network ``none``): loopback only."""
from .base import Driver


class NullDriver(Driver):
    name = "null"
    has_interface = False
    uses_ipam = False

    def setup_endpoint(self, network, sandbox, endpoint, netlink, fresh=False):
        handle = netlink.sandbox(sandbox.netns_path)
        handle.set_up(handle.index("lo"))

    def endpoint_drift(self, network, sandbox, endpoint, netlink):
        handle = netlink.sandbox(sandbox.netns_path)
        lo = handle.link("lo")
        return [] if lo and lo["up"] else ["loopback of sandbox %s is down" % sandbox.name]
