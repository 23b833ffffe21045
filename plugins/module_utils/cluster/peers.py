"""Remote endpoints of an overlay network, from the cluster store into this host.

One function, ``apply``, used by both sides that keep a host in step with the cluster:
the controller when a module run sets up (or checks) a network's instance, and the host
agent on every change it sees in the store. It programs the kernel's peer entries
(``netns/fdb.py``) and the resolver's records of sandboxes on other hosts (one file per
remote endpoint, ``~remote-<network id12>-<endpoint id12>.json``, with no namespace to
listen in: names only), and tells the resolver which files changed.

``local`` describes this host's instance: ``{"id", "name", "bridge", "vxlan", "vtep"}``
(the overlay network's local row has them all).
"""
import json

from .. import constants as C
from ..dns import resolver_client as service
from ..netns import fdb
from .client import op_get
from .keys import KeyLayout


def read(client, keys, local):
    """``(records, vteps, revision)`` of network ``local`` from the store, at one
    revision: peer records by endpoint id and the member hosts' VTEPs (a member is named
    by its advertise address). Raises ClusterUnavailableError."""
    endpoints, members = keys.endpoints(local["id"]), keys.members(local["id"])
    (eps, hosts), revision = client.snapshot(op_get(endpoints, prefix=True),
                                             op_get(members, prefix=True, keys_only=True))
    records = {KeyLayout.last_part(kv.key, endpoints): json.loads(kv.value.decode())
               for kv in eps}
    vteps = sorted(KeyLayout.last_part(kv.key, members) for kv in hosts)
    return records, vteps, revision


def remote_fragment_name(network_id, endpoint_id):
    """The resolver file name of a remote endpoint."""
    return "%s%s-%s" % (C.AGENT_REMOTE_PREFIX, network_id[:12], endpoint_id[:12])


def dns_fragments(local, records):
    """``{file name: fragment}`` of the endpoints on other hosts (pure)."""
    out = {}
    for endpoint_id, rec in records.items():
        if rec.get("vtep") == local["vtep"]:
            continue
        names = [n for n in rec.get("names") or [] if n]
        ipv4 = (rec.get("ipv4") or "").split("/", 1)[0] or None
        ipv6 = (rec.get("ipv6") or "").split("/", 1)[0] or None
        out[remote_fragment_name(local["id"], endpoint_id)] = service.sandbox_fragment(
            None, False, {local["name"]: {"names": names, "ipv4": ipv4, "ipv6": ipv6,
                                          "seq": int(rec.get("seq") or 0)}})
    return out


def apply(rtnl, run_dir, local, records, vteps, check=False, notify=True):
    """Make this host's kernel entries and resolver records of network ``local`` match
    ``records`` (peer records by endpoint id) and ``vteps`` (flood list).

    Idempotent; with ``check`` nothing changes. Returns the changes as text ([] when in
    step). Raises NetlinkError (kernel), OSError (files); a resolver that does not
    answer is not an error (it reads the files when it starts).
    """
    bridge = rtnl.get_link(local["bridge"])
    vxlan = rtnl.get_link(local["vxlan"])
    if bridge is None or vxlan is None:
        return []   # the instance is not set up here (yet): nothing to program
    peers = list(records.values())
    changes = fdb.sync(rtnl, bridge["index"], vxlan["index"], peers, vteps, local["vtep"],
                       check=check)
    want = dns_fragments(local, records)
    prefix = remote_fragment_name(local["id"], "")
    changed = []
    for name in service.fragment_names(run_dir):
        if name.startswith(prefix) and name not in want:
            changes.append("forget remote name file %s" % name)
            if not check and service.write_fragment(run_dir, name, None):
                changed.append(name)
    for name, fragment in sorted(want.items()):
        if check:
            if _read(run_dir, name) != fragment:
                changes.append("write remote name file %s" % name)
        elif service.write_fragment(run_dir, name, fragment):
            changes.append("write remote name file %s" % name)
            changed.append(name)
    if changed and notify:
        service.notify_resolver(run_dir, changed)
    return changes


def forget(run_dir, network_id, notify=True):
    """Remove every remote name file of a network (its instance left this host)."""
    prefix = remote_fragment_name(network_id, "")
    changed = [n for n in service.fragment_names(run_dir)
               if n.startswith(prefix) and service.write_fragment(run_dir, n, None)]
    if changed and notify:
        service.notify_resolver(run_dir, changed)
    return changed


def _read(run_dir, name):
    import json
    import os
    path = os.path.join(service.resolver_paths(run_dir)["fragments"], name + ".json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
