"""Endpoints: ``cnm_endpoint`` joins a sandbox to a network, updates or removes the join."""
import dataclasses
import ipaddress

from .. import constants as C
from .. import inspect as shape
from .. import validation as V
from ..difference import DifferenceTracker
from ..drivers import get_driver
from ..errors import ConflictError, NotFoundError, ValidationError
from ..firewall.model import PortMapping
from ..ipam.allocator import pool_containing
from ..ipam.config import PoolConfig, normalise_address
from ..ipam.mac import generate_mac, mac_from_ip, normalise_mac
from ..model import CREATING, Endpoint, READY, Sandbox, is_bridged, new_id, now_rfc3339
from ..netns import namespace
from .detach import Detach
from .network_create import NetworkCreate
from .dns_sync import require_dnspython, uses_resolver
from .result import Result
from .undo import Undo, checkpoint


class Endpoints(Detach, NetworkCreate):
    """The endpoint operation: join (create), update in place, leave."""

    def endpoint(self, params):
        """cnm_endpoint: join sandbox ``params['sandbox']`` to ``params['network']``
        (creating the sandbox if missing) or remove that endpoint.

        Validates everything first; on failure undoes its own kernel work newest first
        and releases its addresses. Returns ``data['endpoint']``.
        """
        network, sandbox, state, spec = endpoint_spec(params)
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
                self._intend_dns(sb)
                result.warnings.extend(self._detach(net, sb, ep))
                checkpoint("detach-before-dns")
                self._sync_dns_safely(result, sb)
            return result
        if net is None and network == C.DEFAULT_BRIDGE_NETWORK and not self.check_mode:
            net, made = self._ensure_default_bridge()
            if made is not None:
                checkpoint("default-bridge-made")
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
        if sb.mode == "container":
            owner = self._sandbox_by_id(sb.shares)
            raise ConflictError("sandbox %s shares the network namespace of %s (network_mode "
                                "container:%s): attach %s instead"
                                % (sb.name, owner.name if owner else "a removed sandbox",
                                   owner.name if owner else sb.shares,
                                   owner.name if owner else "that sandbox"),
                                field="sandbox")
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

    def _check_mac_free(self, net, mac, exclude_id=None):
        """A static MAC must not be another endpoint's on the same network (two ports
        of one bridge with one MAC break forwarding). Raises ConflictError."""
        for other in self._endpoints(network_id=net.id):
            if other.mac == mac and other.id != exclude_id:
                raise ConflictError("%s is already the MAC of sandbox %s on network %s"
                                    % (mac, other.sandbox_name, net.name),
                                    field="mac_address")

    def _used_ifnames(self, sb, exclude_id=None):
        return {e.ifname for e in self._endpoints(sandbox_id=sb.id)
                if e.ifname and e.id != exclude_id}

    def _next_ifname(self, used):
        n = 0
        while "eth%d" % n in used:
            n += 1
        return "eth%d" % n

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
            if is_bridged(net):
                ep.host_ifname = C.HOST_VETH_PREFIX + ep.id[:8]
        elif spec.get("ifname") or spec.get("ipv4") or spec.get("ipv6") or spec.get("mac"):
            keys = {"interface_name": "ifname", "ipv4_address": "ipv4",
                    "ipv6_address": "ipv6", "mac_address": "mac"}
            bad = [option for option, key in keys.items() if spec.get(key)]
            raise ValidationError("is not supported on network %s (driver %s has no "
                                  "interface)" % (net.name, net.driver), field=bad[0])
        if spec.get("mac"):
            self._check_mac_free(net, spec["mac"])
        if spec.get("bandwidth"):
            _check_bandwidth(net, driver)
            ep.bandwidth = dict(spec["bandwidth"])
        if spec.get("aliases") and net.predefined:
            raise ValidationError(NO_ALIASES % net.name, field="aliases")
        if uses_resolver(net) and not self.check_mode:
            require_dnspython()  # before anything is made that would need the resolver
        overlay = net.driver == C.OVERLAY_DRIVER
        # validate the addresses before anything is made (a dry run on a copy)
        if overlay:
            self._overlay_check_static(net, spec)   # the cluster's IPAM decides the rest
        else:
            self._assign_addresses(dataclasses.replace(net, ipam_last=dict(net.ipam_last)),
                                   dataclasses.replace(ep, static={}), spec, persist=False)
        # then record them as intent (outside check mode) and act
        with Undo() as undo:  # a failure runs the undo steps, newest first
            if not self.check_mode:
                if new_sandbox:
                    self._create_sandbox(sb, undo)
                ep.state = CREATING
                self._save_endpoint(ep)
                undo.push("forget endpoint", self.store.delete, "endpoints", ep.id)
                undo.push("release addresses", self.store.release, net.id, None, ep.id)
            if not overlay:
                self._assign_addresses(net, ep, spec)
            elif not self.check_mode:
                self._overlay_assign(net, ep, spec, undo)
            if driver.has_interface:
                if spec.get("mac"):
                    ep.mac = spec["mac"]
                    ep.static["mac"] = True
                elif ep.ipv4:
                    ep.mac = mac_from_ip(ipaddress.ip_interface(ep.ipv4).ip)
                else:
                    ep.mac = generate_mac()
            after = shape.endpoint(ep, net, sb)
            actions = ["create sandbox %s" % sb.name] if new_sandbox else []
            actions.append("attach %s to %s (%s)" % (sb.name, net.name,
                                                     ep.ipv4 or ep.ipv6 or net.driver))
            result = Result(changed=True, diff={"before": {}, "after": after},
                            actions=actions, data={"endpoint": after})
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
            with self.store.transaction():
                self._save_endpoint(ep)
                self._intend_dns(sb)
            if overlay:
                self._overlay_publish(net, sb, ep)   # other hosts program it from this
        checkpoint("attach-before-dns")
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
            self._check_mac_free(net, spec["mac"], exclude_id=ep.id)
            diff.add("mac_address", ep.mac, spec["mac"])
        if "aliases" in spec and list(spec["aliases"]) != list(ep.aliases):
            if spec["aliases"] and net.predefined:
                raise ValidationError(NO_ALIASES % net.name, field="aliases")
            diff.add("aliases", list(ep.aliases), list(spec["aliases"]))
        if "bandwidth" in spec and spec["bandwidth"] != ep.bandwidth:
            if spec["bandwidth"]:
                _check_bandwidth(net, driver)
            diff.add("bandwidth", dict(ep.bandwidth), dict(spec["bandwidth"]))
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
        if readdress and net.driver == C.OVERLAY_DRIVER:
            raise ValidationError("the address of an endpoint on overlay network %s is the "
                                  "cluster's: detach and attach again to change it"
                                  % net.name, field="%s_address" % sorted(readdress)[0])
        # drift
        drift = []
        sandbox_missing = not namespace.is_netns(sb.netns_path)
        if sandbox_missing:
            drift.append("namespace %s is missing" % sb.netns_path)
        else:
            drift += driver.endpoint_drift(net, sb, ep, self.netlink)
            drift += self._route_drift(sb)
        if is_bridged(net) and not sandbox_missing:
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
        if readdress and ep.ports and is_bridged(net):
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
        if "bandwidth" in spec:
            ep.bandwidth = dict(spec["bandwidth"])
        with self.store.transaction():
            self._save_endpoint(ep)
            if old_ports is not None:
                self._intend_ports(net, ep.id, old_ports)
            self._intend_dns(sb)
        if sandbox_missing:
            self._repair_sandbox(sb)
        if is_bridged(net):
            driver.setup_network(net, self.netlink)
        driver.setup_endpoint(net, sb, ep, self.netlink)
        self._sync_routes(sb)
        if old_ports is not None:
            self._sync_ports(net, old_ports, [PortMapping.from_dict(p) for p in ep.ports],
                             ep.id)
        if net.driver == C.OVERLAY_DRIVER:
            self._overlay_publish(net, sb, ep)   # names or MAC may have changed
        self._sync_dns_safely(result, sb)
        result.data["endpoint"] = shape.endpoint(ep, net, sb)
        return result


