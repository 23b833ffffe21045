"""What the ``bridge`` and ``overlay`` drivers share: a Linux bridge per network, a veth
per endpoint (a shared base, not a driver: drivers import it as they import ``base``).

Docker semantics: bridge ``br-<id12>`` unless ``com.docker.network.bridge.name``; the
gateway address lives on the bridge; the veth's host side is enslaved with hairpin on;
the peer is created directly inside the sandbox (NOTES: moving links costs ~25 ms);
``net.ipv4.ip_forward=1``.
"""
from .. import constants as C
from .. import validation as V
from ..errors import ValidationError
from ..ipam.mac import mac_from_ip, mac_from_key
from ..model import gateway_cidrs, gateway_for
from ..netns import sysctl, tc
from .base import Driver, set_ipv6

_BOOL_STRINGS = ("true", "false")


def bridge_mac(network):
    """The bridge's MAC, fixed for the life of the network (a bridge left to itself takes
    its lowest port's MAC, so it changed when that port left and sandboxes kept a stale
    ARP entry for their gateway). Docker's derivation: ``02:42`` + the IPv4 gateway's
    bytes; a network without IPv4 derives it from its id."""
    gateway = gateway_for(network, 4)
    return mac_from_ip(gateway) if gateway else mac_from_key(network.id)


def _endpoint_cidrs(endpoint):
    return {c for c in (endpoint.ipv4, endpoint.ipv6) if c}


