"""The engine's controller: validate all -> plan -> apply (undo on failure) -> persist.

The only writer of the store. Every public method is one operation under the host-wide
lock: it first finishes or undoes what a dead run left (rows in ``creating``), then
compares store and kernel (drift), then plans the change as a list of differences.
Check mode returns the plan; a real run applies it, pushing an undo step for each
kernel change so a failure half-way leaves nothing behind (LIFO undo).
"""
import dataclasses
import ipaddress
import os

from . import constants as C
from . import inspect as shape
from . import validation as V
from .difference import DifferenceTracker
from .drivers import get_driver
from .errors import CnmError, ConflictError, NotFoundError, ValidationError
from .firewall.model import NetworkRules, PortMapping
from .ipam.allocator import AddressAllocator, AllocationLookup, pool_containing
from .ipam.config import PoolConfig, normalise_address, parse_ipam_config
from .ipam.mac import generate_mac, mac_from_ip, normalise_mac
from .ipam.pools import choose_subnet, find_overlap
from .model import (CREATING, READY, Endpoint, Network, Sandbox, fixed_id, gateway_for,
                    new_id, now_rfc3339)
from .netns import namespace
from .netns.links import Netlink, host_networks
from .store import Store


@dataclasses.dataclass
class Result:
    """What an operation did (or, in check mode, would do)."""
    changed: bool = False
    diff: dict = dataclasses.field(default_factory=lambda: {"before": {}, "after": {}})
    actions: list = dataclasses.field(default_factory=list)
    data: dict = dataclasses.field(default_factory=dict)
    warnings: list = dataclasses.field(default_factory=list)


def checkpoint(name):
    """Fault injection for crash tests: with ``CNM_FAULT_PAUSE=<name>`` the run writes
    ``$CNM_FAULT_MARKER`` and sleeps at this point, so a test can ``kill -9`` it there."""
    if os.environ.get("CNM_FAULT_PAUSE") == name:
        marker = os.environ.get("CNM_FAULT_MARKER")
        if marker:
            with open(marker, "w") as fh:
                fh.write(name)
        import time
        time.sleep(600)


class Undo:
    """A stack of compensating steps, run newest first when an apply step fails."""

    def __init__(self):
        self._steps = []

    def push(self, description, func, *args):
        self._steps.append((description, func, args))

    def run(self):
        errors = []
        while self._steps:
            description, func, args = self._steps.pop()
            try:
                func(*args)
            except Exception as exc:  # undo is best effort; report every failure
                errors.append("%s: %s" % (description, exc))
        return errors


PREDEFINED = {"host": "host", "none": "null"}
LOOPBACK_INDEX = 1  # loopback is interface 1 in every network namespace


def _predefined_network(name):
    return Network(id=fixed_id(name), name=name, driver=PREDEFINED[name], predefined=True,
                   created="1970-01-01T00:00:00Z")