GW_PRIORITY_MIN, GW_PRIORITY_MAX = -2 ** 31, 2 ** 31 - 1  # Docker's is a Go int too


def _check_bandwidth(net, driver):
    """Bandwidth limits shape the host side of a veth: bridge networks only."""
    if not driver.supports_bandwidth:
        raise ValidationError("is supported only on bridge networks (it shapes the host "
                              "side of the endpoint's veth); network %s uses driver %s"
                              % (net.name, net.driver), field="bandwidth")


NO_ALIASES = ("network-scoped aliases are supported only on user-defined networks, not on "
              "the predefined %s network (as in Docker)")


def endpoint_spec(params):
    """``(network, sandbox, state, spec)`` from ``cnm_endpoint``'s parameters, validated
    and normalised before any side effect; ``spec`` holds only the options given.
    Raises ValidationError naming the field."""
    p = dict(params)
    network = V.object_name(p.get("network") or C.DEFAULT_BRIDGE_NETWORK, "network",
                            "network")
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
            if spec["ifname"] == "lo":
                raise ValidationError("lo is the sandbox's loopback interface",
                                      field="interface_name")
        if p.get("gw_priority") is not None:
            spec["gw_priority"] = V.integer(p["gw_priority"], "gw_priority",
                                            GW_PRIORITY_MIN, GW_PRIORITY_MAX)
        if p.get("bandwidth") is not None:
            spec["bandwidth"] = V.bandwidth(p["bandwidth"])
    return network, sandbox, state, spec
