"""Leaving networks: an endpoint's removal, and a sandbox's removal with all its endpoints.

Used by the endpoint, sandbox and network operations and by crash recovery; best
effort: it goes on past each failure and returns the errors."""
from .. import constants as C
from ..drivers import get_driver
from ..errors import CnmError
from ..firewall.model import PortMapping
from ..model import is_bridged
from ..netns import namespace
from .dns_sync import DnsSync, file_dirs
from .firewall_sync import FirewallSync
from .namespaces import Namespaces
from .overlay import Overlay
from .routes import Routes
from .undo import checkpoint


class Detach(Namespaces, Routes, FirewallSync, DnsSync, Overlay):
    """Removal of endpoints and sandboxes (interfaces, rules, addresses, rows, files)."""

    def _drop_endpoint(self, net, sb, ep, best_effort=False, interfaces=True):
        """Remove ``ep``'s interfaces (unless ``interfaces`` is False because its
        namespace goes away with them), rules, addresses and row. Returns errors."""
        errors = []
        if net is not None and sb is not None:
            driver = get_driver(net.driver)
            try:
                if interfaces:
                    errors += driver.teardown_endpoint(net, sb, ep, self.netlink)
                else:  # the namespace takes the interfaces; the host keeps the rest
                    errors += driver.unplug_endpoint(net, sb, ep, self.netlink)
                    errors += driver.release_endpoint(net, ep, self.netlink)
            except Exception as exc:
                errors.append(str(exc))
        old_ports = None
        if net is not None and ep.ports and is_bridged(net):
            old_ports = [PortMapping.from_dict(p) for p in ep.ports]
        if net is not None and net.driver == C.OVERLAY_DRIVER:
            errors += self._overlay_release(net, ep)  # its peer record and addresses
        with self.store.transaction():
            if old_ports is not None:
                self._intend_ports(net, ep.id, old_ports)
            self.store.release(ep.network_id, owner=ep.id)
            self.store.delete("endpoints", ep.id)
        if old_ports is not None:
            checkpoint("detach-before-firewall")
            try:
                self._sync_ports(net, old_ports, [], ep.id)
            except CnmError as exc:
                errors.append(str(exc))
        if errors and not best_effort:
            raise CnmError("; ".join(errors))
        return errors

    def _detach(self, net, sb, ep):
        """Remove endpoint ``ep``; an implicit sandbox left empty goes with it."""
        if sb is not None and sb.implicit and not [
                e for e in self._endpoints(sandbox_id=sb.id) if e.id != ep.id]:
            return self._remove_sandbox(sb)
        errors = self._drop_endpoint(net, sb, ep, best_effort=True)
        if sb is not None:
            errors += self._after_leave(sb)
        return errors

    def _after_leave(self, sb):
        """A sandbox lost an endpoint: fix its default route, or remove it when it was
        made implicitly by cnm_endpoint and has no endpoint left."""
        remaining = self._endpoints(sandbox_id=sb.id)
        if not remaining and sb.implicit:
            return self._remove_sandbox(sb)
        if namespace.is_netns(sb.netns_path) and sb.mode == "own":
            try:
                self._sync_routes(sb)
            except CnmError as exc:
                return [str(exc)]
        return []

    def _remove_sandbox(self, sb):
        """Detach every endpoint of ``sb``, then remove its namespace, files and row."""
        errors = []
        # Our own netlink socket inside would keep the namespace alive: close it first.
        self.netlink.forget(sb.netns_path)
        # Nothing runs inside: the kernel removes the interfaces with the namespace, so
        # the ~22 ms synchronous veth deletion per endpoint is not needed.
        with_namespace = sb.mode == "own" and namespace.is_netns(sb.netns_path)
        with_namespace = with_namespace and not namespace.processes_inside(sb.netns_path)
        for ep in self._endpoints(sandbox_id=sb.id):
            errors += self._drop_endpoint(self._network_by_id(ep.network_id), sb, ep,
                                          best_effort=True, interfaces=not with_namespace)
        self._drop_sandbox_namespace(sb)
        self.store.delete("sandboxes", sb.id)
        from ..dns import files as dns_files
        try:
            dns_files.remove_sandbox_files(file_dirs(self, sb))
        except OSError as exc:
            errors.append("remove name files of %s: %s" % (sb.name, exc))
        return errors
