"""A sandbox's network namespace: make, repair, drop, and the sandbox's inspect shape."""
import os

from .. import inspect as shape
from ..errors import CnmError, ConflictError, NotFoundError
from ..model import CREATING, READY
from ..netns import namespace
from .session import LOOPBACK_INDEX, Session


class Namespaces(Session):
    """Sandbox namespaces: the kernel side of a sandbox, without its endpoints."""

    def _netns_path(self, name):
        return os.path.join(self.netns_dir, name)

    def _check_netns_free(self, sb):
        if namespace.is_netns(sb.netns_path) or os.path.lexists(sb.netns_path):
            raise ConflictError("%s already exists and is not a sandbox of this collection"
                                % sb.netns_path, field="sandbox")

    def _inspect_sandbox(self, sb, endpoints=None):
        if endpoints is None:
            endpoints = self._endpoints(sandbox_id=sb.id)
        nets = {ep.network_id: self._network_by_id(ep.network_id) for ep in endpoints}
        return shape.sandbox(sb, endpoints, nets)

    def _create_sandbox(self, sb, undo):
        """Record intent, make the namespace (lo up), mark ready; undo on failure."""
        sb.state = CREATING
        self._save_sandbox(sb)
        undo.push("forget sandbox", self.store.delete, "sandboxes", sb.id)
        self._make_namespace(sb)
        undo.push("remove namespace", namespace.delete_netns, sb.netns_path)
        sb.state = READY
        self._save_sandbox(sb)

    def _make_namespace(self, sb):
        if sb.mode == "container":
            owner = self._sandbox_by_id(sb.shares)
            if owner is None:
                raise NotFoundError("sandbox %s shares the namespace of a sandbox that is "
                                    "gone" % sb.name, field="network_mode")
            namespace.bind_netns(owner.netns_path, sb.netns_path)
            return
        if sb.mode == "host":
            namespace.bind_netns("/proc/thread-self/ns/net", sb.netns_path)
            return
        namespace.create_netns(sb.netns_path)
        self.netlink.sandbox(sb.netns_path).set_up(LOOPBACK_INDEX)

    def _repair_sandbox(self, sb):
        """The namespace file vanished (deleted by hand): make it again."""
        self.netlink.forget(sb.netns_path)
        try:
            os.unlink(sb.netns_path)
        except OSError:
            pass
        self._make_namespace(sb)

    def _drop_sandbox_namespace(self, sb):
        self.netlink.forget(sb.netns_path)
        try:
            namespace.delete_netns(sb.netns_path)
        except CnmError:
            pass
