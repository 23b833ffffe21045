"""Published ports: ``cnm_port_mapping`` publishes or withdraws a sandbox's ports."""
import ipaddress

from .. import constants as C
from .. import validation as V
from ..errors import CnmError, NotFoundError, ValidationError
from ..firewall.model import PortMapping
from ..model import is_bridged
from .firewall_sync import FirewallSync
from .result import Result
from .undo import checkpoint


class PortMappings(FirewallSync):
    """The port mapping operation."""

    def port_mapping(self, params):
        """cnm_port_mapping: publish (or withdraw) ports of a sandbox's endpoint.

        ``ports`` are validated first; host ports are chosen (ephemeral ones from
        ip_local_port_range, stable across runs) and checked against every other
        sandbox's mappings and host sockets before the firewall changes in one batch.
        Returns ``data['ports']`` in Docker's NetworkSettings.Ports shape.
        """
        from ..ports.spec import parse_ports
        sandbox = V.object_name(params.get("sandbox"), "sandbox", "sandbox")
        network = params.get("network")
        if network is not None:
            network = V.object_name(network, "network", "network")
        state = params.get("state") or "present"
        requested = parse_ports(params.get("ports") or [])
        if state == "present" and params.get("ports") is None:
            raise ValidationError("is required with state=present", field="ports")
        if state == "present" and requested and self.firewall_backend == "none":
            raise ValidationError("none publishes nothing: published ports are DNAT rules "
                                  "(use nftables, iptables or auto)",
                                  field="firewall_backend")
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
        bridged = [(e, n) for e, n in bridged if n and is_bridged(n)]
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
        from ..ports.allocator import allocate_ports
        from ..ports.spec import to_docker_ports
        if self.check_mode and state == "present" and self._sandbox(sandbox) is None:
            # an earlier task of the same play would create it: predict the change
            return Result(changed=True, actions=["publish ports of %s (sandbox not created "
                                                 "yet)" % sandbox], data={"ports": {}})
        if state == "absent" and self._sandbox(sandbox) is None:
            return Result(data={"ports": {}})
        sb, net, ep = self._port_endpoint(sandbox, network)
        if not is_bridged(net):
            raise ValidationError("ports can only be published on bridge and overlay "
                                  "networks (network %s uses %s)" % (net.name, net.driver),
                                  field="network")
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
                kept += [m for m in current if (m.protocol, m.container_port) in keys and (
                    (m.protocol, m.container_port, m.host_ip, m.family) not in fresh) and (
                    not any(_same_host_port(m, n) for n in mapped))]
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
        result.actions = [*("publish %s" % _describe_mapping(m) for m in added),
                          *("withdraw %s" % _describe_mapping(m) for m in removed)]
        if self.check_mode:
            return result
        ep.ports = [m.to_dict() for m in wanted]
        with self.store.transaction():
            self._save_endpoint(ep)
            self._intend_ports(net, ep.id, current)
        checkpoint("publish-before-firewall" if added else "withdraw-before-firewall")
        try:
            self._sync_ports(net, current, wanted, ep.id)
        except CnmError:
            ep.ports = [m.to_dict() for m in current]  # the batch failed whole: undo
            self._save_endpoint(ep)
            self._ports_applied(net, ep.id)
            raise
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


def _same_host_port(a, b):
    """Whether two mappings claim the same host port (an all-address binding overlaps
    any address of its family)."""
    same_port = (a.protocol, a.host_port, a.family) == (b.protocol, b.host_port, b.family)
    return same_port and (not a.host_ip or not b.host_ip or a.host_ip == b.host_ip)