class BridgedDriver(Driver):
    """A Linux bridge holding the network's gateway, sandboxes joined by veth pairs."""

    supports_bandwidth = True
    options = frozenset((C.OPT_BRIDGE_NAME, C.OPT_ENABLE_ICC, C.OPT_ENABLE_IP_MASQUERADE,
                         C.OPT_HOST_BINDING_IPV4, C.OPT_MTU, C.OPT_DEFAULT_BRIDGE))

    def validate(self, network, netlink):
        V.interface_name(network.bridge, "driver_options.%s" % C.OPT_BRIDGE_NAME)
        for key in (C.OPT_ENABLE_ICC, C.OPT_ENABLE_IP_MASQUERADE):
            if key in network.options and network.options[key] not in _BOOL_STRINGS:
                raise ValidationError("%r is not a boolean (true/false)"
                                      % network.options[key],
                                      field="driver_options.%s" % key)

    # -- network ---------------------------------------------------------------------
    def setup_network(self, network, netlink):
        host = netlink.host
        link = host.link(network.bridge)
        mac = bridge_mac(network)
        index = link["index"] if link else host.add_bridge(network.bridge, network.mtu, mac)
        if link and link["mtu"] != network.mtu:
            host.set_mtu(index, network.mtu)
        if link and link.get("mac") != mac:
            host.set_mac(index, mac)
        have = host.addresses(index) if link else set()  # a new bridge has none
        for cidr in gateway_cidrs(network):
            if cidr not in have:
                host.add_address(index, cidr)
        if not link or not link["up"]:
            host.set_up(index)
        sysctl.ensure("net.ipv4.ip_forward", 1)
        if network.enable_ipv6:
            sysctl.ensure("net.ipv6.conf.all.forwarding", 1)

    def teardown_network(self, network, netlink):
        try:
            netlink.host.delete_link(network.bridge)
        except Exception as exc:  # best effort: report, go on
            return [str(exc)]
        return []

    def network_drift(self, network, netlink):
        link = netlink.host.link(network.bridge)
        if link is None:
            return ["bridge %s is missing" % network.bridge]
        drift = []
        if link["kind"] != "bridge":
            drift.append("%s is a %s, not a bridge" % (network.bridge, link["kind"]))
        if not link["up"]:
            drift.append("bridge %s is down" % network.bridge)
        if link["mtu"] != network.mtu:
            drift.append("bridge %s mtu is %s, not %s" % (network.bridge, link["mtu"],
                                                          network.mtu))
        if link.get("mac") != bridge_mac(network):
            drift.append("bridge %s MAC is %s, not %s" % (network.bridge, link.get("mac"),
                                                          bridge_mac(network)))
        have = netlink.host.addresses(link["index"])
        for cidr in gateway_cidrs(network):
            if cidr not in have:
                drift.append("gateway %s is missing on %s" % (cidr, network.bridge))
        return drift

    # -- endpoints -------------------------------------------------------------------
    def setup_endpoint(self, network, sandbox, endpoint, netlink, fresh=False):
        self._setup_veth(network, sandbox, endpoint, netlink, fresh)
        if endpoint.bandwidth or not fresh:
            self._sync_bandwidth(endpoint, netlink)

    def _setup_veth(self, network, sandbox, endpoint, netlink, fresh):
        host = netlink.host
        inside = netlink.sandbox(sandbox.netns_path)
        hlink = slink = None
        if not fresh:  # a brand-new endpoint has nothing to look up
            hlink = host.link(endpoint.host_ifname)
            slink = inside.link(endpoint.ifname)
        if hlink is None or slink is None:
            # one half without the other is useless: start the pair again
            if hlink is not None:
                host.delete_link(endpoint.host_ifname)
            if slink is not None:
                inside.delete_link(endpoint.ifname)
            host.add_veth(endpoint.host_ifname, endpoint.ifname, sandbox.netns_path,
                          endpoint.mac, network.mtu, host.index(network.bridge))
            index = inside.index(endpoint.ifname)
            set_ipv6(network, sandbox, endpoint)
            for cidr in sorted(_endpoint_cidrs(endpoint)):  # a fresh peer has none
                inside.add_address(index, cidr)
            inside.set_up(index)
            return
        bridge = host.index(network.bridge)
        if hlink["master"] != bridge:
            host.set_master(hlink["index"], bridge)
        if not host.hairpin(hlink["index"]):
            host.set_hairpin(hlink["index"])
        if not hlink["up"]:
            host.set_up(hlink["index"])
        if hlink["mtu"] != network.mtu:
            host.set_mtu(hlink["index"], network.mtu)
        if slink["mtu"] != network.mtu:
            inside.set_mtu(slink["index"], network.mtu)
        if endpoint.mac and slink["mac"] != endpoint.mac:
            inside.set_mac(slink["index"], endpoint.mac)
        index = slink["index"]
        set_ipv6(network, sandbox, endpoint)
        have = inside.addresses(index)
        for cidr in have - _endpoint_cidrs(endpoint):
            inside.delete_address(index, cidr)
        for cidr in _endpoint_cidrs(endpoint) - have:
            inside.add_address(index, cidr)
        if not slink["up"]:
            inside.set_up(index)
        lo = inside.link("lo")
        if not lo["up"]:
            inside.set_up(lo["index"])

    def _sync_bandwidth(self, endpoint, netlink, check=False):
        """Make the host veth (and its ifb) carry ``endpoint.bandwidth`` (netns/tc.py);
        ``check``: only say what differs. Returns the differences."""
        host, want = netlink.host, endpoint.bandwidth or {}
        ifb = tc.ifb_name(endpoint.id)
        ifb_link = host.link(ifb)
        drift = []
        if "egress_rate" in want:
            if ifb_link is None:
                drift.append("egress limit: ifb %s is missing" % ifb)
                if not check:
                    host.add_ifb(ifb)
            elif not ifb_link["up"]:
                drift.append("egress limit: ifb %s is down" % ifb)
                if not check:
                    host.set_up(ifb_link["index"])
        state = tc.read_state(endpoint.host_ifname, ifb, with_ifb="egress_rate" in want)
        lines, more = tc.plan(endpoint.host_ifname, ifb, want, state)
        if not check:
            tc.apply(lines)
            if "egress_rate" not in want and ifb_link is not None:
                host.delete_link(ifb)
        return drift + more

    def unplug_endpoint(self, network, sandbox, endpoint, netlink):
        """The host veth leaves the bridge (and goes down): ~0.1 ms, where deleting it
        waits ~20 ms for the kernel. The namespace's end removes the pair."""
        host = netlink.host
        try:
            hlink = host.link(endpoint.host_ifname)
            if hlink is not None:
                if hlink["master"]:
                    host.set_master(hlink["index"], 0)
                if hlink["up"]:
                    host.set_down(hlink["index"])
        except Exception as exc:  # best effort: report, go on
            return [str(exc)]
        return []

    def release_endpoint(self, network, endpoint, netlink):
        try:
            netlink.host.delete_link(tc.ifb_name(endpoint.id))
        except Exception as exc:  # best effort: report, go on
            return [str(exc)]
        return []

    def teardown_endpoint(self, network, sandbox, endpoint, netlink):
        errors = self.release_endpoint(network, endpoint, netlink)
        try:
            gone = netlink.host.delete_link(endpoint.host_ifname)
        except Exception as exc:
            errors.append(str(exc))
            gone = False
        if not gone:
            # host half already missing: the sandbox half may still be there
            try:
                netlink.sandbox(sandbox.netns_path).delete_link(endpoint.ifname)
            except Exception:  # sandbox gone too: nothing left to remove
                pass
        return errors

    def endpoint_drift(self, network, sandbox, endpoint, netlink):
        drift = []
        hlink = netlink.host.link(endpoint.host_ifname)
        if hlink is None:
            drift.append("host veth %s is missing" % endpoint.host_ifname)
        else:
            bridge = netlink.host.index(network.bridge)
            if hlink["master"] != bridge:
                drift.append("veth %s is not attached to bridge %s"
                             % (endpoint.host_ifname, network.bridge))
            if not hlink["up"]:
                drift.append("veth %s is down" % endpoint.host_ifname)
            if endpoint.bandwidth:
                drift += self._sync_bandwidth(endpoint, netlink, check=True)
        inside = netlink.sandbox(sandbox.netns_path)
        slink = inside.link(endpoint.ifname)
        if slink is None:
            drift.append("interface %s is missing in sandbox %s"
                         % (endpoint.ifname, sandbox.name))
            return drift
        if not slink["up"]:
            drift.append("interface %s in sandbox %s is down"
                         % (endpoint.ifname, sandbox.name))
        if endpoint.mac and slink["mac"] != endpoint.mac:
            drift.append("mac of %s is %s, not %s"
                         % (endpoint.ifname, slink["mac"], endpoint.mac))
        have = inside.addresses(slink["index"])
        for cidr in sorted(_endpoint_cidrs(endpoint) - have):
            drift.append("address %s is missing on %s in sandbox %s"
                         % (cidr, endpoint.ifname, sandbox.name))
        return drift
