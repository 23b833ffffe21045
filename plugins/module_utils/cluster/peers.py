"""Remote endpoints of an overlay network, from the cluster store into this host.

One function, ``apply``, used by both sides that keep a host in step with the cluster:
the controller when a module run sets up (or checks) a network's instance, and the host
agent on every change it sees in the store. It programs the kernel's peer entries
(``netns/fdb.py``) and the resolver's records of sandboxes on other hosts (one file per
remote endpoint, ``~remote-<network id12>-<endpoint id12>.json``, with no namespace to
listen in: names only), and tells the resolver which files changed.

``local`` describes this host's instance: ``{"id", "name", "bridge", "vxlan", "vtep",
"vni", "encrypted"}`` (the overlay network's local row has them all). For an encrypted
network it also programs the IPsec side (``netns/xfrm.py``: the SAs and policies towards
every other member's VTEP, from the key document in the store; ``netns/esp_marks.py``:
the nftables marks that steer the VXLAN into them). Changes are reported as text
without any key.
"""
import json

from .. import constants as C
from ..dns import resolver_client as service
from ..netns import fdb
from .client import compare, op_get, op_put
from .keys import KeyLayout


def read(client, keys, local):
    """``(records, vteps, revision)`` of network ``local`` (``read_all`` without the
    keys). Raises ClusterUnavailableError."""
    records, vteps, dummy, revision = read_all(client, keys, local)
    return records, vteps, revision


def read_all(client, keys, local):
    """``(records, vteps, key document, revision)`` of network ``local`` from the store,
    at one revision: peer records by endpoint id, the member hosts' VTEPs (a member is
    named by its advertise address) and, when ``local`` says encrypted, its key document
    (None otherwise or when missing; it holds secrets: pass it to ``apply`` only).
    Raises ClusterUnavailableError."""
    endpoints, members = keys.endpoints(local["id"]), keys.members(local["id"])
    ops = [op_get(endpoints, prefix=True), op_get(members, prefix=True, keys_only=True)]
    if local.get("encrypted"):
        ops.append(op_get(keys.network_keys(local["id"])))
    found, revision = client.snapshot(*ops)
    records = {KeyLayout.last_part(kv.key, endpoints): json.loads(kv.value.decode())
               for kv in found[0]}
    vteps = sorted(KeyLayout.last_part(kv.key, members) for kv in found[1])
    keydoc = json.loads(found[2][0].value.decode()) if len(found) > 2 and found[2] else None
    return records, vteps, keydoc, revision


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


def apply(rtnl, run_dir, local, records, vteps, check=False, notify=True, keydoc=None):
    """Make this host's kernel entries and resolver records of network ``local`` match
    ``records`` (peer records by endpoint id) and ``vteps`` (flood list); for an
    encrypted network, its marks, SAs and policies match ``keydoc`` and ``vteps``.

    Idempotent; with ``check`` nothing changes. Returns the changes as text ([] when in
    step; never a key). Raises NetlinkError (kernel), OSError (files), KernelError
    (xfrm, nft), ValidationError (a malformed key document); a resolver that does not
    answer is not an error (it reads the files when it starts).
    """
    bridge = rtnl.get_link(local["bridge"])
    vxlan = rtnl.get_link(local["vxlan"])
    if bridge is None or vxlan is None:
        return []   # the instance is not set up here (yet): nothing to program
    changes = []
    if local.get("encrypted"):
        changes += apply_encryption(local, vteps, keydoc, check=check)
    peers = list(records.values())
    changes += fdb.sync(rtnl, bridge["index"], vxlan["index"], peers, vteps, local["vtep"],
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


def apply_encryption(local, vteps, keydoc, check=False):
    """The IPsec side of ``apply``: mark chains first, then the SAs and policies of
    ``keydoc`` towards every member VTEP but this host's. Without a key document
    nothing is changed and that is reported (the network's traffic must not be keyed
    by guess). Returns the changes as text (no key). Raises KernelError,
    ValidationError."""
    from ..netns import esp_marks, xfrm
    if keydoc is None:
        return ["keys of encrypted network %s are missing in the cluster store"
                % local["name"]]
    keys, primary = xfrm.keys_of_document(keydoc)
    remotes = [v for v in vteps if v != local["vtep"]]
    changes = esp_marks.sync(local["vni"], check=check)
    want = xfrm.render(local["vni"], local["vtep"], remotes, keys, primary)
    done = xfrm.apply(want, check_mode=check)
    changes += ["xfrm add %s" % line for line in done["added"]]
    changes += ["xfrm remove %s" % line for line in done["removed"]]
    return changes


def acknowledge(client, keys, local, keydoc, last=None):
    """Write this host's acknowledgement of the key state it applied (``keydoc``'s
    generations and primary, no secret) under ``keys/<id>/acks/<vtep>``, unless it is
    ``last`` (what this caller wrote before). Called after ``apply`` succeeded on an
    encrypted network, by the agent and the controller: a key rotation waits for every
    member's. Returns the state acknowledged. Raises ClusterUnavailableError."""
    from ..netns import xfrm
    state = xfrm.key_state(keydoc)
    if state != last:   # only while a member: a late ack must not outlive the network
        member = keys.member(local["id"], local["vtep"])
        if not client.txn([compare(member, "CREATE", ">", 0)],
                          [op_put(keys.key_ack(local["id"], local["vtep"]), state)]).succeeded:
            return last
    return state


def forget_encryption(vni):
    """Remove every SA, policy and mark chain of the encrypted network ``vni`` from
    this host (its instance left). Best effort: returns the errors."""
    from ..netns import esp_marks, xfrm
    dummy, errors = xfrm.teardown(xfrm.network_tag(vni))
    dummy, more = esp_marks.remove(vni)
    return errors + more


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
