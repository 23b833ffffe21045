"""``macvlan`` and ``ipvlan`` drivers: endpoints are sub-interfaces of a host ``parent``.

The sub-interface is created directly inside the sandbox (IFLA_NET_NS_FD at creation).
The gateway is a router on the parent's LAN, so the network has no bridge. ipvlan is
not loadable on the CI kernel (NOTES.md); its tests skip there.

A parent named ``<iface>.<vid>`` that does not exist is made as an 802.1q sub-interface
of ``<iface>`` (Docker's behaviour): the network that made it records so
(``Network.created_parent``) and removes it when it goes, unless another network still
uses it, which then inherits the record (``parent_handover``, applied by the
controller). A network whose parent existed already never removes it.
"""
from .. import constants as C
from .. import validation as V
from ..errors import KernelError, ValidationError
from .base import Driver, set_ipv6

MACVLAN_MODES = ("bridge", "private", "vepa", "passthru")
IPVLAN_MODES = ("l2", "l3", "l3s")


class MacvlanDriver(Driver):
    name = "macvlan"
    kind = "macvlan"
    mode_option = C.OPT_MACVLAN_MODE
    modes = MACVLAN_MODES
    default_mode = "bridge"
    options = frozenset((C.OPT_PARENT, C.OPT_MACVLAN_MODE, C.OPT_MTU))

    def _mode(self, network):
        return network.options.get(self.mode_option, self.default_mode)

    def validate(self, network, netlink):
        parent = network.options.get(C.OPT_PARENT)
        if not parent:
            raise ValidationError("is required for the %s driver" % self.name,
                                  field="driver_options.parent")
        V.interface_name(parent, "driver_options.%s" % C.OPT_PARENT)
        if netlink is not None and netlink.host.index(parent) is None:
            vlan = V.vlan_parent(parent, "driver_options.%s" % C.OPT_PARENT)
            if vlan is None:
                raise ValidationError("interface %r does not exist on the host" % parent,
                                      field="driver_options.parent")
            if netlink.host.index(vlan[0]) is None:
                raise ValidationError("interface %r (the link of VLAN %d) does not exist "
                                      "on the host" % vlan, field="driver_options.parent")
            network.created_parent = True  # recorded with the intent, before it is made
        if self._mode(network) not in self.modes:
            raise ValidationError("%r is not one of %s"
                                  % (self._mode(network), ", ".join(self.modes)),
                                  field="driver_options.%s" % self.mode_option)

    def setup_network(self, network, netlink):
        """Make a missing ``<iface>.<vid>`` parent (an 802.1q sub-interface, up) and
        record that this network made it; any other missing parent is an error."""
        parent = network.options.get(C.OPT_PARENT)
        host = netlink.host
        if host.index(parent) is not None:
            return
        vlan = V.vlan_parent(parent, "driver_options.%s" % C.OPT_PARENT)
        lower = host.index(vlan[0]) if vlan else None
        if lower is None:
            raise KernelError("parent interface %s is missing" % parent)
        host.add_vlan(parent, lower, vlan[1])
        network.created_parent = True

    def teardown_network(self, network, netlink):
        """Remove the VLAN parent if this network made it (and still owns it)."""
        if not network.created_parent:
            return []
        try:
            netlink.host.delete_link(network.options[C.OPT_PARENT])
        except Exception as exc:  # best effort: report, go on
            return [str(exc)]
        return []

    @staticmethod
    def parent_handover(network, others):
        """Who keeps the VLAN parent when ``network`` is removed or rebuilt:
        ``(remove, heir)``. ``others``: every other network. The parent goes only with
        the last network using it; a surviving user of a parent ``network`` made becomes
        its maker (the oldest one): the controller sets ``heir.created_parent`` and
        clears ``network.created_parent`` before ``teardown_network``. Pure."""
        if not network.created_parent:
            return False, None
        parent = network.options.get(C.OPT_PARENT)
        users = sorted((n for n in others if _uses_parent(n, parent, network.id)),
                       key=lambda n: (n.created, n.id))
        if users:
            return False, users[0]
        return True, None

    def network_drift(self, network, netlink):
        parent = network.options.get(C.OPT_PARENT)
        return [] if netlink.host.index(parent) is not None else [
            "parent interface %s is missing" % parent]

    def _mode_data(self, network):
        """IFLA_INFO_DATA carrying the mode (IFLA_MACVLAN_MODE u32 / IFLA_IPVLAN_MODE u16)."""
        import struct
        mode = self._mode(network)
        if self.kind == "macvlan":
            value = {"private": 1, "vepa": 2, "bridge": 4, "passthru": 8}[mode]
            return struct.pack("=HHI", 8, 1, value)
        value = {"l2": 0, "l3": 1, "l3s": 2}[mode]
        return struct.pack("=HHHxx", 6, 1, value)

    def setup_endpoint(self, network, sandbox, endpoint, netlink, fresh=False):
        inside = netlink.sandbox(sandbox.netns_path)
        slink = inside.link(endpoint.ifname)
        if slink is None:
            parent = netlink.host.index(network.options[C.OPT_PARENT])
            if parent is None and network.created_parent:
                self.setup_network(network, netlink)  # ours and gone: make it again
                parent = netlink.host.index(network.options[C.OPT_PARENT])
            if parent is None:
                raise KernelError("parent interface %s is missing"
                                  % network.options[C.OPT_PARENT])
            # made under a name of its own, then renamed inside: some kernels (Debian
            # 12's 6.1) check the name in the host's namespace too, where eth0 exists
            temporary = "cnm%s" % endpoint.id[:10]
            netlink.host.add_sublink(temporary, self.kind, parent, sandbox.netns_path,
                                     self._mode_data(network), mtu=network.mtu or None,
                                     mac=endpoint.mac if self.kind == "macvlan" else None)
            inside.rename(inside.index(temporary), endpoint.ifname)
            slink = inside.link(endpoint.ifname)
        set_ipv6(network, sandbox, endpoint)
        have = inside.addresses(slink["index"])
        for cidr in {c for c in (endpoint.ipv4, endpoint.ipv6) if c} - have:
            inside.add_address(slink["index"], cidr)
        if not slink["up"]:
            inside.set_up(slink["index"])
        lo = inside.link("lo")
        if not lo["up"]:
            inside.set_up(lo["index"])

    def unplug_endpoint(self, network, sandbox, endpoint, netlink):
        """The sub-interface goes down inside the namespace; the namespace's end removes
        it."""
        try:
            inside = netlink.sandbox(sandbox.netns_path)
            slink = inside.link(endpoint.ifname)
            if slink is not None and slink["up"]:
                inside.set_down(slink["index"])
        except Exception as exc:  # the namespace is gone already: nothing answers
            return [] if "does not exist" in str(exc) else [str(exc)]
        return []

    def teardown_endpoint(self, network, sandbox, endpoint, netlink):
        try:
            netlink.sandbox(sandbox.netns_path).delete_link(endpoint.ifname)
        except Exception:  # sandbox gone: the sub-interface went with it
            pass
        return []

    def endpoint_drift(self, network, sandbox, endpoint, netlink):
        inside = netlink.sandbox(sandbox.netns_path)
        slink = inside.link(endpoint.ifname)
        if slink is None:
            return ["interface %s is missing in sandbox %s"
                    % (endpoint.ifname, sandbox.name)]
        have = inside.addresses(slink["index"])
        return ["address %s is missing on %s" % (c, endpoint.ifname)
                for c in (endpoint.ipv4, endpoint.ipv6) if c and c not in have]


def _uses_parent(network, parent, exclude_id):
    """Whether ``network`` (not ``exclude_id``) is a macvlan/ipvlan on ``parent``."""
    if network.id == exclude_id or network.driver not in ("macvlan", "ipvlan"):
        return False
    return network.options.get(C.OPT_PARENT) == parent


class IpvlanDriver(MacvlanDriver):
    name = "ipvlan"
    kind = "ipvlan"
    mode_option = C.OPT_IPVLAN_MODE
    modes = IPVLAN_MODES
    default_mode = "l2"
    options = frozenset((C.OPT_PARENT, C.OPT_IPVLAN_MODE, C.OPT_MTU))
