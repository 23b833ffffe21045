"""Networks: ``cnm_network`` (create, update in place, rebuild, remove) and
``cnm_network_info``."""
from .. import constants as C, validation as V
from ..difference import DifferenceTracker
from ..drivers import get_driver
from ..errors import ConflictError, ValidationError
from ..model import is_bridged
from ..netns import namespace
from .firewall_sync import rules_base
from . import reader
from .network_create import NetworkCreate
from .network_options import desired_network, merged_network, network_differences
from .network_rebuild import NetworkRebuild
from .overlay_networks import OverlayNetworks
from .result import Result
from .session import PREDEFINED


class Networks(OverlayNetworks, NetworkRebuild, NetworkCreate):
    """The network operations."""

    def network(self, params):
        """cnm_network: make network ``params['name']`` present or absent.

        Validates every option first; returns Result with ``data['network']`` in the
        shape of ``docker network inspect`` (None when absent).
        """
        name = V.object_name(params.get("name"), "name", "network")
        state = params.get("state") or "present"
        desired = None
        if state == "present" and name not in PREDEFINED:
            desired = desired_network(params)
        return self._run(self._network_op, name, state, desired, params)

    def _network_op(self, name, state, desired, params):
        existing = self._network(name)
        if name == C.DEFAULT_BRIDGE_NETWORK:
            if state == "absent":
                raise ValidationError("bridge is a pre-defined network and cannot be "
                                      "removed", field="name")
            if existing is None:
                return self._ensure_default_bridge(params)[1]
        if name in PREDEFINED:
            if state == "absent":
                raise ValidationError("network %s is predefined and cannot be removed"
                                      % name, field="name")
            driver = params.get("driver")
            if driver and driver != PREDEFINED[name]:
                raise ValidationError("network %s is predefined with driver %s"
                                      % (name, PREDEFINED[name]), field="driver")
            return Result(data={"network": self._inspect_network(existing)})
        if state == "absent":
            if existing is None:
                return Result(data={"network": None})
            if existing.driver == C.OVERLAY_DRIVER:
                return self._remove_overlay(existing, bool(params.get("force")))
            return self._remove_network(existing, bool(params.get("force")))
        if existing is not None and (existing.driver == C.OVERLAY_DRIVER) != (
                desired.driver == C.OVERLAY_DRIVER):
            raise ValidationError("network %s exists with driver %s; a change between "
                                  "local and global scope needs it removed first"
                                  % (name, existing.driver), field="driver")
        if desired.driver == C.OVERLAY_DRIVER:
            if existing is None:
                return self._create_overlay(desired, params)
            return self._update_overlay(existing, desired, params)
        if existing is None:
            return self._create_network(desired)
        return self._update_network(existing, desired, params)

    def _update_network(self, cur, want, params):
        inplace, rebuild = network_differences(cur, want, params)
        force = bool(params.get("force"))
        if rebuild and not force:
            raise ValidationError(
                "changing %s needs network %s rebuilt (its endpoints are re-attached with "
                "their addresses where possible); set force: true to do it"
                % ("; ".join(rebuild.describe()), cur.name), field=rebuild.paths()[0])
        driver = get_driver(cur.driver)
        fw_drift = self._firewall_drift(cur)
        drift = driver.network_drift(cur, self.netlink) + fw_drift
        ep_drift = []
        if not rebuild and is_bridged(cur) and any("bridge" in d for d in drift):
            # a re-created bridge needs its veths enslaved again
            for ep in self._endpoints(network_id=cur.id):
                sb = self._sandbox_by_id(ep.sandbox_id)
                if sb and namespace.is_netns(sb.netns_path):
                    ep_drift.append((ep, sb))
        before = self._inspect_network(cur)
        changed = bool(inplace or rebuild or drift)
        result = Result(changed=changed, data={"network": before})
        result.actions = [*("update %s" % d for d in inplace.describe()),
                          *("rebuild: %s" % d for d in rebuild.describe()),
                          *("repair: %s" % d for d in drift)]
        if not changed:
            return result
        diff = DifferenceTracker()
        for item in list(inplace) + list(rebuild):
            diff.add(*item)
        for d in drift:
            diff.add("kernel", d, "present")
        result.diff = diff.as_diff()
        if self.check_mode:
            return result
        if rebuild:
            self._rebuild_network(cur, merged_network(cur, want, params))
        else:
            cur.labels = want.labels if params.get("labels") is not None else cur.labels
            if params.get("attachable") is not None:
                cur.attachable = want.attachable
            for key, value in want.options.items():
                cur.options[key] = value
            cur.mtu = int(cur.options.get(C.OPT_MTU, cur.mtu or C.DEFAULT_MTU))
            with self.store.transaction():
                self._save_network(cur)
                self._intend_dns(full=True)
            driver.setup_network(cur, self.netlink)
            for ep, sb in ep_drift:
                driver.setup_endpoint(cur, sb, ep, self.netlink)
                self._sync_routes(sb)
            if is_bridged(cur):
                if fw_drift or any("bridge" in d for d in drift):
                    # rules deleted by hand (or a flush), or a bridge made again (its
                    # sysctls, e.g. route_localnet, went with it): put them back whole
                    rules = self._firewall_rules(cur)
                    self.firewall.restore_network(rules)
                    cur.firewall = rules_base(rules)
                    self._save_network(cur)
                else:
                    self._sync_firewall(cur)
            if inplace and is_bridged(cur):
                for ep in self._endpoints(network_id=cur.id):
                    sb = self._sandbox_by_id(ep.sandbox_id)
                    if sb and namespace.is_netns(sb.netns_path):
                        driver.setup_endpoint(cur, sb, ep, self.netlink)
        # addresses, internal or the driver may have changed: every sandbox's records
        self._sync_dns_safely(result, full=True)
        result.data["network"] = self._inspect_network(self._network(cur.name))
        return result

    def _remove_network(self, net, force):
        endpoints = self._endpoints(network_id=net.id)
        if endpoints and not force:
            names = sorted(ep.sandbox_name for ep in endpoints)
            raise ConflictError("network %s has %d endpoint(s) attached (sandboxes: %s); "
                                "detach them or set force: true"
                                % (net.name, len(endpoints), ", ".join(names)),
                                field="force")
        before = self._inspect_network(net)
        result = Result(changed=True, diff={"before": before, "after": {}},
                        actions=[*("detach %s" % ep.sandbox_name for ep in endpoints),
                                 "remove network %s" % net.name], data={"network": None})
        if self.check_mode:
            return result
        errors = []
        touched = []
        self._intend_dns(*[self._sandbox_by_id(ep.sandbox_id) for ep in endpoints])
        for ep in endpoints:
            sb = self._sandbox_by_id(ep.sandbox_id)
            errors += self._detach(net, sb, ep)
            if sb is not None:
                touched.append(sb)
        errors += self._drop_network(net, best_effort=True)
        self._sync_dns_safely(result, *touched)
        if errors:
            result.warnings.extend(errors)
        return result

    def network_info(self, params):
        """cnm_network_info: networks by ``name`` or ``filters`` (driver, label, name).

        Never fails for a missing name: ``exists`` is False.
        """
        self._read_only = True  # never creates the store
        return self._run(self._network_info, params)

    def _network_info(self, params):
        return reader.network_info(self.store, params)
