"""A whole host's desired state (``cnm_topology``'s parameters) as checked, ordered items.

Pure: no kernel, no store. Called by ``topology.py`` before the store is opened. It
checks the topology's own structure (lists, dicts, unknown keys, duplicate names) and
what holds between its objects (an endpoint's static address inside the subnets its
network names, one address or MAC per network, one host port per binding, the owner of
``network_mode: container:<name>`` named first); each object's own options are checked
by the single-object verbs themselves (``topology.py`` captures their validated
arguments). Every error names the object and the field:
``sandboxes[web].endpoints[0].ipv4_address``.
"""
import dataclasses
import ipaddress

from .. import constants as C
from .. import validation as V
from ..errors import ValidationError

NETWORK_KEYS = ("name", "driver", "ipam", "enable_ipv6", "enable_ipv4", "attachable",
                "internal", "labels", "driver_options", "force")
SANDBOX_KEYS = ("name", "hostname", "network_mode", "sysctls", "endpoints", "dns")
ENDPOINT_KEYS = ("network", "ipv4_address", "ipv6_address", "mac_address", "aliases",
                 "interface_name", "gw_priority", "bandwidth", "ports")
SANDBOX_DNS_KEYS = ("nameservers", "sandbox_upstreams", "search", "options", "hostname",
                    "domainname", "extra_hosts")
HOST_DNS_KEYS = ("resolver", "upstreams", "ttl")
TOP_KEYS = ("networks", "sandboxes", "dns", "purge")
# the networks every host has without being named (never purged)
BUILTIN_NETWORKS = tuple(C.PREDEFINED_NETWORKS) + (C.DEFAULT_BRIDGE_NETWORK,)


@dataclasses.dataclass
class EndpointItem:
    """One endpoint of a sandbox: ``params`` for the endpoint verb, ``ports`` (None: not
    managed) for the port verb."""
    path: str
    network: str
    params: dict
    ports: object = None


@dataclasses.dataclass
class SandboxItem:
    """One sandbox: ``params`` for the sandbox verb, its endpoints, its DNS settings
    (None: not managed) for the DNS verb."""
    path: str
    name: str
    params: dict
    endpoints: list
    dns: object = None
    owner: object = None


@dataclasses.dataclass
class TopologySpec:
    """The topology, in the order it is applied."""
    networks: list  # (path, name, params)
    sandboxes: list  # SandboxItem, owners before the sandboxes sharing their namespace
    dns: object  # params of the host resolver settings, or None
    purge: bool


def _dict(value, field, keys):
    if not isinstance(value, dict):
        raise ValidationError("must be a dict", field=field)
    unknown = sorted(str(k) for k in value if k not in keys)
    if unknown:
        raise ValidationError("unknown key(s) %s (allowed: %s)"
                              % (", ".join(unknown), ", ".join(keys)), field=field)
    return {k: v for k, v in value.items() if v is not None}


def _list(value, field):
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise ValidationError("must be a list", field=field)
    return list(value)


def _item_path(kind, index, name):
    """``networks[app]`` for a valid name, ``networks[0]`` otherwise."""
    try:
        return "%s[%s]" % (kind, V.object_name(name, "name", kind))
    except ValidationError:
        return "%s[%d]" % (kind, index)


def topology_spec(params):
    """A TopologySpec from ``cnm_topology``'s parameters, structure and cross-object
    rules checked. Called before anything is touched; raises ValidationError naming
    the object and the field."""
    params = {k: v for k, v in params.items() if k in TOP_KEYS}
    purge = V.boolean(params.get("purge") or False, "purge")
    networks, seen = [], set()
    for i, raw in enumerate(_list(params.get("networks"), "networks")):
        path = _item_path("networks", i, raw.get("name") if isinstance(raw, dict) else None)
        item = _dict(raw, path, NETWORK_KEYS)
        name = V.object_name(item.get("name"), path + ".name", "network")
        if name in seen:
            raise ValidationError("network %s is named twice" % name, field=path + ".name")
        seen.add(name)
        networks.append((path, name, dict(item, state="present")))
    sandboxes, names = [], set()
    for i, raw in enumerate(_list(params.get("sandboxes"), "sandboxes")):
        path = _item_path("sandboxes", i, raw.get("name") if isinstance(raw, dict) else None)
        item = _dict(raw, path, SANDBOX_KEYS)
        name = V.object_name(item.get("name"), path + ".name", "sandbox")
        if name in names:
            raise ValidationError("sandbox %s is named twice" % name, field=path + ".name")
        names.add(name)
        sandboxes.append(_sandbox_item(path, name, item))
    dns = None
    if params.get("dns") is not None:
        dns = _dict(params["dns"], "dns", HOST_DNS_KEYS)
    spec = TopologySpec(networks=networks, sandboxes=_owners_first(sandboxes, purge),
                        dns=dns, purge=purge)
    _check_addresses(spec)
    _check_host_ports(spec)
    return spec


