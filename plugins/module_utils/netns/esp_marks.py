"""The nftables marks that steer an encrypted overlay's VXLAN into its IPsec policies.

The xfrm layer's own table (as the DNS redirect keeps its own ``ip cnm-dns``), apart from
the firewall backends: ``table inet cnm-esp`` holds, per encrypted network (by VNI), two
base chains with one rule each (``xfrm.mark_rules_nft``):

- ``out-<vni>`` (``type route hook output priority mangle``): the network's outgoing
  VXLAN (UDP 4789 + its VNI) gets the network's tag as mark, which the ``dir out``
  policy matches (a route chain re-runs the route and policy lookup for it);
- ``in-<vni>`` (``type filter hook input priority filter``): its VXLAN that arrives
  without IPsec is dropped.

Each rule carries a comment fingerprinting its text, so a check compares comments only.
A network's chains are added (or replaced) and removed in one ``nft -f -`` batch, in the
caller's network namespace; the table goes with its last chain.
"""
import hashlib
import json
import subprocess

from ..errors import KernelError
from . import xfrm

FAMILY = "inet"
TABLE = "cnm-esp"
_HOOKS = {"out": "type route hook output priority mangle; policy accept;",
          "in": "type filter hook input priority filter; policy accept;"}
_RULES = {"out": "output", "in": "input"}


def chain_names(vni):
    """``{"out": "out-<vni>", "in": "in-<vni>"}``: the network's two chains."""
    return {side: "%s-%d" % (side, vni) for side in _HOOKS}


def desired(vni):
    """``{chain name: (rule text, comment)}`` of network ``vni``. Pure."""
    rules = xfrm.mark_rules_nft(vni)
    out = {}
    for side, chain in chain_names(vni).items():
        text = rules[_RULES[side]]
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        out[chain] = (text, "cnm-esp %d %s" % (vni, digest))
    return out


def render_add(vni):
    """The ``nft -f`` batch that makes the network's chains hold exactly their rule
    (creating the table and chains when missing). Pure."""
    lines = ["add table %s %s" % (FAMILY, TABLE)]
    for chain, (text, comment) in sorted(desired(vni).items()):
        side = chain.split("-", 1)[0]
        lines += ["add chain %s %s %s { %s }" % (FAMILY, TABLE, chain, _HOOKS[side]),
                  "flush chain %s %s %s" % (FAMILY, TABLE, chain),
                  'add rule %s %s %s %s comment "%s"' % (FAMILY, TABLE, chain, text, comment)]
    return "\n".join(lines) + "\n"


def current():
    """``{chain name: [rule comments]}`` of the table now ({} when it does not exist).
    Raises KernelError when nft fails otherwise."""
    proc = _nft(["-j", "list", "table", FAMILY, TABLE], None, check=False)
    if proc.returncode != 0:
        if "No such file" in proc.stderr:
            return {}
        raise KernelError("nft list table %s %s: %s" % (FAMILY, TABLE, proc.stderr.strip()))
    chains = {}
    for item in json.loads(proc.stdout or "{}").get("nftables", []):
        if "chain" in item:
            chains.setdefault(item["chain"]["name"], [])
        elif "rule" in item:
            chains.setdefault(item["rule"]["chain"], []).append(item["rule"].get("comment"))
    return chains


def sync(vni, check=False):
    """Make network ``vni``'s two chains hold exactly their rule. Called with each apply
    of an encrypted network's SAs (before them: no outbound policy can match before its
    mark exists). Idempotent; with ``check`` nothing changes. Returns the changes as
    text. Raises KernelError."""
    have = current()
    stale = [chain for chain, (dummy, comment) in sorted(desired(vni).items())
             if have.get(chain) != [comment]]
    if not stale:
        return []
    if not check:
        _nft(["-f", "-"], render_add(vni))
    return ["nft %s %s: mark chain %s" % (FAMILY, TABLE, chain) for chain in stale]


def remove(vni, check=False):
    """Remove network ``vni``'s chains (and the table when none is left). Called when
    the network leaves this host, with ``xfrm.teardown``. Best effort: returns
    ``(removed lines, errors)``; raises nothing."""
    try:
        have = current()
    except KernelError as exc:
        return [], [str(exc)]
    gone = [chain for chain in sorted(chain_names(vni).values()) if chain in have]
    if not gone or check:
        return ["nft %s %s: remove chain %s" % (FAMILY, TABLE, c) for c in gone], []
    lines = ["delete chain %s %s %s" % (FAMILY, TABLE, chain) for chain in gone]
    if not set(have) - set(gone):
        lines.append("delete table %s %s" % (FAMILY, TABLE))
    try:
        _nft(["-f", "-"], "\n".join(lines) + "\n")
    except KernelError as exc:
        return [], [str(exc)]
    return ["nft %s %s: remove chain %s" % (FAMILY, TABLE, c) for c in gone], []


def _nft(args, text, check=True):
    try:
        proc = subprocess.run(["nft"] + args, input=text, capture_output=True, text=True,
                              timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KernelError("nft: %s" % exc)
    if check and proc.returncode != 0:
        raise KernelError("nft %s: %s" % (" ".join(args), proc.stderr.strip()))
    return proc
