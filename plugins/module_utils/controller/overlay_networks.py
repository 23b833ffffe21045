"""Overlay networks: ``cnm_network`` with ``driver: overlay`` (scope global).

A global network is defined once in the cluster store (id, subnets, VNI, options) and
instantiated on each host where a task asks for it: the first host creates the
definition, the others join it; a later create with a different definition fails naming
the differing field. The host's instance is a local row (a copy of the definition plus
this host's devices and VTEP), so reads and ``*_info`` work from SQLite alone. Removal
on one host removes its instance and its membership; the definition goes with the last
host, or at once with ``force``.

Order of a create: everything validated (module options, the definition, this host's
advertise address) -> the cluster's definition created or joined (one transaction) ->
local row ``creating`` -> bridge + VXLAN -> firewall -> row ``ready`` -> peers
programmed -> agent configured. A failure undoes its own steps newest first, leaving
the cluster as it found it (a host that joined leaves again).

``encrypted``: before anything is made, the kernel is probed for ESP with AES-GCM (a
throwaway SA); the cluster keeps the network's keys, and ``peers.apply`` programs the SAs,
policies and marks with the peers. ``key_rotation`` (the key generation wanted) drives
a rotation through the cluster store: each step is written there, applied by every
member's agent (and this run), and acknowledged by all before the next step
(``netns/xfrm.py`` describes the order).
"""
from .. import constants as C
from .. import validation as V
from ..drivers import get_driver
from ..errors import CnmError, ConflictError, ValidationError
from ..model import CREATING, READY
from .network_create import NetworkCreate
from .network_rebuild import NetworkRebuild
from .overlay import Overlay, encrypted_options, is_encrypted
from .result import Result
from .undo import Undo, checkpoint


