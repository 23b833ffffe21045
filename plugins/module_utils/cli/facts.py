"""``cnm graph --facts DIR``: a fleet's topology from gathered info results.

DIR holds one JSON file per host (``<host>.json``), as a play writes it with
``copy: content="{{ result | to_json }}"``: a registered ``cnm_network_info`` or
``cnm_sandbox_info`` result, a dict or list of several (``{"networks": <result>,
"sandboxes": <result>}``), or a loop's registered result (``results``). Networks are
found as lists of dicts with ``Driver`` under ``networks`` (or a single ``network``),
sandboxes as lists of dicts with ``SandboxKey`` under ``sandboxes`` (or ``sandbox``).
A file may name its host with a top-level ``host`` or ``inventory_hostname`` string.
"""
import json
import os

from ..errors import NotFoundError, ValidationError

MAX_DEPTH = 8


def _is_network(doc):
    return isinstance(doc, dict) and "Driver" in doc and "Name" in doc


def _is_sandbox(doc):
    return isinstance(doc, dict) and "SandboxKey" in doc and "Name" in doc


def collect(doc, networks, sandboxes, depth=0):
    """Add every network and sandbox entry found in ``doc`` (any nesting of dicts and
    lists, up to MAX_DEPTH) to the dicts ``networks`` and ``sandboxes`` keyed by Id (or
    Name), so an entry gathered twice is drawn once. Pure; raises nothing."""
    if depth > MAX_DEPTH:
        return
    if isinstance(doc, list):
        for item in doc:
            collect(item, networks, sandboxes, depth + 1)
        return
    if not isinstance(doc, dict):
        return
    for key, value in doc.items():
        items = value if isinstance(value, list) else [value]
        if key in ("networks", "network") and all(_is_network(v) for v in items):
            for net in items:
                networks.setdefault(net.get("Id") or net["Name"], net)
        elif key in ("sandboxes", "sandbox") and all(_is_sandbox(v) for v in items):
            for sb in items:
                sandboxes.setdefault(sb.get("Id") or sb["Name"], sb)
        elif isinstance(value, (dict, list)):
            collect(value, networks, sandboxes, depth + 1)


def load_host(path):
    """``{"name", "networks", "sandboxes"}`` of one facts file. Raises ValidationError
    naming the file when it is not JSON or holds no network and no sandbox."""
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except ValueError as exc:
        raise ValidationError("%s is not JSON: %s" % (path, exc), field="--facts")
    except OSError as exc:
        raise ValidationError("%s cannot be read: %s" % (path, exc.strerror or exc),
                              field="--facts")
    networks, sandboxes = {}, {}
    collect(doc, networks, sandboxes)
    if not networks and not sandboxes:
        raise ValidationError("%s holds no cnm_network_info or cnm_sandbox_info result "
                              "(no 'networks' or 'sandboxes' list)" % path, field="--facts")
    name = os.path.basename(path)[:-len(".json")]
    if isinstance(doc, dict):
        for key in ("host", "inventory_hostname"):
            if isinstance(doc.get(key), str) and doc[key]:
                name = doc[key]
                break
    return {"name": name, "networks": list(networks.values()),
            "sandboxes": list(sandboxes.values())}


def load_facts(directory):
    """The fleet topology of ``directory``'s ``*.json`` files, hosts sorted by name.
    Raises NotFoundError when the directory is missing or has no such file."""
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".json"))
    except OSError as exc:
        raise NotFoundError("facts directory %s cannot be read: %s"
                            % (directory, exc.strerror or exc), field="--facts")
    if not names:
        raise NotFoundError("facts directory %s has no <host>.json file" % directory,
                            field="--facts")
    hosts = [load_host(os.path.join(directory, n)) for n in names]
    return {"hosts": sorted(hosts, key=lambda h: h["name"])}
