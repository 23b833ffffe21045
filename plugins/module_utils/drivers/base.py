"""The driver interface: what every network driver implements (netavark's trait idea).

A driver only touches links, addresses and sysctls; it never decides firewalling (the
controller hands the firewall its data) and never writes the store. Every ``setup_*``
verb is idempotent ("make it so"): the controller calls it both to create and to
repair drift, so a missing bridge or veth is simply made again.
"""
from ..netns import sysctl


class Driver:
    """Base class. ``name`` is the driver name users give in ``cnm_network``."""

    name = None
    #: endpoints of this driver get an interface and addresses inside the sandbox
    has_interface = True
    #: networks of this driver get IPAM pools (subnets, gateway)
    uses_ipam = True
    #: option keys this driver understands (anything else is rejected)
    options = frozenset()
    #: endpoints of this driver can carry ``bandwidth`` limits (a host-side veth to shape)
    supports_bandwidth = False

    def validate(self, network, netlink):
        """Check driver options before anything is made. Raises ValidationError."""

    def setup_network(self, network, netlink):
        """Make the network's kernel objects exist as described. Idempotent."""

    def teardown_network(self, network, netlink):
        """Remove the network's kernel objects; best effort. Returns a list of errors."""
        return []

    def parent_handover(self, network, others):
        """When ``network`` is removed or rebuilt: ``(remove its parent link, the network
        of ``others`` that inherits the parent or None)``. Only drivers that make their
        parent (macvlan/ipvlan on ``<iface>.<vid>``) have one to hand over."""
        return False, None

    def network_drift(self, network, netlink):
        """What is missing or different in the kernel for ``network`` ([] = in sync)."""
        return []

    def setup_endpoint(self, network, sandbox, endpoint, netlink, fresh=False):
        """Make the endpoint's interface exist in the sandbox with its addresses. Idempotent.

        ``fresh``: the endpoint was just created, nothing of it exists yet (skip lookups).
        """

    def teardown_endpoint(self, network, sandbox, endpoint, netlink):
        """Remove the endpoint's interfaces; best effort, works if the sandbox is gone.

        Returns a list of errors.
        """
        return []

    def unplug_endpoint(self, network, sandbox, endpoint, netlink):
        """Called when the sandbox's namespace is removed whole (its interfaces go with
        it, unless something still holds the namespace: the resolver closes its sockets
        there a moment later, a process may keep it open). Makes the endpoint's interface
        inert at once, cheaply (no deletion, which waits for the kernel), so that it
        never answers for the endpoint's address meanwhile: an address given again at
        once (a sandbox made again) is never on the network twice. Best effort; errors."""
        return []

    def release_endpoint(self, network, endpoint, netlink):
        """Remove what ``endpoint`` has in the HOST namespace besides its interface (an
        ifb of a bandwidth limit); to be called also when the sandbox's namespace is
        removed whole (its interfaces go with it, these do not). Best effort; errors."""
        return []

    def endpoint_drift(self, network, sandbox, endpoint, netlink):
        """What is missing or different for ``endpoint`` ([] = in sync)."""
        return []


def set_ipv6(network, sandbox, endpoint):
    """An interface on a network without IPv6 gets ``disable_ipv6=1`` (no link-local
    address, no router solicitations), as Docker does; one on an IPv6 network keeps
    IPv6. Called by the drivers when an interface is made or checked in a sandbox."""
    sysctl.ensure_in(sandbox.netns_path, "net.ipv6.conf.%s.disable_ipv6" % endpoint.ifname,
                     0 if network.enable_ipv6 else 1)
