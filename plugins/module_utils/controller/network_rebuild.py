"""A network rebuild (``cnm_network`` with ``force``): all or nothing.

The network the rebuild makes is the task's options over the current network's
(``network_options.merged_network``: an option the task did not give is never reset).
Everything is planned and validated first, on copies: the new pools, every endpoint's
addresses (kept where they still fit, static ones must), MACs, published ports. Then
the old network goes and the new one comes, every kernel step pushing its undo and
every store write inside one transaction: a failure part-way puts the old network back
(links, addresses, MACs, routes, rules) and the store is rolled back whole; a run
killed part-way leaves the old network in the store, which the next run repairs.
"""
import dataclasses
import ipaddress

from .. import constants as C
from ..drivers import get_driver
from ..errors import CnmError, ConflictError, ValidationError
from ..firewall.model import PortMapping
from ..ipam.allocator import AddressAllocator
from ..ipam.config import PoolConfig
from ..ipam.mac import mac_from_ip
from ..model import READY, Network
from ..netns import namespace
from .addresses import Addresses
from .detach import Detach
from .undo import Undo, checkpoint


@dataclasses.dataclass
class _Rejoin:
    """One endpoint of a rebuilt network: as it is, as it will be, and its sandbox."""
    old: object
    new: object
    sandbox: object

    @property
    def live(self):
        return self.sandbox is not None and namespace.is_netns(self.sandbox.netns_path)