class Engine:
    """One engine instance per module run (or per test call)."""

    def __init__(self, state_dir=C.DEFAULT_STATE_DIR, run_dir=C.DEFAULT_RUN_DIR,
                 netns_dir=C.DEFAULT_NETNS_DIR, firewall_backend="auto", check_mode=False):
        self.state_dir = state_dir
        self.run_dir = run_dir
        self.netns_dir = netns_dir
        self.firewall_backend = firewall_backend
        self.check_mode = check_mode
        self.store = None
        self.netlink = None
        self._firewall = None
        self._read_only = False

    # ------------------------------------------------------------------------------
    # session
    # ------------------------------------------------------------------------------
    def _open(self):
        fresh = not os.path.exists(os.path.join(self.state_dir, C.STORE_FILE))
        if (self.check_mode or self._read_only) and fresh:
            # check mode (or a read) on a fresh host creates nothing, not even the database
            self.store = Store.open_memory()
        else:
            self.store = Store.open(self.state_dir)
        self.netlink = Netlink()
        self._ensure_predefined()
        if not self.check_mode and not self._read_only:
            self._recover()
        if not self.check_mode and not fresh:
            # every module run, info modules included, brings a dead resolver back
            self._revive_resolver()

    def _close(self):
        if self.netlink:
            self.netlink.close()
        if self.store:
            self.store.close()
        self.store = self.netlink = None

    def _run(self, func, *args):
        self._open()
        try:
            return func(*args)
        finally:
            self._close()

    def _revive_resolver(self):
        """The resolver died (kill -9, reboot): the next module run starts it again."""
        from . import dns_sync
        try:
            dns_sync.ensure_running(self)
        except CnmError:
            pass  # reported by the operation's own DNS sync, if it has one

    def _ensure_predefined(self):
        for name in PREDEFINED:
            if self.store.get("networks", name=name) is None:
                self.store.put("networks", _predefined_network(name).to_doc(), name=name)

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

    # ------------------------------------------------------------------------------
    # store helpers
    # ------------------------------------------------------------------------------
    def _network(self, name):
        return Network.from_doc(self.store.get("networks", name=name))

    def _network_by_id(self, network_id):
        return Network.from_doc(self.store.get("networks", network_id))

    def _sandbox(self, name):
        return Sandbox.from_doc(self.store.get("sandboxes", name=name))

    def _sandbox_by_id(self, sandbox_id):
        return Sandbox.from_doc(self.store.get("sandboxes", sandbox_id))

    def _endpoints(self, network_id=None, sandbox_id=None):
        if network_id is not None:
            docs = self.store.all("endpoints", "network_id=?", (network_id,))
        elif sandbox_id is not None:
            docs = self.store.all("endpoints", "sandbox_id=?", (sandbox_id,))
        else:
            docs = self.store.all("endpoints")
        return [Endpoint.from_doc(d) for d in docs]

    def _endpoint(self, network_id, sandbox_id):
        for ep in self._endpoints(sandbox_id=sandbox_id):
            if ep.network_id == network_id:
                return ep
        return None

    def _save_network(self, net):
        self.store.put("networks", net.to_doc(), name=net.name)

    def _save_sandbox(self, sb):
        self.store.put("sandboxes", sb.to_doc(), name=sb.name)

    def _save_endpoint(self, ep):
        self.store.put("endpoints", ep.to_doc(), network_id=ep.network_id,
                       sandbox_id=ep.sandbox_id)

    # ------------------------------------------------------------------------------
    # firewall and DNS hooks (the firewall is chosen once per run, never by drivers)
    # ------------------------------------------------------------------------------
    @property
    def firewall(self):
        """The firewall backend of this run, chosen once (``auto`` probes nftables, then
        iptables); drivers never decide firewalling. Raises ValidationError for an
        unknown name, DependencyError when no backend works."""
        if self._firewall is None:
            from .firewall import get_backend
            self._firewall = get_backend(self.firewall_backend)
        return self._firewall

    def _firewall_rules(self, net, endpoints=None):
        """The whole desired rule set of ``net`` as data (None: no rules for it)."""
        if net.driver != "bridge":
            return None
        if endpoints is None:
            docs = [p for row in self.store.published_ports(net.id) for p in row[3]]
        else:
            docs = [p for ep in endpoints for p in ep.ports]
        ports = [PortMapping.from_dict(p) for p in docs]
        subnets = tuple(p["subnet"] for p in net.pools)
        return NetworkRules(
            network_id=net.id, bridge=net.bridge, subnets=subnets,
            icc=V.boolean(net.options.get(C.OPT_ENABLE_ICC, "true"), "icc"),
            masquerade=V.boolean(net.options.get(C.OPT_ENABLE_IP_MASQUERADE, "true"),
                                 "masquerade"),
            internal=net.internal, ports=tuple(sorted(ports)))

    def _sync_firewall(self, net, endpoints=None, remove=False, old_ports=None,
                       new_ports=None):
        """Apply the difference between the active and the desired rules of ``net``.

        The store keeps the network's last applied rules without ports (ports live on
        the endpoints), so saving a network does not grow with its mappings. Callers
        that change ports pass ``old_ports``: the network's mappings before the change
        (and may pass ``new_ports``, the mappings after it, to save a store read).
        """
        if net.driver != "bridge" or self.firewall.name == "none":
            return
        if remove:
            new = None
        elif new_ports is not None:
            new = dataclasses.replace(self._firewall_rules(net, []), ports=new_ports)
        else:
            new = self._firewall_rules(net, endpoints)
        old = None
        if net.firewall:
            if old_ports is None:
                old_ports = (new.ports if new is not None
                             else self._firewall_rules(net).ports)
            old = dataclasses.replace(NetworkRules.from_dict(net.firewall),
                                      ports=tuple(sorted(old_ports)))
        if old == new:
            return
        self.firewall.apply(old, new)
        base = _rules_base(new)
        if base != net.firewall:
            net.firewall = base
            if not remove:
                self._save_network(net)

    def _sync_ports(self, net, before, after):
        """Publish/withdraw the mappings of one endpoint of ``net``: ``before`` and
        ``after`` are that endpoint's PortMapping lists (the store already holds
        ``after``). Called on every port change, endpoint removal and re-address.

        Only this endpoint's mappings are read and compared, so the cost does not grow
        with the network's other mappings; the backend asks for the network's complete
        lists only when the kernel refuses the difference (drift) or the network's own
        rules changed too.
        """
        if net.driver != "bridge" or self.firewall.name == "none":
            return
        current = self._firewall_rules(net, [])
        if not net.firewall or _rules_base(current) != net.firewall:
            self._sync_firewall(net)  # not only ports: the whole rule set
            return
        old = dataclasses.replace(NetworkRules.from_dict(net.firewall),
                                  ports=tuple(sorted(before)))
        new = dataclasses.replace(current, ports=tuple(sorted(after)))
        if old == new:
            return

        def complete():
            everything = self._firewall_rules(net).ports
            others = set(everything) - set(after)
            return (dataclasses.replace(old, ports=tuple(sorted(others | set(before)))),
                    dataclasses.replace(new, ports=everything))
        self.firewall.apply(old, new, complete=complete)

    def _firewall_drift(self, net):
        if net.driver != "bridge" or self.firewall.name == "none":
            return []
        rules = self._firewall_rules(net)
        return self.firewall.check(rules)

    def _sync_dns(self, sandboxes=(), full=False):
        """Rewrite the resolver files of ``sandboxes`` (every sandbox with ``full``) from
        the store, starting the resolver when a sandbox needs it, and the name files of
        ``sandboxes``."""
        from . import dns_sync
        return dns_sync.sync(self, sandboxes, full=full)

    # ------------------------------------------------------------------------------
    # networks
    # ------------------------------------------------------------------------------
    def network(self, params):
        """cnm_network: make network ``params['name']`` present or absent.

        Validates every option first; returns Result with ``data['network']`` in the
        shape of ``docker network inspect`` (None when absent).
        """
        name = V.object_name(params.get("name"), "name", "network")
        state = params.get("state") or "present"
        desired = None
        if state == "present" and name not in PREDEFINED:
            desired = self._desired_network(params)
        return self._run(self._network_op, name, state, desired, params)

    def _desired_network(self, p):
        """Validated, normalised Network from module parameters (no id, no subnet yet)."""
        driver_name = p.get("driver") or "bridge"
        if driver_name in ("host", "null"):
            raise ValidationError("only one network of driver %s may exist (the predefined "
                                  "%s network)" % (driver_name,
                                                   "host" if driver_name == "host" else
                                                   "none"), field="driver")
        driver = get_driver(driver_name)
        options = {}
        for key, value in (p.get("driver_options") or {}).items():
            if key not in driver.options:
                raise ValidationError("option %r is not supported by the %s driver "
                                      "(supported: %s)" % (key, driver_name,
                                                           ", ".join(sorted(driver.options))),
                                      field="driver_options.%s" % key)
            options[key] = V.driver_option_value(key, value)
        enable_ipv6 = bool(p.get("enable_ipv6"))
        ipam = p.get("ipam") or {}
        ipam_driver = ipam.get("driver") or "default"
        if ipam_driver != "default":
            raise ValidationError("IPAM driver %r is not supported (only 'default')"
                                  % ipam_driver, field="ipam.driver")
        pools = parse_ipam_config(ipam.get("config") or [], enable_ipv6)
        mtu = C.DEFAULT_MTU
        if C.OPT_MTU in options:
            mtu = V.integer(options[C.OPT_MTU], "driver_options.%s" % C.OPT_MTU, 68, 65535)
        net = Network(id="", name=p["name"], driver=driver_name, enable_ipv6=enable_ipv6,
                      internal=bool(p.get("internal")), labels=V.labels(p.get("labels")) or {},
                      options=options, ipam_driver=ipam_driver,
                      ipam_options=dict(ipam.get("options") or {}),
                      pools=[pool.to_dict() for pool in pools], mtu=mtu,
                      bridge=options.get(C.OPT_BRIDGE_NAME, ""))
        if driver_name == "bridge" and net.bridge:
            driver.validate(net, None)
        if C.OPT_HOST_BINDING_IPV4 in options:
            normalise_address(options[C.OPT_HOST_BINDING_IPV4],
                              "driver_options.%s" % C.OPT_HOST_BINDING_IPV4)
        return net

    def _network_op(self, name, state, desired, params):
        existing = self._network(name)
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
            return self._remove_network(existing, bool(params.get("force")))
        if existing is None:
            return self._create_network(desired)
        return self._update_network(existing, desired, params)

    def _inspect_network(self, net):
        eps = self._endpoints(network_id=net.id)
        sbs = {ep.sandbox_id: self._sandbox_by_id(ep.sandbox_id) for ep in eps}
        return shape.network(net, eps, sbs)

    def _in_use_subnets(self, exclude_id=None):
        """(name, subnet) of every pool of every network but ``exclude_id``."""
        out = []
        for doc in self.store.all("networks"):
            if doc["id"] == exclude_id:
                continue
            for pool in doc.get("pools", []):
                out.append((doc["name"], ipaddress.ip_network(pool["subnet"])))
        return out

    def _complete_pools(self, net, exclude_id=None):
        """Check explicit subnets against other networks, choose missing ones."""
        taken = self._in_use_subnets(exclude_id)
        for i, pool in enumerate(net.pools):
            hit = find_overlap(ipaddress.ip_network(pool["subnet"]), taken)
            if hit:
                raise ConflictError("subnet %s overlaps %s of network %s"
                                    % (pool["subnet"], hit[1], hit[0]),
                                    field="ipam.config[%d].subnet" % i)
        if not get_driver(net.driver).uses_ipam:
            return
        families = {ipaddress.ip_network(p["subnet"]).version for p in net.pools}
        wanted = [4] + ([6] if net.enable_ipv6 else [])
        missing = [f for f in wanted if f not in families]
        if not missing:
            return
        in_use = [subnet for dummy, subnet in taken] + host_networks()
        for family in missing:
            pools = C.DEFAULT_ADDRESS_POOLS if family == 4 else C.DEFAULT_ADDRESS_POOLS_V6
            subnet = choose_subnet(pools, in_use, family)
            net.pools.append(PoolConfig.for_subnet(subnet).to_dict())
            net.auto_subnets.append(str(subnet))
            in_use.append(subnet)

    def _create_network(self, net):
        net.id = new_id()
        net.created = now_rfc3339()
        driver = get_driver(net.driver)
        if net.driver == "bridge" and not net.bridge:
            net.bridge = C.BRIDGE_PREFIX + net.id[:12]
        if net.driver == "bridge":
            if self.netlink.host.index(net.bridge) is not None:
                raise ConflictError("interface %s already exists on the host" % net.bridge,
                                    field="driver_options.%s" % C.OPT_BRIDGE_NAME)
            for doc in self.store.all("networks"):
                if doc.get("bridge") == net.bridge:
                    raise ConflictError("bridge %s is already used by network %s"
                                        % (net.bridge, doc["name"]),
                                        field="driver_options.%s" % C.OPT_BRIDGE_NAME)
        driver.validate(net, self.netlink)
        self._complete_pools(net)
        if net.driver == "bridge" and not self.check_mode:
            self.firewall  # noqa: B018 - choose the backend before touching anything
        after = shape.network(net, [], {})
        result = Result(changed=True, diff={"before": {}, "after": after},
                        actions=["create network %s (%s)" % (net.name, ", ".join(
                            p["subnet"] for p in net.pools) or net.driver)],
                        data={"network": after})
        if self.check_mode:
            return result
        net.state = CREATING
        self._save_network(net)  # intent first: a crash after this is rolled back
        undo = Undo()
        try:
            driver.setup_network(net, self.netlink)
            undo.push("remove network", driver.teardown_network, net, self.netlink)
            self._sync_firewall(net, [])
            undo.push("remove firewall rules", self._sync_firewall, net, [], True)
        except Exception:
            undo.run()
            self.store.delete("networks", net.id)
            raise
        net.state = READY
        self._save_network(net)
        result.data["network"] = self._inspect_network(net)
        if net.driver == "bridge" and hasattr(self.firewall, "warnings"):
            result.warnings.extend(self.firewall.warnings())
        return result

    def _network_differences(self, cur, want, params):
        """(in-place differences, rebuild differences) of a network; None = unmanaged."""
        inplace, rebuild = DifferenceTracker(), DifferenceTracker()
        if params.get("driver") and want.driver != cur.driver:
            rebuild.add("driver", cur.driver, want.driver)
        if params.get("enable_ipv6") is not None and want.enable_ipv6 != cur.enable_ipv6:
            rebuild.add("enable_ipv6", cur.enable_ipv6, want.enable_ipv6)
        if params.get("internal") is not None and want.internal != cur.internal:
            rebuild.add("internal", cur.internal, want.internal)
        ipam = params.get("ipam") or {}
        if ipam.get("config") is not None:
            cur_pools = {p["subnet"]: p for p in cur.pools}
            want_pools = {p["subnet"]: p for p in want.pools}
            if want.pools or not cur.auto_subnets:
                for subnet in sorted(set(cur_pools) | set(want_pools)):
                    a, b = cur_pools.get(subnet), want_pools.get(subnet)
                    if a is None or b is None:
                        if b is None and subnet in cur.auto_subnets and not any(
                                ipaddress.ip_network(s).version ==
                                ipaddress.ip_network(subnet).version for s in want_pools):
                            continue  # chosen by the allocator: not a difference
                        rebuild.add("ipam.config[subnet=%s]" % subnet,
                                    a and a["subnet"], b and b["subnet"])
                        continue
                    for key in ("ip_range", "aux_addresses"):
                        if a.get(key) != b.get(key):
                            rebuild.add("ipam.config[subnet=%s].%s" % (subnet, key),
                                        a.get(key), b.get(key))
                    if b.get("gateway_given") and a.get("gateway") != b.get("gateway"):
                        rebuild.add("ipam.config[subnet=%s].gateway" % subnet,
                                    a.get("gateway"), b.get("gateway"))
        if params.get("labels") is not None and want.labels != cur.labels:
            inplace.add("labels", cur.labels, want.labels)
        for key, value in want.options.items():
            if cur.options.get(key) == value:
                continue
            if key == C.OPT_BRIDGE_NAME or key == C.OPT_PARENT or key in (
                    C.OPT_MACVLAN_MODE, C.OPT_IPVLAN_MODE):
                rebuild.add("driver_options.%s" % key, cur.options.get(key), value)
            else:
                inplace.add("driver_options.%s" % key, cur.options.get(key), value)
        return inplace, rebuild

    def _update_network(self, cur, want, params):
        inplace, rebuild = self._network_differences(cur, want, params)
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
        if not rebuild and cur.driver == "bridge" and any("bridge" in d for d in drift):
            # a re-created bridge needs its veths enslaved again
            for ep in self._endpoints(network_id=cur.id):
                sb = self._sandbox_by_id(ep.sandbox_id)
                if sb and namespace.is_netns(sb.netns_path):
                    ep_drift.append((ep, sb))
        before = self._inspect_network(cur)
        changed = bool(inplace or rebuild or drift)
        result = Result(changed=changed, data={"network": before})
        result.actions = (["update %s" % d for d in inplace.describe()]
                          + ["rebuild: %s" % d for d in rebuild.describe()]
                          + ["repair: %s" % d for d in drift])
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
            self._rebuild_network(cur, want)
        else:
            cur.labels = want.labels if params.get("labels") is not None else cur.labels
            for key, value in want.options.items():
                cur.options[key] = value
            cur.mtu = int(cur.options.get(C.OPT_MTU, cur.mtu or C.DEFAULT_MTU))
            self._save_network(cur)
            driver.setup_network(cur, self.netlink)
            for ep, sb in ep_drift:
                driver.setup_endpoint(cur, sb, ep, self.netlink)
                self._sync_routes(sb)
            if cur.driver == "bridge":
                if fw_drift:
                    # rules deleted by hand (or a flush): put this network's back whole
                    rules = self._firewall_rules(cur)
                    self.firewall.restore_network(rules)
                    cur.firewall = _rules_base(rules)
                    self._save_network(cur)
                else:
                    self._sync_firewall(cur)
            if inplace and cur.driver == "bridge":
                for ep in self._endpoints(network_id=cur.id):
                    sb = self._sandbox_by_id(ep.sandbox_id)
                    if sb and namespace.is_netns(sb.netns_path):
                        driver.setup_endpoint(cur, sb, ep, self.netlink)
        # addresses, internal or the driver may have changed: every sandbox's records
        self._sync_dns_safely(result, full=True)
        result.data["network"] = self._inspect_network(self._network(cur.name))
        return result

    def _rebuild_network(self, cur, want):
        """force: tear the network down and make it again, re-attaching every endpoint
        with its full config (address kept when still valid, MAC, aliases, ports)."""
        endpoints = self._endpoints(network_id=cur.id)
        sandboxes = {ep.sandbox_id: self._sandbox_by_id(ep.sandbox_id) for ep in endpoints}
        old_driver = get_driver(cur.driver)
        for ep in endpoints:
            sb = sandboxes[ep.sandbox_id]
            if sb:
                old_driver.teardown_endpoint(cur, sb, ep, self.netlink)
        self._sync_firewall(cur, remove=True)
        old_driver.teardown_network(cur, self.netlink)
        self.store.release(cur.id)
        net = dataclasses.replace(want, id=cur.id, created=cur.created,
                                  pools=list(want.pools), auto_subnets=[])
        if net.driver == "bridge" and not net.bridge:
            net.bridge = C.BRIDGE_PREFIX + net.id[:12]
        driver = get_driver(net.driver)
        driver.validate(net, self.netlink)
        self._complete_pools(net, exclude_id=cur.id)
        self._save_network(net)
        driver.setup_network(net, self.netlink)
        for ep in endpoints:
            sb = sandboxes[ep.sandbox_id]
            self._assign_addresses(net, ep, keep=True)
            ep.network_name = net.name
            self._save_endpoint(ep)
            if sb and namespace.is_netns(sb.netns_path):
                driver.setup_endpoint(net, sb, ep, self.netlink)
                self._sync_routes(sb)
        self._save_network(net)
        self._sync_firewall(net)

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
                        actions=["detach %s" % ep.sandbox_name for ep in endpoints]
                        + ["remove network %s" % net.name], data={"network": None})
        if self.check_mode:
            return result
        errors = []
        touched = []
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

    def _drop_network(self, net, best_effort=False):
        """Remove rules, kernel objects, allocations and the row of ``net``."""
        errors = []
        try:
            self._sync_firewall(net, remove=True)
        except CnmError as exc:
            errors.append(str(exc))
        errors += get_driver(net.driver).teardown_network(net, self.netlink)
        self.store.release(net.id)
        self.store.delete("networks", net.id)
        if errors and not best_effort:
            raise CnmError("; ".join(errors))
        return errors

    # ------------------------------------------------------------------------------
    # sandboxes
    # ------------------------------------------------------------------------------
    def sandbox(self, params):
        """cnm_sandbox: make sandbox ``params['name']`` present (namespace, loopback up)
        or absent (its endpoints are detached first)."""
        name = V.object_name(params.get("name"), "name", "sandbox")
        hostname = params.get("hostname")
        if hostname is not None:
            V.dns_name(hostname, "hostname")
        state = params.get("state") or "present"
        return self._run(self._sandbox_op, name, state, hostname)

    def _sandbox_op(self, name, state, hostname):
        sb = self._sandbox(name)
        if state == "absent":
            if sb is None:
                return Result(data={"sandbox": None})
            before = self._inspect_sandbox(sb)
            result = Result(changed=True, diff={"before": before, "after": {}},
                            actions=["remove sandbox %s" % name], data={"sandbox": None})
            if not self.check_mode:
                errors = self._remove_sandbox(sb)
                result.warnings.extend(errors)
                self._sync_dns_safely(result, sb)
            return result
        result = Result()
        if sb is None:
            sb = Sandbox(id=new_id(), name=name, netns_path=self._netns_path(name),
                         hostname=hostname or name, created=now_rfc3339())
            self._check_netns_free(sb)
            result.changed = True
            result.actions.append("create sandbox %s" % name)
            after = self._inspect_sandbox(sb, [])
            result.diff = {"before": {}, "after": after}
            result.data["sandbox"] = after
            if not self.check_mode:
                self._create_sandbox(sb, Undo())
                self._sync_dns_safely(result, sb)
                result.data["sandbox"] = self._inspect_sandbox(sb)
            return result
        diff = DifferenceTracker()
        if sb.implicit:
            diff.add("managed", "implicit", "explicit")
        if hostname is not None and hostname != sb.hostname:
            diff.add("hostname", sb.hostname, hostname)
        if not namespace.is_netns(sb.netns_path):
            diff.add("kernel", "namespace %s missing" % sb.netns_path, "present")
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
        self._save_sandbox(sb)
        if not namespace.is_netns(sb.netns_path):
            self._repair_sandbox(sb)
        self._sync_dns_safely(result, sb)
        result.data["sandbox"] = self._inspect_sandbox(sb)
        return result

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

    def _remove_sandbox(self, sb):
        """Detach every endpoint of ``sb``, then remove its namespace, files and row."""
        errors = []
        # Our own netlink socket inside would keep the namespace alive: close it first.
        self.netlink.forget(sb.netns_path)
        # Nothing runs inside: the kernel removes the interfaces with the namespace, so
        # the ~22 ms synchronous veth deletion per endpoint is not needed.
        with_namespace = (sb.mode == "own" and namespace.is_netns(sb.netns_path)
                          and not namespace.processes_inside(sb.netns_path))
        for ep in self._endpoints(sandbox_id=sb.id):
            errors += self._drop_endpoint(self._network_by_id(ep.network_id), sb, ep,
                                          best_effort=True, interfaces=not with_namespace)
        self._drop_sandbox_namespace(sb)
        self.store.delete("sandboxes", sb.id)
        from . import dns_sync
        from .dns import files as dns_files
        try:
            dns_files.remove_sandbox_files(dns_sync.file_dirs(self, sb))
        except OSError as exc:
            errors.append("remove name files of %s: %s" % (sb.name, exc))
        return errors

    # ------------------------------------------------------------------------------
    # endpoints
    # ------------------------------------------------------------------------------
    def endpoint(self, params):
        """cnm_endpoint: join sandbox ``params['sandbox']`` to ``params['network']``
        (creating the sandbox if missing) or remove that endpoint.

        Validates everything first; on failure undoes its own kernel work newest first
        and releases its addresses. Returns ``data['endpoint']``.
        """
        p = dict(params)
        network = V.object_name(p.get("network"), "network", "network")
        sandbox = V.object_name(p.get("sandbox"), "sandbox", "sandbox")
        state = p.get("state") or "present"
        spec = {}
        if state == "present":
            if p.get("ipv4_address") is not None:
                spec["ipv4"] = normalise_address(p["ipv4_address"], "ipv4_address")
                if spec["ipv4"].version != 4:
                    raise ValidationError("%s is not an IPv4 address" % spec["ipv4"],
                                          field="ipv4_address")
            if p.get("ipv6_address") is not None:
                spec["ipv6"] = normalise_address(p["ipv6_address"], "ipv6_address")
                if spec["ipv6"].version != 6:
                    raise ValidationError("%s is not an IPv6 address" % spec["ipv6"],
                                          field="ipv6_address")
            if p.get("mac_address") is not None:
                spec["mac"] = normalise_mac(p["mac_address"], "mac_address")
            if p.get("aliases") is not None:
                spec["aliases"] = [V.dns_name(a, "aliases[%d]" % i)
                                   for i, a in enumerate(p["aliases"])]
            if p.get("interface_name") is not None:
                spec["ifname"] = V.interface_name(p["interface_name"])
            if p.get("gw_priority") is not None:
                spec["gw_priority"] = V.integer(p["gw_priority"], "gw_priority")
        return self._run(self._endpoint_op, network, sandbox, state, spec)

    def _endpoint_op(self, network, sandbox, state, spec):
        net = self._network(network)
        sb = self._sandbox(sandbox)
        ep = self._endpoint(net.id, sb.id) if (net and sb) else None
        if state == "absent":
            if ep is None:
                return Result(data={"endpoint": None})
            result = Result(changed=True, actions=["detach %s from %s" % (sandbox, network)],
                            diff={"before": shape.endpoint(ep, net, sb), "after": {}},
                            data={"endpoint": None})
            if not self.check_mode:
                result.warnings.extend(self._detach(net, sb, ep))
                self._sync_dns_safely(result, sb)
            return result
        if net is None:
            if self.check_mode:
                # an earlier task of the same play would create it: predict the attach
                return Result(changed=True, actions=[
                    "attach %s to %s (network not created yet)" % (sandbox, network)],
                    diff={"before": {}, "after": {"network": network, "sandbox": sandbox}},
                    data={"endpoint": None})
            raise NotFoundError("network %s does not exist" % network, field="network")
        if ep is None:
            return self._create_endpoint(net, sb, sandbox, spec)
        return self._update_endpoint(net, sb, ep, spec)

    def _check_join_allowed(self, net, sb):
        if sb is None:
            return
        others = [e for e in self._endpoints(sandbox_id=sb.id) if e.network_id != net.id]
        if not others:
            if net.driver == "host" and sb.mode != "host":
                raise ConflictError("sandbox %s has its own namespace; a sandbox on network "
                                    "host must be created by joining host first"
                                    % sb.name, field="sandbox")
            return
        other_nets = [self._network_by_id(e.network_id) for e in others]
        exclusive = ("host", "null")
        if net.driver in exclusive or any(n.driver in exclusive for n in other_nets):
            raise ConflictError("sandbox %s is attached to %s; a sandbox on network host or "
                                "none cannot join other networks"
                                % (sb.name, ", ".join(n.name for n in other_nets)),
                                field="network")

    def _used_ifnames(self, sb, exclude_id=None):
        return {e.ifname for e in self._endpoints(sandbox_id=sb.id)
                if e.ifname and e.id != exclude_id}

    def _next_ifname(self, used):
        n = 0
        while "eth%d" % n in used:
            n += 1
        return "eth%d" % n

    def _allocators(self, net):
        """(pools, one AddressAllocator per pool) of ``net``, asking the store about
        single addresses (an attach reads a few rows, not every allocation)."""
        lookup = AllocationLookup(
            lambda address: self.store.is_allocated(net.id, address),
            lambda: list(self.store.allocations(net.id)))
        pools = [PoolConfig.from_dict(p) for p in net.pools]
        return pools, [AddressAllocator(pool, lookup, net.ipam_last.get(str(pool.subnet)))
                       for pool in pools]

    def _assign_addresses(self, net, ep, spec=None, keep=False, persist=True):
        """Give ``ep`` its addresses in ``net``: static ones reserved, others allocated
        walking forward from the last allocation. Persists the allocations unless in
        check mode. ``keep``: try to keep the endpoint's current addresses (rebuild)."""
        spec = spec or {}
        if not get_driver(net.driver).uses_ipam:
            return
        pools, allocs = self._allocators(net)
        families = [4] + ([6] if net.enable_ipv6 else [])
        for family in families:
            key = "ipv%d" % family
            field = "ipv%d_address" % family
            fam_allocs = [a for a, p in zip(allocs, pools) if p.version == family]
            if not fam_allocs:
                if key in spec:
                    raise ValidationError("network %s has no IPv%d subnet" % (net.name, family),
                                          field=field)
                continue
            address = None
            static = key in spec or (keep and ep.static.get(key))
            wanted = spec.get(key)
            if wanted is None and keep and getattr(ep, key):
                wanted = ipaddress.ip_interface(getattr(ep, key)).ip
            if wanted is not None:
                pool = pool_containing(pools, wanted)
                target = fam_allocs[0] if pool is None else allocs[pools.index(pool)]
                try:
                    address = target.reserve(wanted, field)
                except CnmError:
                    if key in spec or (keep and ep.static.get(key)):
                        raise
                    address = None  # kept address no longer fits: take a new one
            if address is None:
                last_error = None
                for alloc in fam_allocs:
                    try:
                        address = alloc.allocate()
                        pool = alloc.pool
                        net.ipam_last[str(pool.subnet)] = str(address)
                        break
                    except CnmError as exc:
                        last_error = exc
                if address is None:
                    raise last_error
            pool = pool_containing(pools, address)
            setattr(ep, key, "%s/%d" % (address, pool.subnet.prefixlen))
            ep.static[key] = bool(static)
            if persist and not self.check_mode:
                self.store.allocate(net.id, str(address), ep.id)

    def _create_endpoint(self, net, sb, sandbox_name, spec):
        self._check_join_allowed(net, sb)
        driver = get_driver(net.driver)
        new_sandbox = sb is None
        if new_sandbox:
            sb = Sandbox(id=new_id(), name=sandbox_name, netns_path=self._netns_path(
                sandbox_name), hostname=sandbox_name, created=now_rfc3339(), implicit=True,
                mode="host" if net.driver == "host" else "own")
            self._check_netns_free(sb)
        ep = Endpoint(id=new_id(), network_id=net.id, sandbox_id=sb.id,
                      network_name=net.name, sandbox_name=sb.name, created=now_rfc3339(),
                      aliases=spec.get("aliases", []), gw_priority=spec.get("gw_priority", 0))
        if driver.has_interface:
            used = self._used_ifnames(sb)
            if spec.get("ifname"):
                if spec["ifname"] in used or (not new_sandbox and namespace.is_netns(
                        sb.netns_path) and self.netlink.sandbox(sb.netns_path).index(
                        spec["ifname"]) is not None):
                    raise ConflictError("interface %s is already used in sandbox %s"
                                        % (spec["ifname"], sb.name), field="interface_name")
                ep.ifname = spec["ifname"]
            else:
                ep.ifname = self._next_ifname(used)
            if net.driver == "bridge":
                ep.host_ifname = C.HOST_VETH_PREFIX + ep.id[:8]
        elif spec.get("ifname") or spec.get("ipv4") or spec.get("ipv6") or spec.get("mac"):
            keys = {"interface_name": "ifname", "ipv4_address": "ipv4",
                    "ipv6_address": "ipv6", "mac_address": "mac"}
            bad = [option for option, key in keys.items() if spec.get(key)]
            raise ValidationError("is not supported on network %s (driver %s has no "
                                  "interface)" % (net.name, net.driver), field=bad[0])
        # validate the addresses before anything is made (a dry run on a copy)
        self._assign_addresses(dataclasses.replace(net, ipam_last=dict(net.ipam_last)),
                               dataclasses.replace(ep, static={}), spec, persist=False)
        # then record them as intent (outside check mode) and act
        undo = Undo()
        try:
            if not self.check_mode:
                if new_sandbox:
                    self._create_sandbox(sb, undo)
                ep.state = CREATING
                self._save_endpoint(ep)
                undo.push("forget endpoint", self.store.delete, "endpoints", ep.id)
                undo.push("release addresses", self.store.release, net.id, None, ep.id)
            self._assign_addresses(net, ep, spec)
            if driver.has_interface:
                if spec.get("mac"):
                    ep.mac = spec["mac"]
                    ep.static["mac"] = True
                elif ep.ipv4:
                    ep.mac = mac_from_ip(ipaddress.ip_interface(ep.ipv4).ip)
                else:
                    ep.mac = generate_mac()
            after = shape.endpoint(ep, net, sb)
            result = Result(changed=True, diff={"before": {}, "after": after},
                            actions=(["create sandbox %s" % sb.name] if new_sandbox else [])
                            + ["attach %s to %s (%s)" % (sb.name, net.name, ep.ipv4 or
                                                         ep.ipv6 or net.driver)],
                            data={"endpoint": after})
            if self.check_mode:
                return result
            self._save_endpoint(ep)
            self._save_network(net)  # ipam_last
            checkpoint("endpoint-intent-recorded")
            if not namespace.is_netns(sb.netns_path):
                self._repair_sandbox(sb)
            driver.setup_endpoint(net, sb, ep, self.netlink, fresh=True)
            undo.push("remove interface", driver.teardown_endpoint, net, sb, ep, self.netlink)
            checkpoint("endpoint-interface-made")
            self._sync_routes(sb, fresh=new_sandbox)
            ep.state = READY
            self._save_endpoint(ep)
        except CnmError as exc:
            errors = undo.run()
            if errors:
                exc.message += " (undo also failed: %s)" % "; ".join(errors)
            raise
        except BaseException:
            undo.run()
            raise
        self._sync_dns_safely(result, sb)
        return result

    def _update_endpoint(self, net, sb, ep, spec):
        driver = get_driver(net.driver)
        diff = DifferenceTracker()
        cur_v4 = ipaddress.ip_interface(ep.ipv4).ip if ep.ipv4 else None
        cur_v6 = ipaddress.ip_interface(ep.ipv6).ip if ep.ipv6 else None
        readdress = {}
        if "ipv4" in spec and spec["ipv4"] != cur_v4:
            diff.add("ipv4_address", str(cur_v4) if cur_v4 else None, str(spec["ipv4"]))
            readdress["ipv4"] = spec["ipv4"]
        if "ipv6" in spec and spec["ipv6"] != cur_v6:
            diff.add("ipv6_address", str(cur_v6) if cur_v6 else None, str(spec["ipv6"]))
            readdress["ipv6"] = spec["ipv6"]
        if "mac" in spec and spec["mac"] != ep.mac:
            diff.add("mac_address", ep.mac, spec["mac"])
        if "aliases" in spec and list(spec["aliases"]) != list(ep.aliases):
            diff.add("aliases", list(ep.aliases), list(spec["aliases"]))
        if "gw_priority" in spec and spec["gw_priority"] != ep.gw_priority:
            diff.add("gw_priority", ep.gw_priority, spec["gw_priority"])
        if "ifname" in spec and spec["ifname"] != ep.ifname:
            if spec["ifname"] in self._used_ifnames(sb, exclude_id=ep.id):
                raise ConflictError("interface %s is already used in sandbox %s"
                                    % (spec["ifname"], sb.name), field="interface_name")
            diff.add("interface_name", ep.ifname, spec["ifname"])
        # validate new addresses before anything changes
        if readdress:
            pools, allocs = self._allocators(net)
            for key, address in readdress.items():
                pool = pool_containing(pools, address)
                fam = [a for a, p in zip(allocs, pools) if p.version == address.version]
                target = allocs[pools.index(pool)] if pool else (fam[0] if fam else None)
                if target is None:
                    raise ValidationError("network %s has no IPv%d subnet"
                                          % (net.name, address.version),
                                          field="%s_address" % key)
                target.reserve(address, "%s_address" % key)
        # drift
        drift = []
        sandbox_missing = not namespace.is_netns(sb.netns_path)
        if sandbox_missing:
            drift.append("namespace %s is missing" % sb.netns_path)
        else:
            drift += driver.endpoint_drift(net, sb, ep, self.netlink)
            drift += self._route_drift(sb)
        if net.driver == "bridge" and not sandbox_missing:
            bridge_drift = driver.network_drift(net, self.netlink)
            drift += bridge_drift
        result = Result(data={"endpoint": shape.endpoint(ep, net, sb)})
        if not diff and not drift:
            return result
        for d in drift:
            diff.add("kernel", d, "present")
        result.changed = True
        result.diff = diff.as_diff()
        result.actions = diff.describe()
        if self.check_mode:
            return result
        if "ifname" in spec and spec["ifname"] != ep.ifname and not sandbox_missing:
            driver.teardown_endpoint(net, sb, ep, self.netlink)
            ep.ifname = spec["ifname"]
        old_ports = None
        if readdress and ep.ports and net.driver == "bridge":
            old_ports = [PortMapping.from_dict(p) for p in ep.ports]
        for key, address in readdress.items():
            old = getattr(ep, key)
            if old:
                self.store.release(net.id, str(ipaddress.ip_interface(old).ip))
            # published ports follow the endpoint to its new address
            ep.ports = [dict(p, container_ip=str(address))
                        if p.get("family") == address.version else p for p in ep.ports]
            pools = [PoolConfig.from_dict(p) for p in net.pools]
            pool = pool_containing(pools, address)
            setattr(ep, key, "%s/%d" % (address, pool.subnet.prefixlen))
            ep.static[key] = True
            self.store.allocate(net.id, str(address), ep.id)
            if key == "ipv4" and not ep.static.get("mac") and "mac" not in spec:
                ep.mac = mac_from_ip(address)
        if "mac" in spec:
            ep.mac = spec["mac"]
            ep.static["mac"] = True
        if "aliases" in spec:
            ep.aliases = list(spec["aliases"])
        if "gw_priority" in spec:
            ep.gw_priority = spec["gw_priority"]
        self._save_endpoint(ep)
        if sandbox_missing:
            self._repair_sandbox(sb)
        if net.driver == "bridge":
            driver.setup_network(net, self.netlink)
        driver.setup_endpoint(net, sb, ep, self.netlink)
        self._sync_routes(sb)
        if old_ports is not None:
            self._sync_ports(net, old_ports, [PortMapping.from_dict(p) for p in ep.ports])
        self._sync_dns_safely(result, sb)
        result.data["endpoint"] = shape.endpoint(ep, net, sb)
        return result

    def _detach(self, net, sb, ep):
        """Remove endpoint ``ep``; an implicit sandbox left empty goes with it."""
        if sb is not None and sb.implicit and not [
                e for e in self._endpoints(sandbox_id=sb.id) if e.id != ep.id]:
            return self._remove_sandbox(sb)
        errors = self._drop_endpoint(net, sb, ep, best_effort=True)
        if sb is not None:
            errors += self._after_leave(sb)
        return errors

    def _drop_endpoint(self, net, sb, ep, best_effort=False, interfaces=True):
        """Remove ``ep``'s interfaces (unless ``interfaces`` is False because its
        namespace goes away with them), rules, addresses and row. Returns errors."""
        errors = []
        if interfaces and net is not None and sb is not None:
            try:
                errors += get_driver(net.driver).teardown_endpoint(net, sb, ep, self.netlink)
            except Exception as exc:
                errors.append(str(exc))
        old_ports = None
        if net is not None and ep.ports and net.driver == "bridge":
            old_ports = [PortMapping.from_dict(p) for p in ep.ports]
        self.store.release(ep.network_id, owner=ep.id)
        self.store.delete("endpoints", ep.id)
        if old_ports is not None:
            try:
                self._sync_ports(net, old_ports, [])
            except CnmError as exc:
                errors.append(str(exc))
        if errors and not best_effort:
            raise CnmError("; ".join(errors))
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

    # ------------------------------------------------------------------------------
    # default routes (gw_priority)
    # ------------------------------------------------------------------------------
    def _wanted_gateways(self, sb):
        """{family: (gateway, ifname)} the sandbox's default routes should use.

        The endpoint with the highest gw_priority wins, ties go to the oldest endpoint;
        internal networks and interface-less drivers never provide a gateway.
        """
        wanted = {}
        eps = sorted(self._endpoints(sandbox_id=sb.id),
                     key=lambda e: (-e.gw_priority, e.created))
        for ep in eps:
            if ep.state != READY and ep.state != CREATING:
                continue
            net = self._network_by_id(ep.network_id)
            if net is None or net.internal or not get_driver(net.driver).has_interface:
                continue
            for family in (4, 6):
                if family in wanted or not getattr(ep, "ipv%d" % family):
                    continue
                gw = gateway_for(net, family)
                if gw:
                    wanted[family] = (gw, ep.ifname)
        return wanted

    def _route_families(self, sb, wanted):
        """IPv4 always; IPv6 only when an endpoint of the sandbox has IPv6 (a v6 route
        via a removed interface disappears with it)."""
        if 6 in wanted or any(e.ipv6 for e in self._endpoints(sandbox_id=sb.id)):
            return (4, 6)
        return (4,)

    def _route_drift(self, sb):
        if sb.mode != "own":
            return []
        handle = self.netlink.sandbox(sb.netns_path)
        drift = []
        wanted = self._wanted_gateways(sb)
        for family in self._route_families(sb, wanted):
            fam = 2 if family == 4 else 10
            gw, oif = handle.default_gateway(fam)
            want = wanted.get(family)
            if want is None:
                if gw and family == 4:
                    drift.append("unexpected default route via %s" % gw)
                continue
            idx = handle.index(want[1])
            if gw != want[0] or oif != idx:
                drift.append("default route via %s dev %s is missing" % want)
        return drift

    def _sync_routes(self, sb, fresh=False):
        """Make the sandbox's default routes match ``_wanted_gateways``.

        ``fresh``: the namespace was made by this operation and has no route yet.
        """
        if sb.mode != "own":
            return
        handle = self.netlink.sandbox(sb.netns_path)
        wanted = self._wanted_gateways(sb)
        if fresh:
            for family, (gw, ifname) in wanted.items():
                handle.replace_default_route(family, gw, handle.index(ifname))
            return
        for family in self._route_families(sb, wanted):
            fam = 2 if family == 4 else 10
            want = wanted.get(family)
            gw, oif = handle.default_gateway(fam)
            if want is None:
                if gw:
                    handle.delete_default_route(family)
                continue
            idx = handle.index(want[1])
            if idx is not None and (gw != want[0] or oif != idx):
                handle.replace_default_route(family, want[0], idx)

    # ------------------------------------------------------------------------------
    # DNS
    # ------------------------------------------------------------------------------
    def _sync_dns_safely(self, result, *sandboxes, full=False):
        """DNS follows the network change; a DNS failure is a warning, not a failed
        network operation (the links and addresses are in place and stay)."""
        try:
            self._sync_dns(sandboxes, full=full)
        except CnmError as exc:
            result.warnings.append("DNS: %s" % exc)

    # ------------------------------------------------------------------------------
    # info
    # ------------------------------------------------------------------------------
    def network_info(self, params):
        """cnm_network_info: networks by ``name`` or ``filters`` (driver, label, name).

        Never fails for a missing name: ``exists`` is False.
        """
        self._read_only = True  # never creates the store
        return self._run(self._network_info, params)

    def _network_info(self, params):
        nets = [Network.from_doc(d) for d in self.store.all("networks")]
        name = params.get("name")
        filters = params.get("filters") or {}
        if name:
            nets = [n for n in nets if n.name == name or n.id == name or
                    (len(name) >= 12 and n.id.startswith(name))]
        for key, value in filters.items():
            values = value if isinstance(value, list) else [value]
            if key == "driver":
                nets = [n for n in nets if n.driver in values]
            elif key == "name":
                nets = [n for n in nets if any(v in n.name for v in values)]
            elif key == "label":
                def has(n, spec):
                    k, dummy, v = str(spec).partition("=")
                    return k in n.labels and (not v or n.labels[k] == v)
                nets = [n for n in nets if all(has(n, v) for v in values)]
            else:
                raise ValidationError("unknown filter %r (driver, label, name)" % key,
                                      field="filters.%s" % key)
        out = [self._inspect_network(n) for n in nets]
        return Result(data={"exists": bool(out), "networks": out})

    def sandbox_info(self, params):
        """cnm_sandbox_info: sandboxes (all, or ``name``) with endpoints and DNS config."""
        self._read_only = True
        return self._run(self._sandbox_info, params)

    def _sandbox_info(self, params):
        sbs = [Sandbox.from_doc(d) for d in self.store.all("sandboxes")]
        if params.get("name"):
            sbs = [s for s in sbs if s.name == params["name"]]
        out = [self._inspect_sandbox(s) for s in sbs]
        return Result(data={"exists": bool(out), "sandboxes": out})

    # ------------------------------------------------------------------------------
    # DNS (cnm_dns)
    # ------------------------------------------------------------------------------
    def dns(self, params):
        """cnm_dns: the host resolver (``resolver``, ``upstreams``, ``ttl``) and/or one
        sandbox's name settings (``nameservers``, ``search``, ``options``, ``hostname``,
        ``domainname``, ``extra_hosts``). Validates everything before writing anything;
        the diff holds the settings and the files before/after."""
        from .dns import files
        resolver = {}
        if params.get("resolver") is not None:
            if params["resolver"] not in ("started", "stopped"):
                raise ValidationError("must be started or stopped", field="resolver")
            resolver["state"] = params["resolver"]
        if params.get("upstreams") is not None:
            resolver["upstreams"] = files.validate_upstreams(params["upstreams"])
        if params.get("ttl") is not None:
            resolver["ttl"] = V.integer(params["ttl"], "ttl", 0, 2147483647)
        sandbox = None
        settings = {}
        if params.get("sandbox") is not None:
            sandbox = V.object_name(params["sandbox"], "sandbox", "sandbox")
            if params.get("nameservers") is not None:
                settings["nameservers"] = files.validate_nameservers(params["nameservers"])
            if params.get("search") is not None:
                settings["search"] = files.validate_search(params["search"])
            if params.get("options") is not None:
                settings["options"] = files.validate_options(params["options"])
            for key in ("hostname", "domainname"):
                if params.get(key) is not None:
                    settings[key] = files.validate_name(params[key], key)
            if params.get("extra_hosts") is not None:
                settings["extra_hosts"] = [list(e) for e in
                                           files.parse_extra_hosts(params["extra_hosts"])]
            if params.get("sandbox_upstreams") is not None:
                settings["upstreams"] = files.validate_upstreams(
                    params["sandbox_upstreams"], "sandbox_upstreams")
        else:
            for key in ("nameservers", "search", "options", "hostname", "domainname",
                        "extra_hosts", "sandbox_upstreams"):
                if params.get(key) is not None:
                    raise ValidationError("needs sandbox", field=key)
        return self._run(self._dns_op, resolver, sandbox, settings)

    def _dns_op(self, resolver, sandbox, settings):
        from . import dns_sync
        from .dns import service
        diff = DifferenceTracker()
        current = dns_sync.resolver_settings(self.store)
        wanted = dict(current, **resolver)
        for key in sorted(resolver):
            if current.get(key) != wanted[key]:
                diff.add("resolver.%s" % key, current.get(key), wanted[key])
        status = service.resolver_status(self.run_dir)
        needed = dns_sync.needed(self.store)
        if wanted.get("state", "started") == "started" and needed and not status["running"]:
            diff.add("resolver.running", False, True)
        if wanted.get("state") == "stopped" and status["running"]:
            diff.add("resolver.running", True, False)
        sb = None
        files_before, files_after = {}, {}
        if sandbox is not None:
            sb = self._sandbox(sandbox)
            if sb is None and self.check_mode:
                return Result(changed=True, actions=["set DNS of %s (sandbox not created "
                                                     "yet)" % sandbox])
            if sb is None:
                raise NotFoundError("sandbox %s does not exist" % sandbox, field="sandbox")
            want_dns = dict(sb.dns, **settings)
            for key in sorted(settings):
                if sb.dns.get(key) != want_dns[key]:
                    diff.add("sandbox.%s" % key, sb.dns.get(key), want_dns[key])
            if sb.mode == "own":
                rendered = dns_sync.render_files(self, dataclasses.replace(sb, dns=want_dns))
                for directory in dns_sync.file_dirs(self, sb):
                    for name, content in sorted(rendered.items()):
                        path = os.path.join(directory, name)
                        try:
                            with open(path) as fh:
                                old = fh.read()
                        except OSError:
                            old = None
                        if old != content:
                            files_before[path] = old
                            files_after[path] = content
        result = Result(changed=bool(diff or files_after))
        result.actions = diff.describe() + ["write %s" % p for p in sorted(files_after)]
        result.diff = diff.as_diff()
        result.diff["before"].update({"file:" + p: c for p, c in files_before.items()})
        result.diff["after"].update({"file:" + p: c for p, c in files_after.items()})
        if result.changed and not self.check_mode:
            if resolver:
                self.store.set_setting("resolver", wanted)
            if sb is not None and settings:
                sb.dns = dict(sb.dns, **settings)
                self._save_sandbox(sb)
            if wanted.get("state") == "stopped":
                service.stop_resolver(self.run_dir)
            self._sync_dns(tuple(s for s in (sb,) if s is not None))
        status = service.resolver_status(self.run_dir)
        result.data["resolver"] = dict(wanted, running=status["running"], pid=status["pid"])
        if sb is not None:
            sb = self._sandbox(sandbox)
            result.data["sandbox"] = {"name": sb.name, "dns": dict(sb.dns),
                                      "files": dns_sync.file_dirs(self, sb)}
        return result

    # ------------------------------------------------------------------------------
    # published ports (cnm_port_mapping)
    # ------------------------------------------------------------------------------
    def port_mapping(self, params):
        """cnm_port_mapping: publish (or withdraw) ports of a sandbox's endpoint.

        ``ports`` are validated first; host ports are chosen (ephemeral ones from
        ip_local_port_range, stable across runs) and checked against every other
        sandbox's mappings and host sockets before the firewall changes in one batch.
        Returns ``data['ports']`` in Docker's NetworkSettings.Ports shape.
        """
        from .ports.spec import parse_ports
        sandbox = V.object_name(params.get("sandbox"), "sandbox", "sandbox")
        network = params.get("network")
        if network is not None:
            network = V.object_name(network, "network", "network")
        state = params.get("state") or "present"
        requested = parse_ports(params.get("ports") or [])
        if state == "present" and params.get("ports") is None:
            raise ValidationError("is required with state=present", field="ports")
        return self._run(self._port_op, sandbox, network, state, requested,
                         bool(params.get("exclusive")))

    def _port_endpoint(self, sandbox, network):
        sb = self._sandbox(sandbox)
        if sb is None:
            raise NotFoundError("sandbox %s does not exist" % sandbox, field="sandbox")
        eps = self._endpoints(sandbox_id=sb.id)
        if network is not None:
            net = self._network(network)
            ep = self._endpoint(net.id, sb.id) if net else None
            if ep is None:
                raise NotFoundError("sandbox %s is not attached to network %s"
                                    % (sandbox, network), field="network")
            return sb, net, ep
        bridged = [(e, self._network_by_id(e.network_id)) for e in eps]
        bridged = [(e, n) for e, n in bridged if n and n.driver == "bridge"]
        if not bridged:
            raise ValidationError("sandbox %s has no endpoint on a bridge network to publish "
                                  "ports from" % sandbox, field="sandbox")
        if len(bridged) > 1:
            raise ValidationError("sandbox %s is on several bridge networks (%s): say which"
                                  % (sandbox, ", ".join(n.name for _e, n in bridged)),
                                  field="network")
        return sb, bridged[0][1], bridged[0][0]

    def _published(self, ep, requested):
        """(mapping, sandbox name) of every other endpoint that a mapping of
        ``requested`` could clash with: the holders of the host ports asked for (index
        lookups), or every published mapping when an ephemeral port must be chosen."""
        if any(r.ephemeral for r in requested):
            rows = self.store.published_ports()
        else:
            rows = self.store.port_holders(
                port for r in requested for port in range(r.host_start,
                                                          r.host_start + r.count))
        return [(PortMapping.from_dict(doc), name)
                for ep_id, dummy, name, docs in rows if ep_id != ep.id for doc in docs]

    def _port_op(self, sandbox, network, state, requested, exclusive):
        from .ports.allocator import allocate_ports
        from .ports.spec import to_docker_ports
        if self.check_mode and state == "present" and self._sandbox(sandbox) is None:
            # an earlier task of the same play would create it: predict the change
            return Result(changed=True, actions=["publish ports of %s (sandbox not created "
                                                 "yet)" % sandbox], data={"ports": {}})
        if state == "absent" and self._sandbox(sandbox) is None:
            return Result(data={"ports": {}})
        sb, net, ep = self._port_endpoint(sandbox, network)
        if net.driver != "bridge":
            raise ValidationError("ports can only be published on bridge networks (network "
                                  "%s uses %s)" % (net.name, net.driver), field="network")
        current = sorted(PortMapping.from_dict(d) for d in ep.ports)
        if state == "present":
            elsewhere = self._published(ep, requested)
            keys = {(r.protocol, port) for r in requested
                    for port in range(r.container_start, r.container_end + 1)}
            # without exclusive, mappings not named again stay, and the allocator must
            # see them as taken (by this very sandbox)
            kept = [] if exclusive else [m for m in current
                                         if (m.protocol, m.container_port) not in keys]
            mapped = allocate_ports(
                requested, _plain_ip(ep.ipv4), _plain_ip(ep.ipv6),
                net.options.get(C.OPT_HOST_BINDING_IPV4),
                elsewhere + [(m, sb.name) for m in kept],
                current, internal=net.internal)
            # mappings of a re-named container port stay too when they bind another
            # address (80->8080 and 127.0.0.1:8081->80 from two tasks both live)
            if not exclusive:
                fresh = {(m.protocol, m.container_port, m.host_ip, m.family) for m in mapped}
                kept += [m for m in current
                         if (m.protocol, m.container_port) in keys
                         and (m.protocol, m.container_port, m.host_ip, m.family) not in fresh
                         and not any(_same_host_port(m, n) for n in mapped)]
            wanted = sorted(set(mapped) | set(kept))
        else:
            if not requested:
                wanted = []
            else:
                wanted = [m for m in current if not any(_port_matches(r, m) for r in requested)]
        wanted = sorted(wanted)
        result = Result(changed=wanted != current)
        before, after = to_docker_ports(current), to_docker_ports(wanted)
        result.data["ports"] = after
        if not result.changed:
            return result
        result.diff = {"before": {"ports": before}, "after": {"ports": after}}
        added = sorted(set(wanted) - set(current))
        removed = sorted(set(current) - set(wanted))
        result.actions = (["publish %s" % _describe_mapping(m) for m in added]
                          + ["withdraw %s" % _describe_mapping(m) for m in removed])
        if self.check_mode:
            return result
        ep.ports = [m.to_dict() for m in wanted]
        self._save_endpoint(ep)
        try:
            self._sync_ports(net, current, wanted)
        except CnmError:
            ep.ports = [m.to_dict() for m in current]  # the batch failed whole: undo
            self._save_endpoint(ep)
            raise
        return result

    # ------------------------------------------------------------------------------
    # firewall reload (after `nft flush ruleset`, a firewalld reload, a reboot)
    # ------------------------------------------------------------------------------
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
        nets = [n for n in nets if n.driver == "bridge" and n.state == READY]
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
            net.firewall = _rules_base(rule)
            self._save_network(net)
        return result


def _plain_ip(cidr):
    return str(ipaddress.ip_interface(cidr).ip) if cidr else ""


def _port_matches(req, mapping):
    """Whether a requested (absent) entry names ``mapping``."""
    if req.protocol != mapping.protocol:
        return False
    if not req.container_start <= mapping.container_port <= req.container_end:
        return False
    if req.host_start and not req.host_start <= mapping.host_port <= req.host_end:
        return False
    if req.host_ip is not None and str(req.host_ip) not in ("0.0.0.0", "::") and \
            str(req.host_ip) != mapping.host_ip:
        return False
    return True


def _describe_mapping(mapping):
    return "%s:%s -> %s/%s" % (mapping.host_ip or "*", mapping.host_port,
                               mapping.container_port, mapping.protocol)


def _rules_base(rules):
    """What the store keeps of a network's applied rules: everything but the ports."""
    if rules is None:
        return {}
    return dataclasses.replace(rules, ports=()).to_dict()


def _same_host_port(a, b):
    """Whether two mappings claim the same host port (an all-address binding overlaps
    any address of its family)."""
    return (a.protocol == b.protocol and a.host_port == b.host_port and a.family == b.family
            and (not a.host_ip or not b.host_ip or a.host_ip == b.host_ip))