class OverlayNetworks(NetworkRebuild, NetworkCreate, Overlay):
    """Create (or join), check and repair, and leave an overlay network on this host."""

    def _overlay_request(self, params):
        """The validated cluster request of ``params`` (``cluster/networks.py``)."""
        from ..cluster.networks import network_request
        return network_request(dict(params, driver="overlay"))

    def _key_rotation(self, params, options):
        """The validated ``key_rotation`` (None when not given). Raises ValidationError
        naming it when it is no integer >= 0 or the network is not encrypted."""
        wanted = params.get("key_rotation")
        if wanted is None:
            return None
        wanted = V.integer(wanted, "key_rotation", 0, 2 ** 31 - 1)
        if not encrypted_options(options):
            raise ValidationError("key_rotation applies to encrypted overlay networks "
                                  "(driver_options.%s: true)" % C.OPT_ENCRYPTED,
                                  field="key_rotation")
        return wanted

    def _check_esp_support(self):
        """Raises ValidationError naming ``driver_options.encrypted`` when this kernel
        cannot run ESP with AES-GCM (probed with a throwaway SA)."""
        from ..netns import xfrm
        reason = xfrm.esp_unsupported()
        if reason:
            raise ValidationError(
                "this kernel cannot run IPsec ESP with AES-GCM: %s (needs CONFIG_INET_ESP "
                "and CONFIG_CRYPTO_GCM, built in or as the modules esp4 and gcm)" % reason,
                field="driver_options.%s" % C.OPT_ENCRYPTED)

    def _create_overlay(self, desired, params):
        """This host's instance of overlay network ``params['name']``: the cluster's
        definition created or joined, the devices made; with ``key_rotation``, the keys
        rotated afterwards. Returns a Result. Raises ValidationError/ConflictError
        naming the field, ClusterUnavailableError naming the endpoints tried,
        KernelError."""
        request = self._overlay_request(params)
        options = request.get("options")
        encrypted = encrypted_options(options)
        dummy, networks, dummy = self._cluster()
        wanted = None
        if params.get("key_rotation") is not None:
            if not encrypted:   # joining: the stored definition may say encrypted
                options = (networks.get(desired.name) or {}).get("options")
            wanted = self._key_rotation(params, options)
        vtep, underlay, underlay_mtu = self._vtep()
        if encrypted:
            self._check_esp_support()
        result = self._create_overlay_instance(desired, request, networks, vtep, underlay,
                                               underlay_mtu)
        if wanted is not None and not self.check_mode:
            net = self._network(desired.name)
            self._overlay_rotate(net, wanted, result)
        return result

    def _create_overlay_instance(self, desired, request, networks, vtep, underlay,
                                 underlay_mtu):
        if self.check_mode:
            existing = networks.get(desired.name)   # read only: creates nothing
            if existing is not None:
                networks._check_same(existing, request)  # pylint: disable=protected-access
            verb = "join" if existing else "create"
            after = {"Name": desired.name, "Driver": "overlay", "Scope": "global"}
            return Result(changed=True, diff={"before": {}, "after": after},
                          actions=["%s global network %s (VTEP %s)" % (verb, desired.name,
                                                                       vtep)],
                          data={"network": after})
        driver = get_driver("overlay")
        self.firewall  # noqa: B018 - choose the backend before touching anything
        with Undo() as undo:
            definition, created = networks.create(request, vtep)
            undo.push("leave global network %s" % desired.name, networks.leave,
                      desired.name, vtep)
            checkpoint("overlay-defined")
            joined_encrypted = encrypted_options(definition.get("options"))
            if joined_encrypted and not encrypted_options(request.get("options")):
                self._check_esp_support()   # joined an encrypted network
            net = self._overlay_network(definition, vtep, underlay, underlay_mtu)
            driver.validate(net, self.netlink)
            other = self.store.get("networks", net.id)
            if other is not None:
                raise ConflictError("network id %s is already network %s here"
                                    % (net.id[:12], other["name"]), field="name")
            net.state = CREATING
            self._save_network(net)
            undo.push("forget network", self.store.delete, "networks", net.id)
            driver.setup_network(net, self.netlink)
            undo.push("remove devices", driver.teardown_network, net, self.netlink)
            self._sync_firewall(net, [])
            undo.push("remove firewall rules", self._sync_firewall, net, [], True)
            net.state = READY
            self._save_network(net)
        result = Result(changed=True, diff={"before": {}, "after": self._inspect_network(net)},
                        actions=["%s global network %s (VNI %d, %s, VTEP %s)" % (
                            "create" if created else "join", net.name, net.vni,
                            ", ".join(p["subnet"] for p in net.pools), vtep)])
        self._overlay_after_change(net, result)
        result.data["network"] = self._inspect_network(net)
        return result

    def _overlay_after_change(self, net, result):
        """Peers programmed and the agent told; failures here are warnings (the agent
        and the next run finish the job), never a half-made network."""
        try:
            self._overlay_sync_peers(net)
        except CnmError as exc:
            result.warnings.append("peers of %s not programmed yet: %s" % (net.name, exc))
        try:
            self._ensure_agent()
        except (CnmError, OSError) as exc:
            result.warnings.append("host agent: %s" % exc)

    def _update_overlay(self, cur, desired, params):
        """A run on an existing instance: the definition compared with the request
        (a difference fails naming the field), membership, devices, firewall and peers
        checked and repaired; then a ``key_rotation`` above the stored generation
        rotates the keys. When the store cannot be reached, the local copy is checked
        alone and the result says so."""
        wanted = self._key_rotation(params, cur.options)
        result = self._update_overlay_instance(cur, desired, params)
        if wanted is not None:
            net = self._network(cur.name) or cur
            if self.check_mode:
                self._overlay_rotation_preview(net, wanted, result)
            else:
                self._overlay_rotate(net, wanted, result)
        return result

    def _overlay_rotation_preview(self, net, wanted, result):
        """Check mode: say whether the keys would rotate (reads the store only)."""
        from ..netns import xfrm
        doc, dummy = self._cluster()[1].key_document(net.id)
        if doc is not None and xfrm.rotation_step(doc, wanted) is not None:
            result.changed = True
            result.actions.append("rotate the keys of %s to generation %d"
                                  % (net.name, wanted))

    def _overlay_rotate(self, net, wanted, result):
        """Rotate the keys of encrypted network ``net`` up to generation ``wanted``:
        each step (``xfrm.rotation_step``) written to the store, applied here, and
        acknowledged by every member host before the next. Records the steps in
        ``result`` (generations only, never a key). Raises ConflictError naming
        ``key_rotation`` when a host does not acknowledge in time (the store keeps a
        consistent step; a later run resumes), ClusterUnavailableError, KernelError."""
        from ..netns import xfrm
        dummy, networks, dummy = self._cluster()
        definition = networks.get(net.name)
        if definition is None or definition["id"] != net.id:
            raise ConflictError("global network %s is gone from the cluster store"
                                % net.name, field="key_rotation")
        doc, revision = networks.key_document(net.id)
        if doc is None:
            raise ConflictError("the keys of encrypted network %s are missing in the "
                                "cluster store" % net.name, field="key_rotation")
        if xfrm.rotation_step(doc, wanted) is None:
            return
        for dummy in range(20):
            self._overlay_sync_peers(net)
            networks.wait_key_acks(definition, xfrm.key_state(doc))
            step = xfrm.rotation_step(doc, wanted)
            if step is None:
                return
            if networks.put_key_document(net.id, step, revision):
                state = xfrm.key_state(step)
                result.changed = True
                result.actions.append("keys of %s: generations %s, primary %d" % (
                    net.name, state["generations"], state["primary"]))
            doc, revision = networks.key_document(net.id)
            if doc is None:
                raise ConflictError("the keys of encrypted network %s vanished during "
                                    "the rotation" % net.name, field="key_rotation")
        raise ConflictError("key rotation of %s: the key document kept changing"
                            % net.name, field="key_rotation")

    def _update_overlay_instance(self, cur, desired, params):
        request = self._overlay_request(params)
        dummy, networks, dummy = self._cluster()
        drift = []
        warnings = []
        try:
            definition = networks.get(cur.name)
            if definition is None or definition["id"] != cur.id:
                drift.append("global network %s is gone from the cluster store" % cur.name)
            else:
                networks._check_same(definition, request)  # pylint: disable=protected-access
                if cur.vtep not in networks.members(definition):
                    drift.append("host %s is not a member in the cluster store" % cur.vtep)
        except CnmError as exc:
            if exc.field not in (None, "cluster_store"):
                raise
            definition = False
            warnings.append("cluster store unreachable, only the local copy was checked: "
                            "%s" % exc)
        driver = get_driver(cur.driver)
        drift += driver.network_drift(cur, self.netlink) + self._firewall_drift(cur)
        if definition:
            try:
                drift += self._overlay_sync_peers(cur, check=True)
            except CnmError as exc:
                warnings.append(str(exc))
        result = Result(changed=bool(drift), data={"network": self._inspect_network(cur)},
                        actions=["repair: %s" % d for d in drift])
        result.warnings.extend(warnings)
        if not drift:
            if not self.check_mode and definition:
                self._ensure_agent()   # a host whose agent died catches up now
            return result
        result.diff = {"before": {"kernel": drift}, "after": {"kernel": []}}
        if self.check_mode:
            return result
        if definition is None or (definition and definition["id"] != cur.id):
            return self._recreate_overlay(cur, desired, params, result)
        if definition and cur.vtep not in networks.members(definition):
            networks.join(cur.name, cur.vtep)
        driver.setup_network(cur, self.netlink)
        for ep in self._endpoints(network_id=cur.id):
            sb = self._sandbox_by_id(ep.sandbox_id)
            if sb is not None:
                from ..netns import namespace
                if namespace.is_netns(sb.netns_path):
                    driver.setup_endpoint(cur, sb, ep, self.netlink)
        self._sync_firewall(cur)
        if definition:
            self._overlay_after_change(cur, result)
        return result

    def _recreate_overlay(self, cur, desired, params, result):
        """The cluster lost the definition (removed with force elsewhere): this host's
        stale instance goes, and a new one is made from the request."""
        errors = self._remove_overlay_instance(cur, force=True, leave=False)
        made = self._create_overlay(desired, params)
        made.actions = result.actions + made.actions
        made.warnings = result.warnings + errors + made.warnings
        return made

    def _remove_overlay(self, net, force):
        """This host leaves overlay network ``net``: endpoints detached (``force``), the
        instance removed, the membership dropped; the definition goes with the last
        host, or at once with ``force``. Returns a Result."""
        endpoints = self._endpoints(network_id=net.id)
        if endpoints and not force:
            names = sorted(ep.sandbox_name for ep in endpoints)
            raise ConflictError("network %s has %d endpoint(s) attached (sandboxes: %s); "
                                "detach them or set force: true"
                                % (net.name, len(endpoints), ", ".join(names)),
                                field="force")
        self._cluster()   # a missing or malformed cluster_store fails before any change
        before = self._inspect_network(net)
        result = Result(changed=True, diff={"before": before, "after": {}},
                        actions=[*("detach %s" % ep.sandbox_name for ep in endpoints),
                                 "leave global network %s" % net.name],
                        data={"network": None})
        if self.check_mode:
            return result
        result.warnings.extend(self._remove_overlay_instance(net, force))
        return result

    def _remove_overlay_instance(self, net, force, leave=True):
        """Detach, leave the cluster (unless ``leave`` is False), drop the local
        instance and its remote names, reconfigure the agent. Returns errors."""
        errors = []
        touched = []
        endpoints = self._endpoints(network_id=net.id)
        self._intend_dns(*[self._sandbox_by_id(ep.sandbox_id) for ep in endpoints])
        for ep in endpoints:
            sb = self._sandbox_by_id(ep.sandbox_id)
            errors += self._detach(net, sb, ep)
            if sb is not None:
                touched.append(sb)
        if leave:
            dummy, networks, dummy = self._cluster()
            try:
                networks.leave(net.name, net.vtep, force=force)
            except CnmError as exc:
                errors.append("cluster store: %s" % exc)
        errors += self._drop_network(net, best_effort=True)
        from ..cluster import peers
        try:
            peers.forget(self.run_dir, net.id)
        except OSError as exc:
            errors.append(str(exc))
        if is_encrypted(net):
            errors += peers.forget_encryption(net.vni)
        try:
            self._ensure_agent()
        except (CnmError, OSError) as exc:
            errors.append("host agent: %s" % exc)
        probe = Result()
        self._sync_dns_safely(probe, *touched)
        return errors + probe.warnings

    # --- a host gone for good -------------------------------------------------------------
    def cluster_host(self, params):
        """cnm_cluster_host: remove host ``params['host']`` (its advertise address) from
        the cluster for good, from any other host: its memberships, peer records and
        addresses in every global network are released (the other hosts' agents drop
        its FDB entries and names). Check mode reports what would go. Returns
        ``data['removed']``. Raises ValidationError naming ``host`` (not an IP
        address, or this very host while it still has overlay networks),
        ClusterUnavailableError."""
        import ipaddress
        raw = params.get("host")
        try:
            host = str(ipaddress.ip_address(str(raw or "").strip()))
        except ValueError:
            from ..errors import ValidationError
            raise ValidationError("%r is not a host's advertise address" % (raw,),
                                  field="host")
        return self._run(self._cluster_host_op, host)

    def _cluster_host_op(self, host):
        for doc in self.store.all("networks", "json_extract(doc, '$.vtep') = ?", (host,)):
            raise ConflictError("%s is this host, which still has overlay network %s: "
                                "remove its networks instead" % (host, doc["name"]),
                                field="host")
        dummy, networks, dummy = self._cluster()
        found = networks.host_records(host) if self.check_mode else networks.forget_host(host)
        removed = {"networks": [name for name, dummy in found["members"]],
                   "endpoints": [rec.get("sandbox") or eid[:12]
                                 for dummy, eid, rec in found["endpoints"]],
                   "addresses": [address for dummy, address, dummy in found["addresses"]]}
        changed = any(removed.values())
        actions = ["forget host %s: %d network membership(s), %d endpoint(s), %d address(es)"
                   % (host, len(removed["networks"]), len(removed["endpoints"]),
                      len(removed["addresses"]))] if changed else []
        return Result(changed=changed, actions=actions,
                      diff={"before": {"host": host, **removed} if changed else {},
                            "after": {}},
                      data={"host": host, "removed": removed})
