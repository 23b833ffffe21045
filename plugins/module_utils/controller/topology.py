"""A whole host's desired state in one operation: ``cnm_topology``.

Networks, sandboxes with their endpoints, published ports and DNS settings, applied in
one store session (one host lock, one crash recovery) by the very operations the
single-object modules run: each verb validates its item as it does for its own module
(its ``_run`` is captured, so it hands back its validated arguments instead of opening
a session), then every captured operation runs in order inside one ``_run``. Each
object is applied whole or undone by its own operation, so a failure part-way leaves
every object either as it was or as asked, and a run killed part-way is finished or
rolled back by the next run's recovery. ``purge`` then removes the networks, sandboxes,
endpoints and published ports the topology no longer names (everything in the store
was made by this collection; the predefined networks are never removed).
"""
import contextlib

from ..errors import CnmError, NotFoundError
from ..model import READY, Endpoint, Network, Sandbox
from .dns_settings import DnsSettings
from .endpoints import Endpoints
from .port_mappings import PortMappings
from .prune import Prune
from .recovery import Recovery
from .result import Result
from .sandboxes import Sandboxes
from .topology_spec import BUILTIN_NETWORKS, topology_spec

DIFFS = "_object_diffs"  # per-object diffs, carried through _run in Result.data


def _prefixed(exc, path):
    """``exc`` with its field under the object's path (``sandboxes[web].endpoints[0]``)."""
    exc.field = "%s.%s" % (path, exc.field) if exc.field else path
    return exc


