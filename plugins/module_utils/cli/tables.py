"""The tables of ``cnm ls``: rows from the engine's info results, laid out as the docker
CLI lays out ``docker network ls`` (left-aligned columns, at least 10 wide, 3 spaces of
padding). Pure: data in, text out.
"""

MIN_WIDTH = 10   # the docker CLI's tabwriter: minwidth 10, padding 3
PADDING = 3

NETWORK_COLUMNS = ("NETWORK ID", "NAME", "DRIVER", "SCOPE")
SANDBOX_COLUMNS = ("SANDBOX ID", "NAME", "HOSTNAME", "MODE", "NETWORKS", "NAMESPACE")
ENDPOINT_COLUMNS = ("ENDPOINT ID", "SANDBOX", "NETWORK", "INTERFACE", "HOST INTERFACE",
                    "IPV4", "IPV6", "MAC")
PORT_COLUMNS = ("SANDBOX", "NETWORK", "CONTAINER", "HOST")
SECTIONS = ("networks", "sandboxes", "endpoints", "ports")


def format_table(columns, rows):
    """``columns`` and ``rows`` (lists of str) as aligned text, one line per row, header
    first; an empty cell prints nothing. Called by ``cnm ls``; raises nothing."""
    widths = [len(c) for c in columns]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(columns)] + [list(r) for r in rows]:
        cells = [cell.ljust(max(widths[i] + PADDING, MIN_WIDTH))
                 for i, cell in enumerate(row[:-1])]
        lines.append(("".join(cells) + row[-1]).rstrip())
    return "\n".join(lines)


def _cidr(address, prefix):
    return "%s/%s" % (address, prefix) if address else ""


def network_rows(networks):
    """``docker network ls`` rows of ``cnm_network_info``'s networks, sorted by name."""
    return [{"NETWORK ID": n.get("Id", "")[:12], "NAME": n.get("Name", ""),
             "DRIVER": n.get("Driver", ""), "SCOPE": n.get("Scope", "")}
            for n in sorted(networks, key=lambda n: n.get("Name", ""))]


def sandbox_rows(sandboxes):
    """One row per sandbox of ``cnm_sandbox_info``'s sandboxes, sorted by name."""
    return [{"SANDBOX ID": s.get("Id", "")[:12], "NAME": s.get("Name", ""),
             "HOSTNAME": s.get("Hostname", ""), "MODE": s.get("Mode", ""),
             "NETWORKS": ",".join(sorted(s.get("Networks") or {})),
             "NAMESPACE": s.get("SandboxKey", "")}
            for s in sorted(sandboxes, key=lambda s: s.get("Name", ""))]


def endpoint_rows(sandboxes):
    """One row per endpoint (a sandbox's entry under ``Networks``)."""
    rows = []
    for s in sorted(sandboxes, key=lambda s: s.get("Name", "")):
        for net_name, ep in sorted((s.get("Networks") or {}).items()):
            rows.append({
                "ENDPOINT ID": ep.get("EndpointID", "")[:12], "SANDBOX": s.get("Name", ""),
                "NETWORK": net_name, "INTERFACE": ep.get("InterfaceName", ""),
                "HOST INTERFACE": ep.get("HostInterfaceName", ""),
                "IPV4": _cidr(ep.get("IPAddress"), ep.get("IPPrefixLen")),
                "IPV6": _cidr(ep.get("GlobalIPv6Address"), ep.get("GlobalIPv6PrefixLen")),
                "MAC": ep.get("MacAddress", "")})
    return rows


def host_binding(binding):
    """``0.0.0.0:8080`` / ``[::]:8080`` of one Docker ``{HostIp, HostPort}`` entry."""
    host_ip = binding.get("HostIp") or "0.0.0.0"
    if ":" in host_ip:
        host_ip = "[%s]" % host_ip
    return "%s:%s" % (host_ip, binding.get("HostPort", ""))


def port_rows(sandboxes):
    """One row per published binding, as ``docker port`` prints it
    (``80/tcp -> 0.0.0.0:8080``), with the endpoint's address for the container side."""
    rows = []
    for s in sorted(sandboxes, key=lambda s: s.get("Name", "")):
        for net_name, ep in sorted((s.get("Networks") or {}).items()):
            for port, bindings in sorted((ep.get("Ports") or {}).items(), key=_port_key):
                for binding in bindings or []:
                    address = ep.get("IPAddress") or ep.get("GlobalIPv6Address") or ""
                    rows.append({"SANDBOX": s.get("Name", ""), "NETWORK": net_name,
                                 "CONTAINER": "%s %s" % (port, address) if address else port,
                                 "HOST": host_binding(binding)})
    return rows


def _port_key(item):
    number, dummy, proto = item[0].partition("/")
    return (int(number) if number.isdigit() else 0, proto)


def render_ls(sections, data):
    """The text of ``cnm ls``: one table per name in ``sections`` (a subset of
    SECTIONS), each titled when more than one is printed. ``data`` maps section ->
    list of row dicts (from the ``*_rows`` functions)."""
    columns = {"networks": NETWORK_COLUMNS, "sandboxes": SANDBOX_COLUMNS,
               "endpoints": ENDPOINT_COLUMNS, "ports": PORT_COLUMNS}
    out = []
    for section in sections:
        table = format_table(columns[section],
                             [[row[c] for c in columns[section]] for row in data[section]])
        out.append(("%s:\n%s" % (section.upper(), table)) if len(sections) > 1 else table)
    return "\n\n".join(out)
