"""Firewall restore: every bridge network's rules re-made from the store in one go."""
from ..model import Network, READY, is_bridged
from .firewall_sync import FirewallSync, rules_base
from .result import Result


class Restore(FirewallSync):
    """The restore operation (after a flush, a firewalld reload, a reboot)."""

    def restore_firewall(self, params=None):
        """Re-create every rule of every bridge network from the store in one go.

        Called by ``scripts/cnm-firewall-restore`` (``make firewall-restore``) and by
        hooks after something flushed the ruleset. Guarantees on return: the kernel holds
        exactly the rules the store describes. Check mode reports the networks whose
        rules are not in place.
        """
        return self._run(self._restore_firewall)

    def _restore_firewall(self):
        nets = [Network.from_doc(d) for d in self.store.all("networks")]
        nets = [n for n in nets if is_bridged(n) and n.state == READY]
        result = Result(data={"networks": [n.name for n in nets]})
        if self.firewall.name == "none" or not nets:
            return result
        drifted = [n for n in nets if self._firewall_drift(n)]
        result.changed = bool(drifted)
        result.actions = ["restore rules of %s" % n.name for n in drifted]
        if self.check_mode or not drifted:
            return result
        rules = [self._firewall_rules(n) for n in nets]
        self.firewall.restore(rules)
        for net, rule in zip(nets, rules):
            net.firewall = rules_base(rule)
            self._save_network(net)
        return result