class Topology(Recovery, Endpoints, Sandboxes, PortMappings, DnsSettings, Prune):
    """The topology operation: validate every item with its own verb, then apply all
    of them in one session, then purge."""

    def topology(self, params):
        """cnm_topology: make the host hold ``params['networks']``, ``params['sandboxes']``
        (each with ``endpoints``, their ``ports``, and ``dns``) and the host resolver
        settings ``params['dns']``; with ``params['purge']``, remove what is not named.

        Everything is validated before the store is opened, and what can be checked
        against the store (the networks endpoints name) before anything changes.
        Raises the CnmError of the first object that fails, its field prefixed with
        the object's path. Returns Result with ``data['objects']`` (per object:
        changed, actions), ``data['purged']``, ``data['networks']`` (inspect shapes)
        and ``data['sandboxes']`` (the sandbox as its operation returned it, its
        ``Networks`` the endpoints as theirs did, with the ports published after);
        ``diff`` is a list of per-object before/after entries with headers.
        """
        spec = topology_spec(params)
        plan = self._plan(spec)
        result = self._run(self._topology_op, spec, plan)
        diffs = result.data.pop(DIFFS, [])
        if result.diff.get("before") or result.diff.get("after"):
            diffs.insert(0, dict(result.diff, before_header="interrupted run",
                                 after_header="interrupted run"))
        result.diff = diffs
        return result

    @contextlib.contextmanager
    def _captured(self, path):
        """Within: a verb returns ``(operation, validated arguments)`` instead of
        running; its CnmError names the object's path."""
        def capture(func, *args):
            return func, args
        self._run = capture  # shadows Session._run for this instance only
        try:
            yield
        except CnmError as exc:
            raise _prefixed(exc, path)
        finally:
            del self._run

    def _validated(self, path, verb, params):
        with self._captured(path):
            return getattr(self, verb)(params)

    def _plan(self, spec):
        """Every item validated by its own verb: ``{path: (operation, args)}``."""
        plan = {}
        for path, name, params in spec.networks:
            plan[path] = self._validated(path, "network", params)
        for sb in spec.sandboxes:
            plan[sb.path] = self._validated(sb.path, "sandbox", sb.params)
            for ep in sb.endpoints:
                plan[ep.path] = self._validated(ep.path, "endpoint", ep.params)
                if ep.ports is not None:
                    path = ep.path + ".ports"
                    plan[path] = self._validated(path, "port_mapping", {
                        "sandbox": sb.name, "network": ep.network, "state": "present",
                        "ports": ep.ports, "exclusive": spec.purge})
            if sb.dns is not None:
                plan[sb.path + ".dns"] = self._validated(sb.path + ".dns", "dns", sb.dns)
        if spec.dns is not None:
            plan["dns"] = self._validated("dns", "dns", spec.dns)
        return plan

    def _topology_op(self, spec, plan):
        out = Result(data={"objects": {}, DIFFS: [], "networks": {}, "sandboxes": {},
                           "purged": {"networks": [], "sandboxes": [], "endpoints": []}})
        self._check_references(spec)
        with self._dns_deferred(out):
            self._apply(out, spec, plan)
        return out

    @contextlib.contextmanager
    def _dns_deferred(self, out):
        """Within: the DNS step each operation ends with only collects its sandboxes
        (their intents, recorded by the operations, stay in the store); on leaving,
        one DNS step for all of them: one resolver notice instead of one per object.
        A run killed within is rolled forward by the next run's recovery, as a run
        killed before any single operation's DNS step is. Leaving on an error, the
        objects made so far still get their names (a DNS failure then stays recorded
        for the next run, behind the error being raised)."""
        pending, everything = {}, []

        def collect(result, *sandboxes, full=False):
            pending.update((sb.name, sb) for sb in sandboxes if sb is not None)
            if full:
                everything.append(True)
        self._sync_dns_safely = collect  # shadows DnsSync's for this instance only
        failed = True
        try:
            yield
            failed = False
        finally:
            del self._sync_dns_safely
            if pending or everything:
                # as the store holds them now (a later step may have changed them)
                fresh = [self._sandbox(name) or sb for name, sb in pending.items()]
                try:
                    self._sync_dns_safely(out, *fresh, full=bool(everything))
                except CnmError:
                    if not failed:
                        raise

    def _apply(self, out, spec, plan):
        """Every captured operation, in order: networks, sandboxes with their
        endpoints (purged ones first), ports, DNS settings, then the purge."""
        named_networks = {name for dummy, name, dummy2 in spec.networks}
        for path, name, dummy in spec.networks:
            res = self._step(out, path, plan)
            out.data["networks"][name] = res.data.get("network")
        shapes = out.data["sandboxes"]
        for sb in spec.sandboxes:
            res = self._step(out, sb.path, plan)
            # the sandbox as its operation returned it, with the endpoints as theirs did
            shape = dict(res.data.get("sandbox") or {"Name": sb.name}, Networks={})
            shape.pop("NetworkSettings", None)  # the whole view: cnm_sandbox_info
            shapes[sb.name] = shape
            if spec.purge:
                self._purge_endpoints(out, sb)
            for ep in sb.endpoints:
                res = self._step(out, ep.path, plan)
                shape["Networks"][ep.network] = res.data.get("endpoint")
        with self._ports_batched():
            self._apply_ports_steps(out, spec, plan, shapes)
        for sb in spec.sandboxes:
            if sb.dns is not None:
                self._step(out, sb.path + ".dns", plan)
        if spec.dns is not None:
            self._step(out, "dns", plan)
        if spec.purge:
            self._purge(out, {sb.name for sb in spec.sandboxes}, named_networks)

    def _apply_ports_steps(self, out, spec, plan, shapes):
        """The port operation of every endpoint that names its ports (or, with purge,
        withdraws them); the endpoint's returned shape gets its ports."""
        for sb in spec.sandboxes:
            for ep in sb.endpoints:
                if ep.ports is not None:
                    res = self._step(out, ep.path + ".ports", plan, self._ports_step)
                elif spec.purge:
                    res = self._withdraw_unnamed_ports(out, sb, ep)
                else:
                    continue
                endpoint = shapes[sb.name]["Networks"].get(ep.network)
                if endpoint and res is not None:
                    endpoint["Ports"] = res.data.get("ports", {})

    @contextlib.contextmanager
    def _ports_batched(self):
        """Within: each port operation saves its endpoint's mappings and records its
        firewall intent as usual, but its firewall step is only collected; on leaving,
        one batch per network for all of them (the backend's cost follows the
        difference, so 100 sandboxes' ports are one ``nft`` transaction, not 100). A
        run killed within is rolled forward per endpoint from the recorded intents by
        the next run. When a network's batch fails, every endpoint it carried gets
        its mappings back in the store (the kernel kept the old ones: the batch is
        atomic) and the error names that network's ports."""
        pending = {}  # network id -> [(before, after, endpoint id)]

        def collect(net, before, after, endpoint_id=None):
            pending.setdefault(net.id, []).append((list(before), list(after), endpoint_id))
        self._sync_ports = collect  # shadows FirewallSync's for this instance only
        failed = True
        try:
            yield
            failed = False
        finally:
            del self._sync_ports
            # also when a later port operation failed: the ones before it are as asked
            for network_id, changes in pending.items():
                try:
                    self._apply_port_batch(self._network_by_id(network_id), changes)
                except CnmError:
                    if not failed:
                        raise

    def _apply_port_batch(self, net, changes):
        """One firewall batch for the collected port changes of ``net``; on failure the
        store gets each endpoint's old mappings back. Raises CnmError naming them."""
        try:
            self._apply_ports(net, [m for c in changes for m in c[0]],
                              [m for c in changes for m in c[1]])
        except CnmError as exc:
            for before, dummy, endpoint_id in changes:
                ep = Endpoint.from_doc(self.store.get("endpoints", endpoint_id))
                if ep is not None:
                    ep.ports = [m.to_dict() for m in before]
                    self._save_endpoint(ep)
                self._ports_applied(net, endpoint_id)
            raise _prefixed(exc, "ports of network %s" % net.name)
        for dummy, dummy2, endpoint_id in changes:
            self._ports_applied(net, endpoint_id)

    def _check_references(self, spec):
        """Every network an endpoint names is in the topology, predefined or present:
        checked before anything changes. Raises NotFoundError naming the endpoint."""
        named = {name for dummy, name, dummy2 in spec.networks} | set(BUILTIN_NETWORKS)
        for sb in spec.sandboxes:
            for ep in sb.endpoints:
                if ep.network not in named and self._network(ep.network) is None:
                    raise NotFoundError("network %s is neither in the topology nor on "
                                        "the host" % ep.network, field=ep.path + ".network")

    def _step(self, out, path, plan, runner=None):
        """Run the captured operation of ``path`` (through ``runner`` when given) and
        record its result under ``path``; its error names ``path``."""
        func, args = plan[path]
        try:
            res = runner(func, *args) if runner else func(*args)
        except CnmError as exc:
            raise _prefixed(exc, path)
        self._record(out, path, res)
        return res

    def _record(self, out, path, res):
        out.data["objects"][path] = {"changed": res.changed, "actions": list(res.actions)}
        out.warnings.extend("%s: %s" % (path, w) for w in res.warnings)
        if res.changed:
            out.changed = True
            out.actions.extend("%s: %s" % (path, a) for a in res.actions)
            diff = res.diff if isinstance(res.diff, dict) else {}
            out.data[DIFFS].append({"before_header": path, "after_header": path,
                                    "before": diff.get("before", {}),
                                    "after": diff.get("after", {})})

    def _ports_step(self, func, sandbox, network, state, requested, exclusive):
        """The port operation; in check mode an endpoint that is not attached yet (an
        earlier step of this topology would attach it) is a predicted change."""
        if self.check_mode:
            net, sb = self._network(network), self._sandbox(sandbox)
            if net is None or sb is None or self._endpoint(net.id, sb.id) is None:
                return Result(changed=bool(requested), data={"ports": {}}, actions=[
                    "publish ports of %s on %s (endpoint not attached yet)"
                    % (sandbox, network)] if requested else [])
        return func(sandbox, network, state, requested, exclusive)

    def _withdraw_unnamed_ports(self, out, sb, ep):
        """purge, endpoint without ``ports``: its published ports are withdrawn."""
        net, current = self._network(ep.network), self._sandbox(sb.name)
        found = self._endpoint(net.id, current.id) if net and current else None
        if found is None or not found.ports:
            return None
        path = ep.path + ".ports"
        try:
            res = self._port_op(sb.name, ep.network, "absent", [], True)
        except CnmError as exc:
            raise _prefixed(exc, path)
        self._record(out, path, res)
        return res

    def _purge_endpoints(self, out, sb):
        """purge: endpoints of a named sandbox on networks it no longer names go first
        (so a renamed network's interface name is free for the new join)."""
        current = self._sandbox(sb.name)
        if current is None:
            return
        named = {ep.network for ep in sb.endpoints}
        for ep in self._endpoints(sandbox_id=current.id):
            net = self._network_by_id(ep.network_id)
            if net is None or net.name in named:
                continue
            path = "%s.endpoints[network=%s]" % (sb.path, net.name)
            try:
                res = self._endpoint_op(net.name, sb.name, "absent", {})
            except CnmError as exc:
                raise _prefixed(exc, path)
            self._record(out, path, res)
            out.data["purged"]["endpoints"].append("%s on %s" % (sb.name, net.name))

    def _purge(self, out, sandboxes, networks):
        """purge: sandboxes, then networks, that the topology does not name (never a
        predefined network, nor the default bridge)."""
        spec = {"hostname": None, "owner": None, "force": True, "sysctls": None}
        for doc in sorted(self.store.all("sandboxes"), key=lambda d: d["name"]):
            sb = Sandbox.from_doc(doc)
            if sb.name in sandboxes or sb.state != READY:
                continue
            path = "sandboxes[%s]" % sb.name
            try:
                res = self._sandbox_op(sb.name, "absent", spec)
            except CnmError as exc:
                raise _prefixed(exc, path)
            if res.changed:
                self._record(out, path, res)
                out.data["purged"]["sandboxes"].append(sb.name)
        for doc in sorted(self.store.all("networks"), key=lambda d: d["name"]):
            net = Network.from_doc(doc)
            kept = (net.name in networks, net.name in BUILTIN_NETWORKS, net.predefined,
                    net.state != READY)
            if any(kept):
                continue
            path = "networks[%s]" % net.name
            try:
                res = self._network_op(net.name, "absent", None, {"force": True})
            except CnmError as exc:
                raise _prefixed(exc, path)
            self._record(out, path, res)
            out.data["purged"]["networks"].append(net.name)