class NetworkRebuild(Detach, Addresses):
    """Rebuild a network in place of the old one, re-attaching every endpoint."""

    def _rebuild_network(self, cur, merged):
        """Called by the network update for a change that needs the network made again
        (subnet, driver, bridge name, internal, IPv6). ``merged`` is the whole desired
        network. Guarantees: nothing is touched unless the whole new network, with every
        endpoint and published port, is valid; on failure the old network is back as it
        was. Raises ValidationError/ConflictError (nothing changed) or the error that
        stopped the rebuild (undone)."""
        net, rejoins = self._plan_rebuild(cur, merged)
        old_rules = self._firewall_rules(cur) if cur.driver == "bridge" else None
        with Undo() as undo:  # a failure runs the undo steps, newest first
            with self.store.transaction():
                self._intend_dns(full=True)  # rolled back with the rest on failure
                self._take_down(cur, rejoins, old_rules, undo)
                checkpoint("rebuild-old-network-removed")
                self._bring_up(net, rejoins, undo)

    def _plan_rebuild(self, cur, merged):
        """(new network, [_Rejoin]) planned on copies; raises before anything changes."""
        net = dataclasses.replace(merged, id=cur.id, name=cur.name, created=cur.created,
                                  state=READY, firewall={}, ipam_last={},
                                  pools=[dict(p) for p in merged.pools],
                                  auto_subnets=list(merged.auto_subnets))
        if net.driver == "bridge" and not net.bridge:
            net.bridge = C.BRIDGE_PREFIX + net.id[:12]
        if net.driver == "bridge" and net.bridge != cur.bridge and \
                self.netlink.host.index(net.bridge) is not None:
            raise ConflictError("interface %s already exists on the host" % net.bridge,
                                field="driver_options.%s" % C.OPT_BRIDGE_NAME)
        get_driver(net.driver).validate(net, self.netlink)
        self._complete_pools(net, exclude_id=cur.id)
        pools = [PoolConfig.from_dict(p) for p in net.pools]
        allocators = (pools, [AddressAllocator(pool) for pool in pools])
        rejoins = []
        for ep in self._endpoints(network_id=cur.id):
            new = dataclasses.replace(ep, static=dict(ep.static), aliases=list(ep.aliases),
                                      ports=[dict(p) for p in ep.ports],
                                      network_name=net.name)
            try:
                self._assign_addresses(net, new, keep=True, persist=False,
                                       allocators=allocators)
            except CnmError as exc:
                raise ValidationError("the endpoint of sandbox %s cannot join the rebuilt "
                                      "network: %s" % (ep.sandbox_name, exc),
                                      field="ipam.config") from None
            _follow_addresses(ep, new)
            rejoins.append(_Rejoin(ep, new, self._sandbox_by_id(ep.sandbox_id)))
        publishing = sorted(r.old.sandbox_name for r in rejoins if r.new.ports)
        if publishing and (net.internal or net.driver != "bridge"):
            raise ValidationError(
                "%s cannot publish ports, and sandbox(es) %s publish some: withdraw them "
                "first" % ("an internal network" if net.internal else
                           "a %s network" % net.driver, ", ".join(publishing)),
                field="internal" if net.internal else "driver")
        return net, rejoins

    def _take_down(self, cur, rejoins, old_rules, undo):
        """Old endpoints, rules and network out of the kernel, each step undoable."""
        old_driver = get_driver(cur.driver)
        for r in rejoins:
            if r.live:
                old_driver.teardown_endpoint(cur, r.sandbox, r.old, self.netlink)
                undo.push("re-attach %s" % r.old.sandbox_name, self._rejoin_old, cur, r)
        if old_rules is not None and self.firewall.name != "none" and cur.firewall:
            self.firewall.apply(old_rules, None)
            undo.push("restore the rules of %s" % cur.name, self.firewall.apply, None,
                      old_rules)
        self._hand_over_parent(old_driver, cur)
        old_driver.teardown_network(cur, self.netlink)
        undo.push("make network %s again" % cur.name, old_driver.setup_network, cur,
                  self.netlink)

    def _drop_network(self, net, best_effort=False):
        """Remove rules, kernel objects, allocations and the row of ``net`` (a network
        removed, or one a dead run left ``creating``). Returns the errors; raises
        CnmError with them unless ``best_effort``."""
        errors = []
        try:
            self._sync_firewall(net, remove=True)
        except CnmError as exc:
            errors.append(str(exc))
        driver = get_driver(net.driver)
        self._hand_over_parent(driver, net)
        errors += driver.teardown_network(net, self.netlink)
        self.store.release(net.id)
        self.store.delete("networks", net.id)
        if errors and not best_effort:
            raise CnmError("; ".join(errors))
        return errors

    def _hand_over_parent(self, driver, net):
        """Before ``net``'s kernel objects go: a parent link it made that another network
        still uses passes to that network (``Driver.parent_handover``)."""
        others = [Network.from_doc(doc) for doc in self.store.all("networks")]
        _remove, heir = driver.parent_handover(net, others)
        if heir is not None:
            heir.created_parent, net.created_parent = True, False
            self._save_network(heir)

    def _rejoin_old(self, cur, rejoin):
        get_driver(cur.driver).setup_endpoint(cur, rejoin.sandbox, rejoin.old, self.netlink)
        self._sync_routes(rejoin.sandbox)

    def _bring_up(self, net, rejoins, undo):
        """The new network, its endpoints and rules, in the kernel and the store."""
        driver = get_driver(net.driver)
        self.store.release(net.id)
        self._save_network(net)
        driver.setup_network(net, self.netlink)
        undo.push("remove the new network", driver.teardown_network, net, self.netlink)
        for r in rejoins:
            for cidr in (r.new.ipv4, r.new.ipv6):
                if cidr:
                    self.store.allocate(net.id, str(ipaddress.ip_interface(cidr).ip),
                                        r.new.id)
            self._save_endpoint(r.new)
            if r.live:
                driver.setup_endpoint(net, r.sandbox, r.new, self.netlink)
                undo.push("detach %s from the new network" % r.new.sandbox_name,
                          driver.teardown_endpoint, net, r.sandbox, r.new, self.netlink)
                self._sync_routes(r.sandbox)
        checkpoint("rebuild-endpoints-joined")
        self._save_network(net)
        self._sync_firewall(net)
        if net.firewall:
            undo.push("remove the new rules", self.firewall.apply,
                      self._firewall_rules(net), None)


def _follow_addresses(old, new):
    """A re-addressed endpoint's MAC (unless static) and published ports follow its new
    addresses, as on an address change of ``cnm_endpoint``."""
    if new.ipv4 and new.ipv4 != old.ipv4 and not new.static.get("mac"):
        new.mac = mac_from_ip(ipaddress.ip_interface(new.ipv4).ip)
    for key in ("ipv4", "ipv6"):
        cidr = getattr(new, key)
        if cidr and cidr != getattr(old, key):
            ip = ipaddress.ip_interface(cidr).ip
            new.ports = [dict(p, container_ip=str(ip)) if p.get("family") == ip.version
                         else p for p in new.ports]
    new.ports = [PortMapping.from_dict(p).to_dict() for p in new.ports]
