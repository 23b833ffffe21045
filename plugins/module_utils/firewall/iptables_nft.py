"""Withdrawing published ports of the iptables backend by rule handle, in-process.

Called by the iptables backend for the deletions of a ports-only change when the host's
iptables is the nf_tables variant and libnftables is importable. Why: a transaction that
deletes rules leaves the kernel work that frees them after an RCU grace period, and
whoever closes a netfilter netlink socket waits for that work (10-35 ms measured here).
``iptables-restore`` closes its socket before it exits, so each withdrawal paid the wait
inside the operation. The rules iptables-nft made are ordinary nf_tables rules: this
module lists the one chain concerned (libnftables JSON, through the context the engine
keeps per namespace), finds the rules to delete by their visible match fields and
deletes them by handle in one transaction. The wait moves to the end of the process,
as with the nftables backend.

Only rules whose every match nf_tables shows natively are handled (TCP/UDP ports,
addresses, output interface); a rule with an xtables match (``-m sctp``) makes
``deletions`` return None and the caller uses ``iptables-restore -D`` instead.
"""
import json

from ..errors import KernelError
from .model import port_delta
from .render_iptables import net_chain_names

_TABLE_FAMILY = {4: "ip", 6: "ip6"}
_NATIVE_PROTOCOLS = ("tcp", "udp")


def rule_fields(rule):
    """The visible fields of one listed rule (a dict of the JSON ``rule`` object):
    ``{"l4proto", "dport", "daddr", "oifname", "target"}`` (missing ones None), or None
    when the rule holds an expression this module does not read (an xtables match)."""
    fields = dict.fromkeys(("l4proto", "dport", "daddr", "oifname", "target"))
    for expr in rule.get("expr") or []:
        if "match" in expr:
            match = expr["match"]
            left, right = match.get("left") or {}, match.get("right")
            if match.get("op") not in ("==", "in", None):
                return None
            payload, meta = left.get("payload") or {}, left.get("meta") or {}
            what = (payload.get("protocol"), payload.get("field"), meta.get("key"))
            if what[0] in _NATIVE_PROTOCOLS and what[1] == "dport":
                fields["l4proto"], fields["dport"] = what[0], right
            elif what[0] in ("ip", "ip6") and what[1] == "daddr" and isinstance(right, str):
                fields["daddr"] = right
            elif what[2] in ("l4proto", "oifname") and isinstance(right, str):
                fields[what[2]] = right
            else:
                return None
        elif "xt" in expr:
            xt = expr["xt"]
            if xt.get("type") != "target":
                return None
            fields["target"] = xt.get("name")
        elif "accept" in expr:
            fields["target"] = "accept"
        elif "counter" in expr:
            continue
        else:
            return None
    return fields


def dnat_fields(p):
    """What the CNM-DN-<id> rule of mapping ``p`` shows (see render_iptables.dnat_line)."""
    return {"l4proto": p.protocol, "dport": p.host_port, "daddr": p.host_ip or None,
            "oifname": None, "target": "DNAT"}


def pub_fields(bridge, cip, protocol, cport):
    """What the CNM-PUB-<id> rule of one target shows (see render_iptables.pub_line)."""
    return {"l4proto": protocol, "dport": cport, "daddr": cip, "oifname": bridge,
            "target": "accept"}


def deletions(old, new, family):
    """The rules a ports-only change ``old`` -> ``new`` removes in ``family``, as
    ``[(nft table family, table, chain, fields)]``, or None when one of them cannot be
    found by its visible fields (the caller then deletes with iptables-restore).
    Pure."""
    removed, dummy, gone, dummy2 = port_delta(old, new)
    if new.internal or not new.subnets_of(family):
        return []
    dummy3, dummy4, pub, dn = net_chain_names(new.short_id)
    fam = _TABLE_FAMILY[family]
    out = []
    for p in removed:
        if p.family == family:
            if p.protocol not in _NATIVE_PROTOCOLS:
                return None
            out.append((fam, "nat", dn, dnat_fields(p)))
    for tfam, cip, proto, cport in gone:
        if tfam == family:
            if proto not in _NATIVE_PROTOCOLS:
                return None
            out.append((fam, "filter", pub, pub_fields(new.bridge, cip, proto, cport)))
    return out


def find_handles(listing, wanted):
    """Handles of the rules of one chain ``listing`` (parsed ``nft -j list chain``)
    whose fields equal each of ``wanted`` (one distinct rule each, first in chain
    order). Raises KernelError naming what is missing (drift: the caller reconciles)."""
    rules = [item["rule"] for item in (listing or {}).get("nftables", []) if "rule" in item]
    seen = [(rule.get("handle"), rule_fields(rule)) for rule in rules]
    handles = []
    for fields in wanted:
        for handle, have in seen:
            if have == fields and handle not in handles:
                handles.append(handle)
                break
        else:
            raise KernelError("no rule %s in the chain" % json.dumps(fields, sort_keys=True))
    return handles


def delete_script(runner, rules):
    """The nft script deleting ``rules`` (``deletions`` output) by handle: one listing
    per chain concerned through ``runner`` (an NftRunner). Raises KernelError when a
    chain or a rule is missing."""
    by_chain = {}
    for fam, table, chain, fields in rules:
        by_chain.setdefault((fam, table, chain), []).append(fields)
    lines = []
    for (fam, table, chain), wanted in sorted(by_chain.items()):
        listing = runner.list_json("chain %s %s %s" % (fam, table, chain))
        if listing is None:
            raise KernelError("chain %s %s %s is missing" % (fam, table, chain))
        for handle in find_handles(listing, wanted):
            lines.append("delete rule %s %s %s handle %d" % (fam, table, chain, handle))
    return "".join(line + "\n" for line in lines)
