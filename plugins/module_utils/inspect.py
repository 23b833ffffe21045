"""Return values in Docker's shapes (``docker network inspect``, NetworkSettings).

Tools written for Docker's JSON read ours: same keys, same JSON types.
"""
import ipaddress

from .ipam.config import PoolConfig
from .model import gateway_for


def network(net, endpoints, sandboxes):
    """``docker network inspect`` entry for ``net``; ``sandboxes`` maps id -> Sandbox."""
    containers = {}
    for ep in endpoints:
        sb = sandboxes.get(ep.sandbox_id)
        containers[ep.sandbox_id] = {
            "Name": sb.name if sb else ep.sandbox_name,
            "EndpointID": ep.id,
            "MacAddress": ep.mac,
            "IPv4Address": ep.ipv4,
            "IPv6Address": ep.ipv6,
        }
    config = [PoolConfig.from_dict(p).to_docker() for p in net.pools]
    return {
        "Name": net.name,
        "Id": net.id,
        "Created": net.created,
        "Scope": net.scope,
        "Driver": net.driver,
        "EnableIPv4": net.enable_ipv4,
        "EnableIPv6": net.enable_ipv6,
        # Docker prints null IPAM options for its predefined networks, {} for the others
        "IPAM": {"Driver": net.ipam_driver,
                 "Options": None if net.predefined else dict(net.ipam_options),
                 "Config": config},
        "Internal": net.internal,
        "Attachable": net.attachable,
        "Ingress": False,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": containers,
        "Options": dict(net.options),
        "Labels": dict(net.labels),
    }


def endpoint(ep, net, sandbox):
    """The ``endpoint`` return value of cnm_endpoint (EndpointSettings-like)."""
    v4 = ipaddress.ip_interface(ep.ipv4) if ep.ipv4 else None
    v6 = ipaddress.ip_interface(ep.ipv6) if ep.ipv6 else None
    has_gw = net.driver not in ("host", "null") and not net.internal
    return {
        "EndpointID": ep.id,
        "NetworkID": net.id,
        "NetworkName": net.name,
        "Sandbox": sandbox.name,
        "SandboxID": sandbox.id,
        "SandboxKey": sandbox.netns_path,
        "InterfaceName": ep.ifname,
        "HostInterfaceName": ep.host_ifname,
        "IPAddress": str(v4.ip) if v4 else "",
        "IPPrefixLen": v4.network.prefixlen if v4 else 0,
        "Gateway": (gateway_for(net, 4) or "") if has_gw and v4 else "",
        "GlobalIPv6Address": str(v6.ip) if v6 else "",
        "GlobalIPv6PrefixLen": v6.network.prefixlen if v6 else 0,
        "IPv6Gateway": (gateway_for(net, 6) or "") if has_gw and v6 else "",
        "MacAddress": ep.mac,
        "Aliases": list(ep.aliases),
        "GwPriority": ep.gw_priority,
        "Ports": _ports(ep),
        "Bandwidth": dict(ep.bandwidth),
    }


def _ports(ep):
    """Published ports in Docker's NetworkSettings.Ports shape ({} when none)."""
    if not ep.ports:
        return {}
    from .ports.mapping import PortMapping
    from .ports.spec import to_docker_ports
    return to_docker_ports([PortMapping.from_dict(p) for p in ep.ports])


def network_settings(sb, endpoints, networks):
    """``docker inspect``'s ``NetworkSettings`` of a sandbox: ``Networks.<name>`` as
    Docker's EndpointSettings, ``Ports`` of every endpoint (IPv4 and IPv6 bindings), and
    the top-level address fields filled from the default bridge only, as Docker does."""
    nets, mappings, top = {}, [], {}
    for ep in endpoints:
        net = networks.get(ep.network_id)
        if not net:
            continue
        e = endpoint(ep, net, sb)
        static = {k: str(ipaddress.ip_interface(getattr(ep, key)).ip)
                  for k, key in (("IPv4Address", "ipv4"), ("IPv6Address", "ipv6"))
                  if ep.static.get(key) and getattr(ep, key)}
        nets[net.name] = {
            "IPAMConfig": static or None, "Links": None, "Aliases": e["Aliases"] or None,
            "NetworkID": net.id, "EndpointID": ep.id, "Gateway": e["Gateway"],
            "IPAddress": e["IPAddress"], "IPPrefixLen": e["IPPrefixLen"],
            "IPv6Gateway": e["IPv6Gateway"], "GlobalIPv6Address": e["GlobalIPv6Address"],
            "GlobalIPv6PrefixLen": e["GlobalIPv6PrefixLen"], "MacAddress": ep.mac or "",
            "DriverOpts": None}
        mappings += ep.ports
        if net.predefined and net.driver == "bridge":
            top = nets[net.name]
    ports = {}
    if mappings:
        from .ports.mapping import PortMapping
        from .ports.spec import to_docker_ports
        ports = to_docker_ports([PortMapping.from_dict(p) for p in mappings])
    out = {"Bridge": "", "SandboxID": sb.id, "SandboxKey": sb.netns_path,
           "HairpinMode": False, "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
           "Ports": ports, "SecondaryIPAddresses": None, "SecondaryIPv6Addresses": None}
    for key in ("EndpointID", "Gateway", "GlobalIPv6Address", "IPAddress", "IPv6Gateway",
                "MacAddress"):
        out[key] = top.get(key, "")
    out["GlobalIPv6PrefixLen"] = top.get("GlobalIPv6PrefixLen", 0)
    out["IPPrefixLen"] = top.get("IPPrefixLen", 0)
    out["Networks"] = nets
    return out


def network_mode(sb):
    """Docker's ``HostConfig.NetworkMode`` of a sandbox: ``container:<id>`` for one
    sharing another's namespace, ``host``, else ``default``."""
    if sb.mode == "container":
        return "container:%s" % sb.shares
    return "host" if sb.mode == "host" else "default"


def sandbox(sb, endpoints, networks):
    """The ``sandbox`` return value: the namespace and its endpoints by network name."""
    eps = {}
    for ep in endpoints:
        net = networks.get(ep.network_id)
        if net:
            eps[net.name] = endpoint(ep, net, sb)
    return {
        "Id": sb.id,
        "Name": sb.name,
        "SandboxKey": sb.netns_path,
        "Hostname": sb.hostname,
        "Created": sb.created,
        "Mode": sb.mode,
        "HostConfig": {"NetworkMode": network_mode(sb), "Sysctls": dict(sb.sysctls)},
        "NetworkSettings": network_settings(sb, endpoints, networks),
        "Networks": eps,
        "Dns": dict(sb.dns),
    }
