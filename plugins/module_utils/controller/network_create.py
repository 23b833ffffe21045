"""Making a network: ``cnm_network``'s create, and the default ``bridge`` network, made
on first use by an attach that names no network (Docker's docker0).

Below the endpoint and network operations, which both create networks.
"""
from .. import constants as C, inspect as shape
from ..drivers import get_driver
from ..errors import ConflictError
from ..model import CREATING, READY, new_id, now_rfc3339
from .addresses import Addresses
from .firewall_sync import FirewallSync
from .network_options import desired_network
from .result import Result
from .undo import Undo


class NetworkCreate(FirewallSync, Addresses):
    """Create a network (intent first, undo on failure); inspect one."""

    def _inspect_network(self, net):
        eps = self._endpoints(network_id=net.id)
        sbs = {ep.sandbox_id: self._sandbox_by_id(ep.sandbox_id) for ep in eps}
        return shape.network(net, eps, sbs)

    def _create_network(self, net):
        net.id = new_id()
        net.created = now_rfc3339()
        driver = get_driver(net.driver)
        if net.driver == "bridge" and not net.bridge:
            net.bridge = C.BRIDGE_PREFIX + net.id[:12]
        if net.driver == "bridge":
            if self.netlink.host.index(net.bridge) is not None:
                raise ConflictError("interface %s already exists on the host" % net.bridge,
                                    field="driver_options.%s" % C.OPT_BRIDGE_NAME)
            other = self.store.network_using_bridge(net.bridge)
            if other is not None:
                raise ConflictError("bridge %s is already used by network %s"
                                    % (net.bridge, other),
                                    field="driver_options.%s" % C.OPT_BRIDGE_NAME)
        driver.validate(net, self.netlink)
        self._complete_pools(net)
        if net.driver == "bridge" and not self.check_mode:
            self.firewall  # noqa: B018 - choose the backend before touching anything
        after = shape.network(net, [], {})
        result = Result(changed=True, diff={"before": {}, "after": after},
                        actions=["create network %s (%s)" % (net.name, ", ".join(
                            p["subnet"] for p in net.pools) or net.driver)],
                        data={"network": after})
        if self.check_mode:
            return result
        net.state = CREATING
        self._save_network(net)  # intent first: a crash after this is rolled back
        undo = Undo()
        try:
            driver.setup_network(net, self.netlink)
            undo.push("remove network", driver.teardown_network, net, self.netlink)
            self._sync_firewall(net, [])
            undo.push("remove firewall rules", self._sync_firewall, net, [], True)
        except Exception:
            undo.run()
            self.store.delete("networks", net.id)
            raise
        net.state = READY
        self._save_network(net)
        result.data["network"] = self._inspect_network(net)
        if net.driver == "bridge" and hasattr(self.firewall, "warnings"):
            result.warnings.extend(self.firewall.warnings())
        return result

    def _ensure_default_bridge(self, params=None):
        """The default ``bridge`` network, made now if missing (device ``cnm0``,
        172.17.0.0/16 unless taken, ICC and masquerade on, no embedded DNS); ``params``:
        a ``cnm_network`` task naming it (its options win). Returns (network, Result of
        the creation or None). Raises like ``_create_network``."""
        net = self._network(C.DEFAULT_BRIDGE_NETWORK)
        if net is not None:
            return net, None
        result = self._create_network(default_bridge(params))
        return self._network(C.DEFAULT_BRIDGE_NETWORK), result


def default_bridge(params=None):
    """The desired default bridge network: Docker's docker0 options under the options a
    task gave. Raises ValidationError naming the field."""
    params = dict(params or {}, name=C.DEFAULT_BRIDGE_NETWORK, driver="bridge")
    params["driver_options"] = dict(C.DEFAULT_BRIDGE_OPTIONS,
                                    **(params.get("driver_options") or {}))
    net = desired_network(params)
    net.predefined = True
    return net