def _sandbox_item(path, name, item):
    endpoints, on = [], {}
    for j, raw in enumerate(_list(item.get("endpoints"), path + ".endpoints")):
        where = "%s.endpoints[%d]" % (path, j)
        ep = _dict(raw, where, ENDPOINT_KEYS)
        network = V.object_name(ep.get("network") or C.DEFAULT_BRIDGE_NETWORK,
                                where + ".network", "network")
        if network in on:
            raise ValidationError("sandbox %s is joined to network %s twice (also %s)"
                                  % (name, network, on[network]), field=where + ".network")
        on[network] = where
        ports = ep.pop("ports", None)
        if ports is not None:
            ports = _list(ports, where + ".ports")
        endpoints.append(EndpointItem(path=where, network=network, ports=ports,
                                      params=dict(ep, network=network, sandbox=name,
                                                  state="present")))
    dns = None
    if item.get("dns") is not None:
        dns = dict(_dict(item["dns"], path + ".dns", SANDBOX_DNS_KEYS), sandbox=name)
    params = {k: item.get(k) for k in ("hostname", "network_mode", "sysctls")}
    params.update(name=name, state="present")
    owner = None
    mode = item.get("network_mode")
    if isinstance(mode, str) and mode.startswith("container:"):
        owner = mode[len("container:"):]
    return SandboxItem(path=path, name=name, params=params, endpoints=endpoints, dns=dns,
                       owner=owner)


def _owners_first(sandboxes, purge):
    """Sandboxes ordered so the owner of a shared namespace comes before its sharers.
    With ``purge`` an owner must be named (a sandbox not named is removed, and with it
    its sharers). Raises ValidationError for a cycle or a missing owner under purge."""
    by_name = {s.name: s for s in sandboxes}
    ordered, placed = [], set()

    def place(sb, chain):
        if sb.name in placed:
            return
        if sb.name in chain:
            raise ValidationError("network_mode forms a cycle (%s)" % " -> ".join(
                chain + [sb.name]), field=sb.path + ".network_mode")
        owner = by_name.get(sb.owner) if sb.owner else None
        if sb.owner and owner is None and purge:
            raise ValidationError("sandbox %s is not named in the topology, so purge would "
                                  "remove it" % sb.owner, field=sb.path + ".network_mode")
        if owner is not None:
            place(owner, chain + [sb.name])
        placed.add(sb.name)
        ordered.append(sb)
    for sb in sandboxes:
        place(sb, [])
    return ordered


def _static(value, version):
    try:
        address = ipaddress.ip_address(str(value).strip().split("/", maxsplit=1)[0])
    except ValueError:
        return None  # the endpoint verb names the bad value
    return address if address.version == version else None


def _check_addresses(spec):
    """Static addresses: inside a subnet the topology gives their network (when it
    gives any), and one endpoint per address and per MAC on each network."""
    subnets = {}
    for path, name, params in spec.networks:
        ipam = params.get("ipam") if isinstance(params.get("ipam"), dict) else {}
        nets = []
        for entry in ipam.get("config") or []:
            try:
                nets.append(ipaddress.ip_network(str(entry.get("subnet")).strip()))
            except (ValueError, AttributeError):
                continue  # the network verb names the bad subnet
        subnets[name] = nets
    owners = {}
    for sb in spec.sandboxes:
        for ep in sb.endpoints:
            for key, version in (("ipv4_address", 4), ("ipv6_address", 6)):
                address = _static(ep.params.get(key), version)
                if address is None:
                    continue
                given = [n for n in subnets.get(ep.network) or [] if n.version == version]
                if given and not any(address in n for n in given):
                    raise ValidationError(
                        "%s is outside the subnets of network %s (%s)"
                        % (address, ep.network, ", ".join(str(n) for n in given)),
                        field="%s.%s" % (ep.path, key))
                _claim(owners, (ep.network, str(address)), "%s.%s" % (ep.path, key))
            mac = ep.params.get("mac_address")
            if isinstance(mac, str):
                _claim(owners, (ep.network, mac.strip().lower().replace("-", ":")),
                       ep.path + ".mac_address")


def _claim(owners, key, field):
    if key in owners:
        raise ValidationError("%s on network %s is also given to %s"
                              % (key[1], key[0], owners[key]), field=field)
    owners[key] = field


def _check_host_ports(spec):
    """One published mapping per host port, protocol and address across the topology
    (an all-address binding overlaps every address of its family). The port verb
    checks each entry's own values."""
    from ..ports.spec import parse_ports
    holders = {}
    for sb in spec.sandboxes:
        for ep in sb.endpoints:
            if not ep.ports:
                continue
            field = ep.path + ".ports"
            for req in parse_ports(ep.ports, field):
                if not req.host_start:
                    continue  # ephemeral: chosen free by the allocator
                where = "%s[%d].host_port" % (field, req.index)
                ip = str(req.host_ip) if req.host_ip is not None else ""
                for port in range(req.host_start, req.host_end + 1):
                    for other_ip, other in holders.get((req.protocol, port), ()):
                        if _overlap(ip, other_ip):
                            if other.split(".ports")[0] == ep.path:
                                continue  # one endpoint's own entries: the verb decides
                            raise ValidationError("host port %s/%d is also published by %s"
                                                  % (req.protocol, port, other),
                                                  field=where)
                    holders.setdefault((req.protocol, port), []).append((ip, where))


def _overlap(a, b):
    """Whether two host bindings (``""``: not given, the network's default) can claim
    the same port: the same address, or an all-address one of the same family."""
    if not a or not b or a == b:
        return True
    fa, fb = ipaddress.ip_address(a), ipaddress.ip_address(b)
    return fa.version == fb.version and (fa.is_unspecified or fb.is_unspecified)
