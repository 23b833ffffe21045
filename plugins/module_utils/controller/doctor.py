"""Doctor: what drifted between the store and the kernel, read only, and its repair.

``cnm doctor`` asks this file for a report: every network, sandbox and endpoint of the
store compared with the kernel (the same drift checks a module run makes), the firewall
rules of every bridge network, the resolver's and the host agent's health, overlay
networks against the cluster store (peers programmed, stale records of this host),
runs that died half-way, and leftovers of ours that no stored object owns (leaked
links, namespaces, resolver files). ``--fix`` repairs each problem through the verb a
module run would use (``cnm_network``, ``cnm_sandbox``, ``cnm_endpoint`` with their
identity only, or a firewall restore), so there is no second repair path; leftovers
are only named, with the command that removes them.
"""
import os

from .. import constants as C
from ..drivers import get_driver
from ..errors import CnmError
from ..model import CREATING, READY, Endpoint, Network, Sandbox
from ..netns import namespace, tc
from .dns_sync import needed, resolver_settings
from .endpoints import Endpoints
from .prune import Prune
from .recovery import Recovery
from .restore import Restore
from .result import Result
from .sandboxes import Sandboxes
from .session import PREDEFINED

# the order in which --fix calls the repairing verbs: a recovering run first (crash
# leftovers, intents, resolver, firewall), then bridges, namespaces, endpoints
REPAIR_ORDER = ("restore_firewall", "network", "sandbox", "endpoint")
MODULE_OF = {"restore_firewall": "cnm restore", "network": "cnm_network",
             "sandbox": "cnm_sandbox", "endpoint": "cnm_endpoint"}


def problem(kind, obj, message, verb=None, params=None, hint=None):
    """One finding of the doctor: ``kind`` (network, firewall, sandbox, endpoint,
    resolver, agent, cluster, interrupted, leak), the object's name, a sentence naming
    it, and how it is repaired: ``repair`` (the engine verb and its parameters, what
    ``--fix`` calls) or ``hint`` (a command for the user: leftovers no module run
    removes)."""
    repair = None
    if verb:
        repair = {"verb": verb, "module": MODULE_OF[verb], "params": dict(params or {})}
    return {"kind": kind, "object": obj, "message": message, "repair": repair,
            "hint": hint}


