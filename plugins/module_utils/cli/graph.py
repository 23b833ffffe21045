"""``cnm graph``: a picture of the topology, as Graphviz DOT text, rendered by ``dot``.

The topology is data: ``{"hosts": [{"name", "networks", "sandboxes"}]}`` where networks
are ``cnm_network_info``'s entries (``docker network inspect``'s shape) and sandboxes
``cnm_sandbox_info``'s. ``render_dot`` (pure) draws one cluster per host holding its
networks (with their bridge, subnets and gateways), its sandboxes (interfaces and
addresses) and its published ports; overlay (global) networks are drawn once, outside
the hosts, joined to the sandboxes of every host, and name their hosts. ``render_files``
runs Graphviz's ``dot`` for SVG and PNG.
"""
import os
import shutil
import subprocess

from .. import constants as C
from ..errors import DependencyError, KernelError, ValidationError

FORMATS = ("svg", "png", "dot")
GLOBAL_DRIVERS = ("overlay",)
DOT_TIMEOUT = 60
GRAPHVIZ_HINT = ("Graphviz's dot is not installed: install the graphviz package "
                 "(apt-get install graphviz, dnf install graphviz)")

STYLE = {
    "network": 'shape=box, style="rounded,filled", fillcolor="#dbe9f6", color="#3b6ea5"',
    "predefined": 'shape=box, style="rounded,dashed", color="#7f7f7f", fontcolor="#4d4d4d"',
    "overlay": 'shape=hexagon, style="filled", fillcolor="#e3d7f0", color="#6a4c93"',
    "sandbox": 'shape=box, style="filled", fillcolor="#fdf2d0", color="#b8860b"',
    "port": 'shape=cds, style="filled", fillcolor="#dff0d8", color="#3c763d"',
}


def quote(text):
    """A DOT double-quoted string of ``text``: backslashes and quotes escaped, so a
    name can never end the string or inject an escape such as ``\\l``."""
    return '"%s"' % str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def label(*lines):
    """A quoted multi-line label (lines centred, joined by DOT's ``\\n``)."""
    return '"%s"' % "\\n".join(quote(line)[1:-1] for line in lines if line)


def bridge_name(net):
    """The bridge device of a bridge network: its ``com.docker.network.bridge.name``
    option, else ``br-<id12>`` as the engine names it."""
    if net.get("Driver") != "bridge":
        return ""
    named = (net.get("Options") or {}).get(C.OPT_BRIDGE_NAME)
    return named or C.BRIDGE_PREFIX + str(net.get("Id", ""))[:12]


def _subnets(net):
    out = []
    for pool in (net.get("IPAM") or {}).get("Config") or []:
        if pool.get("Subnet"):
            gw = pool.get("Gateway")
            out.append("%s%s" % (pool["Subnet"], " gw %s" % gw if gw else ""))
    return out


def _network_lines(net, hosts=None):
    driver = net.get("Driver", "")
    dev = bridge_name(net)
    if driver == "macvlan" or driver == "ipvlan":
        dev = "parent %s" % (net.get("Options") or {}).get(C.OPT_PARENT, "?")
    flags = [f for f, on in (("internal", net.get("Internal")),) if on]
    lines = ["network %s" % net.get("Name", ""),
             " ".join([driver] + ([dev] if dev else []) + flags)]
    lines += _subnets(net)
    if hosts:
        lines.append("hosts: %s" % ", ".join(hosts))
    return lines


def _interface_lines(ep):
    lines = []
    for addr, prefix in (("IPAddress", "IPPrefixLen"),
                         ("GlobalIPv6Address", "GlobalIPv6PrefixLen")):
        if ep.get(addr):
            lines.append("%s %s/%s" % (ep.get("InterfaceName") or "-", ep[addr],
                                       ep.get(prefix)))
    if not lines and ep.get("InterfaceName"):
        lines.append(ep["InterfaceName"])
    return lines


def _is_global(net):
    return net.get("Driver") in GLOBAL_DRIVERS or net.get("Scope") == "global"


