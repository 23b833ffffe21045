"""Keeping a network's firewall rules in step with the store.

Rules are rendered as data (``NetworkRules``) from the store and handed to the backend
in one batch; the store keeps the last applied rules without their ports (ports live
on the endpoints). Drivers never decide firewalling: only this layer calls the backend."""
import dataclasses

from .. import constants as C
from .. import validation as V
from ..firewall.model import NetworkRules, PortMapping
from ..model import is_bridged
from .session import Session

INTENT_FIREWALL = "firewall"


class FirewallSync(Session):
    """A network's rule set as data, applied in one batch; port changes; rule drift."""

    def _firewall_rules(self, net, endpoints=None):
        """The whole desired rule set of ``net`` as data (None: no rules for it)."""
        if not is_bridged(net):
            return None
        if endpoints is None:
            docs = [p for row in self.store.published_ports(net.id) for p in row[3]]
        else:
            docs = [p for ep in endpoints for p in ep.ports]
        ports = [PortMapping.from_dict(p) for p in docs]
        subnets = tuple(p["subnet"] for p in net.pools)
        return NetworkRules(
            network_id=net.id, bridge=net.bridge, subnets=subnets,
            icc=V.boolean(net.options.get(C.OPT_ENABLE_ICC, "true"), "icc"),
            masquerade=V.boolean(net.options.get(C.OPT_ENABLE_IP_MASQUERADE, "true"),
                                 "masquerade"),
            internal=net.internal, ports=tuple(sorted(ports)))

    def _sync_firewall(self, net, endpoints=None, remove=False, old_ports=None,
                       new_ports=None):
        """Apply the difference between the active and the desired rules of ``net``.

        The store keeps the network's last applied rules without ports (ports live on
        the endpoints), so saving a network does not grow with its mappings. Callers
        that change ports pass ``old_ports``: the network's mappings before the change
        (and may pass ``new_ports``, the mappings after it, to save a store read).
        """
        if not is_bridged(net) or self.firewall.name == "none":
            return
        if remove:
            new = None
        elif new_ports is not None:
            new = dataclasses.replace(self._firewall_rules(net, []), ports=new_ports)
        else:
            new = self._firewall_rules(net, endpoints)
        old = None
        if net.firewall:
            if old_ports is None:
                old_ports = (new.ports if new is not None
                             else self._firewall_rules(net).ports)
            old = dataclasses.replace(NetworkRules.from_dict(net.firewall),
                                      ports=tuple(sorted(old_ports)))
        if old == new:
            return
        self.firewall.apply(old, new)
        base = rules_base(new)
        if base != net.firewall:
            net.firewall = base
            if not remove:
                self._save_network(net)

    def _intend_ports(self, net, endpoint_id, before):
        """Called in the transaction of the store write that changes the published
        mappings of endpoint ``endpoint_id`` of ``net``: records the firewall step as
        intent with the mappings the kernel holds until then (``before``), so a run
        killed before ``_sync_ports`` is rolled forward by the next run (recovery.py).
        Nothing in check mode or without firewall."""
        if self.check_mode or not is_bridged(net) or self.firewall.name == "none":
            return
        key = "%s/%s" % (net.id, endpoint_id)
        if self.store.intent(INTENT_FIREWALL, key) is None:  # keep the oldest ``before``
            self.store.set_intent(INTENT_FIREWALL, key,
                                  {"before": [m.to_dict() for m in before]})

    def _sync_ports(self, net, before, after, endpoint_id=None):
        """Publish/withdraw the mappings of one endpoint of ``net``: ``before`` and
        ``after`` are that endpoint's PortMapping lists (the store already holds
        ``after``). Called on every port change, endpoint removal and re-address; with
        ``endpoint_id``, clears the intent ``_intend_ports`` recorded once applied.

        Only this endpoint's mappings are read and compared, so the cost does not grow
        with the network's other mappings; the backend asks for the network's complete
        lists only when the kernel refuses the difference (drift) or the network's own
        rules changed too.
        """
        self._apply_ports(net, before, after)
        self._ports_applied(net, endpoint_id)

    def _apply_ports(self, net, before, after):
        """The firewall work of ``_sync_ports``."""
        if not is_bridged(net) or self.firewall.name == "none":
            return
        current = self._firewall_rules(net, [])
        if not net.firewall or rules_base(current) != net.firewall:
            self._sync_firewall(net)  # not only ports: the whole rule set
            return
        old = dataclasses.replace(NetworkRules.from_dict(net.firewall),
                                  ports=tuple(sorted(before)))
        new = dataclasses.replace(current, ports=tuple(sorted(after)))
        if old == new:
            return

        def complete():
            everything = self._firewall_rules(net).ports
            others = set(everything) - set(after)
            return (dataclasses.replace(old, ports=tuple(sorted(others | set(before)))),
                    dataclasses.replace(new, ports=everything))
        self.firewall.apply(old, new, complete=complete)

    def _ports_applied(self, net, endpoint_id):
        """The firewall step of ``endpoint_id``'s mappings is done: forget its intent."""
        if endpoint_id is None or self.check_mode:
            return
        key = "%s/%s" % (net.id, endpoint_id)
        if self.store.intent(INTENT_FIREWALL, key) is not None:
            self.store.clear_intent(INTENT_FIREWALL, key)

    def _firewall_drift(self, net):
        if not is_bridged(net) or self.firewall.name == "none":
            return []
        rules = self._firewall_rules(net)
        return self.firewall.check(rules)


def rules_base(rules):
    """What the store keeps of a network's applied rules: everything but the ports."""
    if rules is None:
        return {}
    return dataclasses.replace(rules, ports=()).to_dict()
