"""Pruning: ``cnm_prune`` removes unused networks and implicit sandboxes left empty.

Docker's ``docker network prune`` / ``docker container prune`` for CNM objects: a
network is unused when no endpoint is attached and it is not predefined; a sandbox is
pruned only when ``cnm_endpoint`` made it implicitly, no endpoint is left and nothing
runs inside (sandboxes made by ``cnm_sandbox`` are never pruned, as Docker never prunes
a running container). Removal goes through the network and sandbox removal of the
layers below; the whole prune is one store session."""
from .. import constants as C
from .. import validation as V
from ..errors import ValidationError
from ..model import READY, Network, Sandbox
from ..netns import namespace
from .networks import Networks
from .prune_filters import parse_filters
from .result import Result
from .session import PREDEFINED

KINDS = ("networks", "sandboxes")


def prune_spec(params):
    """``{kind: PruneFilter}`` for each kind (``networks``, ``sandboxes``) to prune, from
    ``cnm_prune``'s parameters, parsed before anything is touched. Filters given for a
    kind that is not pruned are refused (never silently ignored). Raises
    ValidationError naming the field (``networks_filters.until``)."""
    spec = {}
    for kind in KINDS:
        enabled = V.boolean(params.get(kind) or False, kind)
        field = "%s_filters" % kind
        filters = parse_filters(params.get(field), field)
        if params.get(field) and not enabled:
            raise ValidationError("is given but %s is false; set %s: true to prune %s"
                                  % (kind, kind, kind), field=field)
        if enabled:
            spec[kind] = filters
    return spec


class Prune(Networks):
    """The prune operation: choose the unused objects, then remove them one by one."""

    def prune(self, params):
        """cnm_prune: remove the unused networks (``params['networks']``) and the
        implicit sandboxes without endpoints (``params['sandboxes']``) that match
        ``networks_filters`` / ``sandboxes_filters``.

        Validates every filter before the store is opened. Returns Result with
        ``data['networks']`` and ``data['sandboxes']``: the names removed (in check
        mode, the names that would be); a second run finds nothing (changed False).
        A failure to remove part of an object is a warning, as in cnm_network.
        """
        spec = prune_spec(params)
        return self._run(self._prune, spec)

    def _prune(self, spec):
        endpoints = self._endpoints()
        used_networks = {ep.network_id for ep in endpoints}
        used_sandboxes = {ep.sandbox_id for ep in endpoints}
        before, nets, sbs = {}, [], []
        if "networks" in spec:
            wanted = spec["networks"]
            candidates = self._all_networks()
            before["networks"] = [n.name for n in candidates]
            nets = [n for n in candidates if n.id not in used_networks
                    if wanted.matches(n.labels, n.created)]
            skipped = []
            if not self.cluster_options.get("cluster_store"):
                # an overlay instance leaves the cluster store too: without one, keep it
                skipped = [n.name for n in nets if n.driver == C.OVERLAY_DRIVER]
                nets = [n for n in nets if n.driver != C.OVERLAY_DRIVER]
        if "sandboxes" in spec:
            wanted = spec["sandboxes"]
            candidates = [s for s in self._all_sandboxes() if s.implicit]
            before["sandboxes"] = [s.name for s in candidates]
            # sandboxes carry no labels: ``label`` matches none, ``label!`` every one
            sbs = [s for s in candidates if s.id not in used_sandboxes
                   if wanted.matches({}, s.created) if not self._busy(s)]
        gone = {"networks": {n.name for n in nets}, "sandboxes": {s.name for s in sbs}}
        after = {k: [name for name in names if name not in gone[k]]
                 for k, names in before.items()}
        actions = ["remove sandbox %s" % s.name for s in sbs]
        actions.extend("remove network %s" % n.name for n in nets)
        result = Result(changed=bool(actions), diff={"before": before, "after": after},
                        actions=actions, data={"networks": [n.name for n in nets],
                                               "sandboxes": [s.name for s in sbs]})
        if "networks" in spec and skipped:
            result.warnings.append("overlay network(s) %s kept: pruning them needs "
                                   "cluster_store" % ", ".join(skipped))
        if self.check_mode or not result.changed:
            return result
        if sbs:
            self._intend_dns(*sbs)
            for sb in sbs:
                result.warnings.extend(self._remove_sandbox(sb))
            self._sync_dns_safely(result, *sbs)
        for net in nets:
            remove = (self._remove_overlay if net.driver == C.OVERLAY_DRIVER
                      else self._remove_network)
            result.warnings.extend(remove(net, False).warnings)
        return result

    def _all_networks(self):
        """Every ready network that is not predefined, by name."""
        nets = [Network.from_doc(d) for d in self.store.all("networks")]
        nets = [n for n in nets if n.state == READY and not n.predefined]
        return sorted((n for n in nets if n.name not in PREDEFINED), key=lambda n: n.name)

    def _all_sandboxes(self):
        """Every ready sandbox, by name."""
        sbs = [Sandbox.from_doc(d) for d in self.store.all("sandboxes")]
        return sorted((s for s in sbs if s.state == READY), key=lambda s: s.name)

    def _busy(self, sb):
        """A process runs in the sandbox's own namespace: it is in use, kept."""
        return sb.mode == "own" and namespace.processes_inside(sb.netns_path)