def render_dot(topology):
    """DOT text of ``topology`` (see the module docstring). Pure and deterministic: the
    same data always gives the same text. Called by ``cnm graph``; raises nothing for
    well-formed info data (missing keys read as empty)."""
    out = ['graph "cnm" {',
           '  graph [rankdir=LR, fontname="Helvetica", fontsize=12, nodesep=0.35, '
           'ranksep=1.1, newrank=true];',
           '  node [fontname="Helvetica", fontsize=10];',
           '  edge [fontname="Helvetica", fontsize=9, color="#555555"];']
    overlays = {}   # network name -> (network, [host names])
    edges = []
    for h, host in enumerate(topology.get("hosts") or []):
        hname = host.get("name") or "host%d" % h
        prefix = "h%d" % h
        nets = sorted(host.get("networks") or [], key=lambda n: n.get("Name", ""))
        out.append("  subgraph %s {" % quote("cluster_%s" % prefix))
        out.append('    label=%s; style="rounded"; color="#999999"; fontsize=13;'
                   % quote("host %s" % hname))
        ids = {}
        for net in nets:
            name = net.get("Name", "")
            if _is_global(net):
                entry = overlays.setdefault(name, (net, []))
                entry[1].append(hname)
                ids[name] = "overlay/%s" % name
                ids[net.get("Id", "")] = ids[name]
                continue
            node = "%s/net/%s" % (prefix, name)
            ids[name] = ids[net.get("Id", "")] = node
            style = STYLE["predefined" if name in ("host", "none") else "network"]
            out.append("    %s [%s, label=%s];" % (quote(node), style,
                                                   label(*_network_lines(net))))
        sandboxes = sorted(host.get("sandboxes") or [], key=lambda s: s.get("Name", ""))
        by_id = {s.get("Id"): s.get("Name", "") for s in sandboxes}
        for sb in sandboxes:
            name = sb.get("Name", "")
            node = "%s/sb/%s" % (prefix, name)
            lines = ["sandbox %s" % name]
            if sb.get("Hostname") and sb.get("Hostname") != name:
                lines.append("hostname %s" % sb["Hostname"])
            networks = sorted((sb.get("Networks") or {}).items())
            for dummy, ep in networks:
                lines += _interface_lines(ep)
            out.append("    %s [%s, label=%s];" % (quote(node), STYLE["sandbox"],
                                                   label(*lines)))
            mode = (sb.get("HostConfig") or {}).get("NetworkMode", "")
            if mode.startswith("container:") and mode[10:] in by_id:
                owner = "%s/sb/%s" % (prefix, by_id[mode[10:]])
                edges.append("  %s -- %s [style=dotted, label=%s];"
                             % (quote(node), quote(owner), quote("shares namespace")))
            for net_name, ep in networks:
                target = ids.get(net_name) or ids.get(ep.get("NetworkID", ""))
                if target is None:
                    continue
                text = [ep.get("InterfaceName") or "", ep.get("HostInterfaceName") or ""]
                edges.append("  %s -- %s [label=%s];" % (
                    quote(node), quote(target), quote(" / ".join(t for t in text if t))))
                for port, bindings in sorted((ep.get("Ports") or {}).items()):
                    for binding in bindings or []:
                        host_ip = binding.get("HostIp") or "0.0.0.0"
                        text = "%s:%s/%s" % ("[%s]" % host_ip if ":" in host_ip else host_ip,
                                             binding.get("HostPort", ""),
                                             port.partition("/")[2] or "tcp")
                        pnode = "%s/port/%s/%s" % (prefix, name, text)
                        out.append("    %s [%s, label=%s];" % (
                            quote(pnode), STYLE["port"], label("published", text)))
                        edges.append("  %s -- %s [style=dashed, label=%s];" % (
                            quote(pnode), quote(node), quote("to %s" % port)))
        out.append("  }")
    for name in sorted(overlays):
        net, hosts = overlays[name]
        text = label(*_network_lines(net, sorted(hosts)))
        out.append("  %s [%s, label=%s];" % (quote("overlay/%s" % name), STYLE["overlay"],
                                             text))
    out += list(dict.fromkeys(edges))  # each edge once, in the order found
    out.append("}")
    return "\n".join(out) + "\n"


def local_topology(host_name, networks, sandboxes):
    """The topology of this host from ``network_info`` and ``sandbox_info`` data."""
    return {"hosts": [{"name": host_name, "networks": list(networks),
                       "sandboxes": list(sandboxes)}]}


def find_dot():
    """Path of Graphviz's ``dot``; raises DependencyError naming the package."""
    path = shutil.which("dot")
    if not path:
        raise DependencyError(GRAPHVIZ_HINT)
    return path


def render_files(dot_text, base, formats=("svg", "png")):
    """Write ``<base>.<fmt>`` for each of ``formats`` (svg, png: through ``dot``; dot:
    the text itself). Returns the paths written. Raises DependencyError when ``dot`` is
    missing (before anything is written), KernelError when it fails."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValidationError("unknown format %s (choose from %s)"
                              % (", ".join(unknown), ", ".join(FORMATS)), field="--format")
    dot = find_dot() if any(f != "dot" for f in formats) else None
    directory = os.path.dirname(os.path.abspath(base))
    if not os.path.isdir(directory):
        raise KernelError("output directory %s does not exist" % directory)
    written = []
    for fmt in formats:
        path = "%s.%s" % (base, fmt)
        if fmt == "dot":
            with open(path, "w") as fh:
                fh.write(dot_text)
        else:
            proc = subprocess.run([dot, "-T%s" % fmt, "-o", path], input=dot_text,
                                  capture_output=True, text=True, timeout=DOT_TIMEOUT,
                                  check=False)
            if proc.returncode != 0:
                raise KernelError("dot -T%s failed (%d): %s"
                                  % (fmt, proc.returncode, proc.stderr.strip()))
        written.append(path)
    return written
