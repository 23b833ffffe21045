"""A sandbox's default routes, chosen by the endpoints' ``gw_priority``."""
from ..drivers import get_driver
from ..model import CREATING, READY, gateway_for
from .session import Session


class Routes(Session):
    """Default routes of sandboxes: wanted, drift, sync."""

    def _wanted_gateways(self, sb):
        """{family: (gateway, ifname)} the sandbox's default routes should use.

        The endpoint with the highest gw_priority wins, ties go to the oldest endpoint;
        internal networks and interface-less drivers never provide a gateway.
        """
        wanted = {}
        eps = sorted(self._endpoints(sandbox_id=sb.id),
                     key=lambda e: (-e.gw_priority, e.created))
        for ep in eps:
            if ep.state != READY and ep.state != CREATING:
                continue
            net = self._network_by_id(ep.network_id)
            if net is None or net.internal or not get_driver(net.driver).has_interface:
                continue
            for family in (4, 6):
                if family in wanted or not getattr(ep, "ipv%d" % family):
                    continue
                gw = gateway_for(net, family)
                if gw:
                    wanted[family] = (gw, ep.ifname)
        return wanted

    def _route_families(self, sb, wanted):
        """IPv4 always; IPv6 only when an endpoint of the sandbox has IPv6 (a v6 route
        via a removed interface disappears with it)."""
        if 6 in wanted or any(e.ipv6 for e in self._endpoints(sandbox_id=sb.id)):
            return (4, 6)
        return (4,)

    def _route_drift(self, sb):
        if sb.mode != "own":
            return []
        handle = self.netlink.sandbox(sb.netns_path)
        drift = []
        wanted = self._wanted_gateways(sb)
        for family in self._route_families(sb, wanted):
            fam = 2 if family == 4 else 10
            gw, oif = handle.default_gateway(fam)
            want = wanted.get(family)
            if want is None:
                if gw and family == 4:
                    drift.append("unexpected default route via %s" % gw)
                continue
            idx = handle.index(want[1])
            if gw != want[0] or oif != idx:
                drift.append("default route via %s dev %s is missing" % want)
        return drift

    def _sync_routes(self, sb, fresh=False):
        """Make the sandbox's default routes match ``_wanted_gateways``.

        ``fresh``: the namespace was made by this operation and has no route yet.
        """
        if sb.mode != "own":
            return
        handle = self.netlink.sandbox(sb.netns_path)
        wanted = self._wanted_gateways(sb)
        if fresh:
            for family, (gw, ifname) in wanted.items():
                handle.replace_default_route(family, gw, handle.index(ifname))
            return
        for family in self._route_families(sb, wanted):
            fam = 2 if family == 4 else 10
            want = wanted.get(family)
            gw, oif = handle.default_gateway(fam)
            if want is None:
                if gw:
                    handle.delete_default_route(family)
                continue
            idx = handle.index(want[1])
            if idx is not None and (gw != want[0] or oif != idx):
                handle.replace_default_route(family, want[0], idx)
