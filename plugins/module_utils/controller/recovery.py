"""Crash recovery, run at the start of every operation that may write.

A run that died half-way (``kill -9``) left rows in ``creating``: their kernel objects
are removed and the rows dropped. A resolver that died is started again."""
from ..errors import CnmError
from ..firewall.model import PortMapping
from ..model import CREATING, READY, Endpoint, Network, Sandbox
from .dns_sync import INTENT_ALL, INTENT_DNS, ensure_running, resolver_missing
from .firewall_sync import INTENT_FIREWALL
from .networks import Networks


class Recovery(Networks):
    """The session's open hook: finish or undo a dead run, revive the resolver."""

    def _on_open(self, fresh):
        """Every operation that may write first finishes or undoes a dead run and rolls
        its recorded intents forward; every module run but a check on a fresh host
        brings a dead resolver back. What was repaired (or, in check mode, would be)
        makes the operation changed, as repairs; info modules only revive."""
        if not self.check_mode and not self._read_only:
            self._recover()
        if not self._read_only:
            self._roll_forward()
        if fresh:
            return
        if self.check_mode:
            if not self._read_only and resolver_missing(self):
                self._repairs.append("DNS: the resolver is not running")
        elif self._revive_resolver() and not self._read_only:
            self._repairs.append("DNS: the resolver was not running; started")
        if self.check_mode:
            if not self._read_only and self._agent_missing():
                self._repairs.append("overlay: the host agent is not running")
        elif self._revive_agent() and not self._read_only:
            self._repairs.append("overlay: the host agent was not running; started")

    def _recover(self):
        """Undo what a run that died half-way left behind (rows still ``creating``)."""
        unfinished = "json_extract(doc, '$.state') = ?"
        for doc in self.store.all("endpoints", unfinished, (CREATING,)):
            ep = Endpoint.from_doc(doc)
            net = self._network_by_id(ep.network_id)
            self._detach(net, self._sandbox_by_id(ep.sandbox_id), ep)
        for doc in self.store.all("sandboxes", unfinished, (CREATING,)):
            sb = Sandbox.from_doc(doc)
            self._drop_sandbox_namespace(sb)
            self.store.delete("sandboxes", sb.id)
        for doc in self.store.all("networks", unfinished, (CREATING,)):
            self._drop_network(Network.from_doc(doc), best_effort=True)

    def _roll_forward(self):
        """Finish the firewall and DNS steps a dead run recorded as intent but did not
        reach (killed between the store write and the kernel or the resolver). Each
        is reported as a repair, so the task reports changed; in check mode only
        reported. A step that fails again stays recorded (and is reported again)."""
        for kind, key, value in self.store.intents():
            if kind == INTENT_FIREWALL:
                what = self._roll_forward_ports(key, value)
            elif kind == INTENT_DNS:
                what = self._roll_forward_dns(key, value)
            else:
                what = None
            if what:
                self._repairs.append(what)

    def _roll_forward_ports(self, key, value):
        network_id, dummy, endpoint_id = key.partition("/")
        net = self._network_by_id(network_id)
        if net is None or net.state != READY:
            # the network went (its rules with it) or is rolled back by _recover
            if not self.check_mode:
                self.store.clear_intent(INTENT_FIREWALL, key)
            return None
        ep = self.store.get("endpoints", endpoint_id)
        after = [PortMapping.from_dict(p) for p in (ep or {}).get("ports", [])]
        before = [PortMapping.from_dict(p) for p in value.get("before", [])]
        what = "firewall: published ports of network %s (%s)" % (
            net.name, (ep or {}).get("sandbox_name") or "a removed endpoint")
        if not self.check_mode:
            self._sync_ports(net, before, after, endpoint_id)
        return what

    def _roll_forward_dns(self, key, value):
        if key == INTENT_ALL:
            what = "DNS: records of every sandbox"
            sandboxes, full = (), True
        else:
            sb = self._sandbox(key) or Sandbox.from_doc(value)
            what = "DNS: records and files of sandbox %s" % key
            sandboxes, full = (sb,), False
        if not self.check_mode:
            try:
                self._sync_dns(sandboxes, full=full)
            except CnmError as exc:
                return "%s (failed again: %s)" % (what, exc)
            self._clear_dns_intents(sandboxes, full)
        return what

    def _revive_resolver(self):
        """The resolver died (kill -9, reboot): the next module run starts it again.
        True when it was started; a failure is left to the operation's own DNS step."""
        try:
            return ensure_running(self)
        except CnmError:
            return False

    def _revive_agent(self):
        """A host with overlay networks whose agent died (kill -9, reboot): any module
        run starts it again from its configuration, and it catches up with the store.
        True when it was started; a failure leaves it to the overlay operations."""
        from ..cluster.agent_process import revive_agent
        try:
            return revive_agent(self.state_dir, self.run_dir)
        except (CnmError, OSError):
            return False

    def _agent_missing(self):
        """True when this host's agent is configured but not running (check mode)."""
        from ..cluster.agent_process import agent_configured, agent_status
        return agent_configured(self.state_dir, self.run_dir) and \
            not agent_status(self.run_dir)["running"]
