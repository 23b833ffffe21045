"""Sandboxes: ``cnm_sandbox`` and ``cnm_sandbox_info``."""
from .. import validation as V
from ..errors import CnmError, ConflictError, KernelError, NotFoundError, ValidationError
from ..difference import DifferenceTracker
from ..model import Sandbox, new_id, now_rfc3339
from ..netns import namespace, sysctl
from . import reader
from .detach import Detach
from .result import Result
from .undo import Undo


class Sandboxes(Detach):
    """The sandbox operations: create, update, remove (endpoints first), inspect."""

    def sandbox(self, params):
        """cnm_sandbox: make sandbox ``params['name']`` present (namespace, loopback up)
        or absent (its endpoints are detached first)."""
        name = V.object_name(params.get("name"), "name", "sandbox")
        spec = {"hostname": params.get("hostname"),
                "owner": network_mode_owner(params.get("network_mode")),
                "force": V.boolean(params.get("force") or False, "force"),
                "sysctls": V.sandbox_sysctls(params.get("sysctls"))}
        if spec["hostname"] is not None:
            V.dns_name(spec["hostname"], "hostname")
        if spec["owner"] == name:
            raise ValidationError("a sandbox cannot share its own namespace",
                                  field="network_mode")
        if spec["owner"] and spec["sysctls"]:
            raise ValidationError("a sandbox sharing another's namespace takes its sysctls",
                                  field="sysctls")
        return self._run(self._sandbox_op, name, params.get("state") or "present", spec)

    def _sandbox_op(self, name, state, spec):
        sb = self._sandbox(name)
        hostname, owner_name, force = spec["hostname"], spec["owner"], spec["force"]
        if state == "absent":
            if sb is None:
                return Result(data={"sandbox": None})
            sharers = self._sharers(sb)
            if sharers and not force:
                raise ConflictError("sandbox %s is shared by %s (network_mode container:%s): "
                                    "remove them first or set force: true"
                                    % (name, ", ".join(s.name for s in sharers), name),
                                    field="force")
            before = self._inspect_sandbox(sb)
            result = Result(changed=True, diff={"before": before, "after": {}},
                            actions=["remove sandbox %s" % s.name for s in sharers + [sb]],
                            data={"sandbox": None})
            if not self.check_mode:
                self._intend_dns(sb, *sharers)
                for gone in sharers + [sb]:
                    result.warnings.extend(self._remove_sandbox(gone))
                self._sync_dns_safely(result, sb, *sharers)
            return result
        owner = None
        if owner_name is not None:
            owner = self._sandbox(owner_name)
            if owner is None and not self.check_mode:
                raise NotFoundError("sandbox %s does not exist" % owner_name,
                                    field="network_mode")
            if owner is not None and owner.mode == "container":
                owner = self._sandbox_by_id(owner.shares)  # share the namespace's owner
            if sb is not None and owner is not None and sb.shares != owner.id:
                raise ValidationError("sandbox %s exists with another network mode; remove "
                                      "it to change it" % name, field="network_mode")
        result = Result()
        if sb is None:
            sb = Sandbox(id=new_id(), name=name, netns_path=self._netns_path(name),
                         hostname=hostname or name, created=now_rfc3339())
            if owner is not None:
                sb.mode, sb.shares = "container", owner.id
            sb.sysctls = dict(spec["sysctls"] or {})
            self._check_netns_free(sb)
            result.changed = True
            result.actions.append("create sandbox %s" % name)
            after = self._inspect_sandbox(sb, [])
            result.diff = {"before": {}, "after": after}
            result.data["sandbox"] = after
            if not self.check_mode:
                undo = Undo()
                self._create_sandbox(sb, undo)
                try:
                    self._apply_sysctls(sb, sb.sysctls)
                except CnmError:
                    undo.run()
                    raise
                self._intend_dns(sb)
                self._sync_dns_safely(result, sb)
                result.data["sandbox"] = self._inspect_sandbox(sb)
            return result
        diff = DifferenceTracker()
        if sb.implicit:
            diff.add("managed", "implicit", "explicit")
        if hostname is not None and hostname != sb.hostname:
            diff.add("hostname", sb.hostname, hostname)
        missing = not namespace.is_netns(sb.netns_path)
        if missing:
            diff.add("kernel", "namespace %s missing" % sb.netns_path, "present")
        wanted = dict(sb.sysctls, **(spec["sysctls"] or {}))
        for key, value in sorted(wanted.items()):
            active = None if missing else sysctl.read_in(sb.netns_path, key)
            if active != value:
                diff.add("sysctls.%s" % key, active, value)
        result.data["sandbox"] = self._inspect_sandbox(sb)
        if not diff:
            return result
        result.changed = True
        result.diff = diff.as_diff()
        result.actions = diff.describe()
        if self.check_mode:
            return result
        sb.implicit = False
        if hostname is not None:
            sb.hostname = hostname
        sb.sysctls = wanted
        with self.store.transaction():
            self._save_sandbox(sb)
            self._intend_dns(sb)
        if not namespace.is_netns(sb.netns_path):
            self._repair_sandbox(sb)
        self._apply_sysctls(sb, wanted)
        self._sync_dns_safely(result, sb)
        result.data["sandbox"] = self._inspect_sandbox(sb)
        return result

    def _apply_sysctls(self, sb, sysctls):
        """Write ``sysctls`` inside the sandbox; a key its namespace lacks fails naming
        it (KernelError, field ``sysctls.<key>``)."""
        for key, value in sorted(sysctls.items()):
            try:
                sysctl.ensure_in(sb.netns_path, key, value)
            except KernelError as exc:
                exc.field = "sysctls.%s" % key
                raise

    def _sharers(self, sb):
        """Sandboxes in network mode ``container:<sb>``."""
        return [Sandbox.from_doc(d) for d in self.store.all(
            "sandboxes", "json_extract(doc, '$.shares') = ?", (sb.id,))]

    def sandbox_info(self, params):
        """cnm_sandbox_info: sandboxes (all, or ``name``) with endpoints and DNS config."""
        self._read_only = True
        return self._run(self._sandbox_info, params)

    def _sandbox_info(self, params):
        return reader.sandbox_info(self.store, params)


def network_mode_owner(value):
    """The sandbox name of ``network_mode: container:<name>`` (Docker's ``--network
    container:``), or None for the default (own namespace). Called before anything is
    touched; raises ValidationError naming ``network_mode``."""
    if value in (None, "", "default"):
        return None
    text = str(value)
    if not text.startswith("container:"):
        raise ValidationError("%r is not default or container:<sandbox>" % (value,),
                              field="network_mode")
    return V.object_name(text[len("container:"):], "network_mode", "sandbox")