class Doctor(Recovery, Endpoints, Sandboxes, Restore, Prune):
    """The doctor operation: a read-only drift report and its repair by module verbs."""

    def doctor(self, params=None):
        """Called by ``cnm doctor``: compare the store with the kernel and report.

        ``params['fix']``: also repair every problem a module run would repair, by
        calling that run's verb (``restore_firewall``, ``network``, ``sandbox``,
        ``endpoint``) with the object's identity only, then report again. The report
        itself never writes (it runs as check mode, a fresh host gets no store).
        Returns Result with ``data['problems']`` (dicts of ``problem()``),
        ``data['fixed']`` (actions of the repairing runs) and warnings (a repair that
        failed, firewall notes). Raises CnmError only when the store cannot be read.
        """
        fix = bool((params or {}).get("fix"))
        report = self._doctor_report()
        if not fix or self.check_mode or not report.data["problems"]:
            return report
        fixed, failed = self._doctor_fix(report.data["problems"])
        after = self._doctor_report()
        after.changed = bool(fixed)
        after.actions = list(fixed)
        after.data["fixed"] = list(fixed)
        after.warnings = failed + after.warnings
        return after

    def _doctor_report(self):
        saved = self.check_mode
        self.check_mode = True
        try:
            result = self._run(self._diagnose)
        finally:
            self.check_mode = saved
        result.changed = False
        result.actions = []
        result.diff = {}
        return result

    def _diagnose(self):
        problems = []
        for what in self._repairs:  # found by the open hook (check mode: not done)
            kind = next((k for k in ("resolver", "agent") if k in what), "interrupted")
            problems.append(problem(kind, "host" if kind == "interrupted" else kind,
                                    what, "restore_firewall"))
        problems += self._unfinished_rows()
        nets = [Network.from_doc(d) for d in self.store.all("networks")]
        warnings = []
        for net in nets:
            if net.state == READY and net.name not in PREDEFINED:
                problems += self._network_problems(net)
            if net.state == READY and net.driver == C.OVERLAY_DRIVER:
                problems += self._cluster_problems(net)
        for doc in self.store.all("sandboxes"):
            sb = Sandbox.from_doc(doc)
            if sb.state == READY:
                problems += self._sandbox_problems(sb)
        problems += self._resolver_problems()
        problems += self._leaks(nets)
        try:
            if any(n.driver == "bridge" for n in nets):
                warnings += self.firewall.warnings()
        except CnmError:
            pass  # already reported by the firewall checks
        result = Result(data={"problems": problems, "fixed": []})
        result.warnings = warnings
        return result

    def _unfinished_rows(self):
        """Rows a run that died left in ``creating``: the next module run undoes them."""
        out = []
        unfinished = "json_extract(doc, '$.state') = ?"
        for table, what in (("networks", "network"), ("sandboxes", "sandbox"),
                            ("endpoints", "endpoint")):
            for doc in self.store.all(table, unfinished, (CREATING,)):
                name = doc.get("name") or "%s on %s" % (
                    doc.get("sandbox_name"), doc.get("network_name"))
                out.append(problem("interrupted", name,
                                   "%s %s was left half-made by a run that died"
                                   % (what, name), "restore_firewall"))
        return out

    def _network_problems(self, net):
        out = []
        identity = {"name": net.name, "driver": net.driver}
        try:
            drift = get_driver(net.driver).network_drift(net, self.netlink)
        except CnmError as exc:
            drift = ["cannot be read: %s" % exc]
        for d in drift:
            out.append(problem("network", net.name, "network %s: %s" % (net.name, d),
                               "network", identity))
        try:
            fw_drift = self._firewall_drift(net)
        except CnmError as exc:
            out.append(problem("firewall", net.name, "firewall of network %s cannot be "
                               "checked: %s" % (net.name, exc)))
            return out
        for d in fw_drift:
            out.append(problem("firewall", net.name, "firewall of network %s: %s"
                               % (net.name, d), "restore_firewall"))
        return out

    def _cluster_problems(self, net):
        """An overlay network against the cluster store: the peer entries and remote
        names programmed from it (a module run on the network repairs them), and the
        records this host published that no endpoint here owns any more (stale)."""
        from ..cluster import peers
        from .overlay import local_view
        try:
            client, networks, dummy = self._cluster()
            records, dummy, dummy2 = peers.read(client, networks.keys, local_view(net))
            changes = self._overlay_sync_peers(net, check=True)
        except CnmError as exc:
            return [problem("cluster", net.name, "overlay network %s: the cluster store "
                            "cannot be checked: %s" % (net.name, exc))]
        identity = {"name": net.name, "driver": net.driver}
        out = [problem("cluster", net.name, "overlay network %s: %s" % (net.name, c),
                       "network", identity) for c in changes]
        here = {e.id for e in self._endpoints(network_id=net.id)}
        for endpoint_id, record in sorted(records.items()):
            if record.get("vtep") == net.vtep and endpoint_id not in here:
                out.append(problem(
                    "cluster", net.name, "overlay network %s: stale cluster record of "
                    "endpoint %s (sandbox %s), published by this host (%s), which has no "
                    "such endpoint" % (net.name, endpoint_id[:12], record.get("sandbox"),
                                       net.vtep),
                    hint="etcdctl del %s" % networks.keys.endpoint(net.id, endpoint_id)))
        return out

    def _sandbox_problems(self, sb):
        endpoints = [e for e in self._endpoints(sandbox_id=sb.id) if e.state == READY]
        first = None
        if endpoints:
            first = {"network": endpoints[0].network_name, "sandbox": sb.name}
        if not namespace.is_netns(sb.netns_path):
            msg = "sandbox %s: namespace %s is missing" % (sb.name, sb.netns_path)
            if first:
                return [problem("sandbox", sb.name, msg, "endpoint", first)]
            if sb.implicit:
                return [problem("sandbox", sb.name, msg)]
            return [problem("sandbox", sb.name, msg, "sandbox", {"name": sb.name})]
        out = []
        for ep in endpoints:
            net = self._network_by_id(ep.network_id)
            if net is None:
                continue
            try:
                drift = get_driver(net.driver).endpoint_drift(net, sb, ep, self.netlink)
            except CnmError as exc:
                drift = ["cannot be read: %s" % exc]
            for d in drift:
                out.append(problem("endpoint", "%s/%s" % (sb.name, net.name),
                                   "endpoint of sandbox %s on network %s: %s"
                                   % (sb.name, net.name, d), "endpoint",
                                   {"network": net.name, "sandbox": sb.name}))
        try:
            routes = self._route_drift(sb)
        except CnmError as exc:
            routes = ["cannot be read: %s" % exc]
        for d in routes:
            out.append(problem("sandbox", sb.name, "sandbox %s: %s" % (sb.name, d),
                               "endpoint" if first else None, first))
        return out

    def _resolver_problems(self):
        """A resolver that runs but fails its health check (a dead one is reported by
        the open hook); any module run restarts it."""
        from ..dns import service
        if resolver_settings(self.store).get("state", "started") != "started":
            return []
        if not needed(self.store):
            return []
        status = service.resolver_status(self.run_dir)
        if status.get("running") and service.resolver_health(self.run_dir) is False:
            return [problem("resolver", "resolver", "the resolver (pid %s) fails its "
                            "health check" % status.get("pid"), "restore_firewall")]
        return []

    def _leaks(self, nets):
        """Leftovers of ours no stored object owns. No module run removes them: each is
        named with the command that would."""
        out = []
        endpoints = [Endpoint.from_doc(d) for d in self.store.all("endpoints")]
        veths = {e.host_ifname for e in endpoints}
        ifbs = {tc.ifb_name(e.id) for e in endpoints}
        host = self.netlink.host
        bridges = {}
        for net in nets:
            if net.driver == "bridge" and net.bridge:
                index = host.index(net.bridge)
                if index is not None:
                    bridges[index] = net
        for name in host.link_names():
            link = host.link(name)
            if link is None:
                continue
            net = bridges.get(link.get("master"))
            our_ifb = name.startswith(tc.IFB_PREFIX) and name not in ifbs
            if link["kind"] == "veth" and net is not None and name not in veths:
                out.append(problem("leak", name, "link %s on bridge %s (network %s) "
                                   "belongs to no endpoint" % (name, net.bridge, net.name),
                                   hint="ip link del %s" % name))
            elif link["kind"] == "ifb" and our_ifb:
                out.append(problem("leak", name, "ifb %s of a bandwidth limit belongs to "
                                   "no endpoint" % name, hint="ip link del %s" % name))
        out += self._leaked_namespaces()
        return out

    def _leaked_namespaces(self):
        """Namespace files in netns_dir that are no sandbox's. In the shared default
        directory (``ip netns`` uses it too) only those with name files of ours."""
        from ..dns import service
        out = []
        sandboxes = {Sandbox.from_doc(d).name for d in self.store.all("sandboxes")}
        shared = os.path.abspath(self.netns_dir) == C.DEFAULT_NETNS_DIR
        try:
            names = sorted(os.listdir(self.netns_dir))
        except OSError:
            names = []
        for name in names:
            path = os.path.join(self.netns_dir, name)
            if name in sandboxes or not namespace.is_netns(path):
                continue
            ours = os.path.isdir(os.path.join(self.run_dir, "sandboxes", name))
            if shared and not ours:
                continue
            out.append(problem("leak", name, "namespace %s is no sandbox's" % path,
                               hint="umount %s && rm %s" % (path, path)))
        fragments = service.resolver_paths(self.run_dir)["fragments"]
        overlays = {Network.from_doc(d).id[:12] for d in self.store.all(
            "networks", "json_extract(doc, '$.driver') = ?", (C.OVERLAY_DRIVER,))}
        for name in service.fragment_names(self.run_dir):
            if name.startswith(C.AGENT_REMOTE_PREFIX):
                # names of endpoints on other hosts: kept while their overlay is here
                owned = name[len(C.AGENT_REMOTE_PREFIX):].split("-")[0] in overlays
            else:
                owned = name in sandboxes
            if not owned:
                path = os.path.join(fragments, name + ".json")
                out.append(problem("leak", name, "resolver file %s belongs to no sandbox"
                                   % path, hint="rm %s" % path))
        return out

    def _doctor_fix(self, problems):
        """Call each repairing verb once, in REPAIR_ORDER. Returns (actions, failures)."""
        verbs = {"restore_firewall": self.restore_firewall, "network": self.network,
                 "sandbox": self.sandbox, "endpoint": self.endpoint}
        calls, seen = [], set()
        for p in problems:
            repair = p.get("repair")
            if not repair:
                continue
            key = (repair["verb"], tuple(sorted(repair["params"].items())))
            if key not in seen:
                seen.add(key)
                calls.append(key)
        calls.sort(key=lambda c: REPAIR_ORDER.index(c[0]))
        fixed, failed = [], []
        for verb, items in calls:
            params = dict(items)
            label = " ".join([MODULE_OF[verb]] + ["%s=%s" % kv for kv in items])
            try:
                result = verbs[verb](params)
            except CnmError as exc:
                failed.append("%s failed: %s" % (label, exc))
                continue
            fixed += ["%s: %s" % (label, a) for a in result.actions] or [label]
            failed += ["%s: %s" % (label, w) for w in result.warnings]
        return fixed, failed
