"""Pure rendering of networks' rules as nft scripts (what ``nft -f`` reads).

Layout, all in table ``inet cnm`` (one table for IPv4 and IPv6):

* base chains hooked into the kernel: ``forward`` (filter), ``prerouting`` and ``output``
  (DNAT), ``postrouting`` (masquerade), ``raw-prerouting`` (drops before conntrack);
  the user chain ``CNM-USER``, jumped to first from ``forward``, created once and never
  flushed; when the last network goes, it stays with the user's rules in it (the rest
  of the table goes: ``render_teardown``);
* four small chains per network, ``fwd-out-<id12>``, ``fwd-in-<id12>``, ``post-<id12>``,
  ``raw-<id12>``, reached through verdict maps keyed by bridge name (``fwd-out``,
  ``fwd-in``) or by subnet (``post4/6``, ``raw4/6``);
* published ports are only set/map elements: ``dnat4/6`` (host address . protocol .
  port -> container address . port), ``dnat4-any/6-any`` (protocol . port -> ...) and
  ``pub4/6`` (container address . protocol . port, accepted when DNATed), so adding a
  mapping is three element adds whatever the number of mappings already there.

A network is described by ``network_objects`` (its chains and its elements); every
script below is derived from that description, so creation, update, removal, restore
and drift check can never disagree about what a network owns. Elements are kept as
tuples of canonical strings (``parse_table`` reads ``nft -j`` output into the same form).

Rules and elements are written in block form: ``add chain T c { rule; rule; }`` and
``add map T m { <declaration> elements = { ... } }``, never ``add rule`` or ``add
element``. The kernel receives the same messages either way, but libnftables (1.0.6,
Debian 12) fills its cache before a batch from what the batch's commands are: one
``add rule`` or ``add element`` makes it dump and parse every chain of every table and
every element of the interval maps (four chains and four interval elements per
network), while chain and set blocks need only the list of tables. A network create
then costs the same with 100 networks around as with none, but for the kernel's own
work (``bench/bench_scale.py``). Deletes still read the cache: libnftables needs the
interval elements to delete one.
"""
import ipaddress
import re
from ..constants import (CHAIN_USER, NFT_CHAIN_FORWARD, NFT_CHAIN_OUTPUT,
                         NFT_CHAIN_POSTROUTING, NFT_CHAIN_PREROUTING, NFT_CHAIN_RAW,
                         NFT_FAMILY, NFT_NET_CHAIN_PREFIXES, NFT_TABLE)
from .model import port_delta, validate_ports, validate_rules, validate_structure

TABLE = "%s %s" % (NFT_FAMILY, NFT_TABLE)
_NET_CHAIN = re.compile(r"^(%s)[0-9a-f]{12}$"
                        % "|".join(re.escape(p) for p in NFT_NET_CHAIN_PREFIXES))

BASE_CHAINS = (
    (CHAIN_USER, None),
    (NFT_CHAIN_FORWARD, "type filter hook forward priority filter; policy accept;"),
    (NFT_CHAIN_PREROUTING, "type nat hook prerouting priority dstnat; policy accept;"),
    (NFT_CHAIN_OUTPUT, "type nat hook output priority -100; policy accept;"),
    (NFT_CHAIN_POSTROUTING, "type nat hook postrouting priority srcnat; policy accept;"),
    (NFT_CHAIN_RAW, "type filter hook prerouting priority raw; policy accept;"),
)

# name -> (declaration, key parts that are interface names (quoted in nft text))
SETS = {
    "bridges": ("set", "type ifname;", True),
    "fwd-out": ("map", "type ifname : verdict;", True),
    "fwd-in": ("map", "type ifname : verdict;", True),
    "post4": ("map", "type ipv4_addr : verdict; flags interval;", False),
    "post6": ("map", "type ipv6_addr : verdict; flags interval;", False),
    "raw4": ("map", "type ipv4_addr : verdict; flags interval;", False),
    "raw6": ("map", "type ipv6_addr : verdict; flags interval;", False),
    "dnat4": ("map", "type ipv4_addr . inet_proto . inet_service : "
                     "ipv4_addr . inet_service;", False),
    "dnat4-any": ("map", "type inet_proto . inet_service : ipv4_addr . inet_service;",
                  False),
    "dnat6": ("map", "type ipv6_addr . inet_proto . inet_service : "
                     "ipv6_addr . inet_service;", False),
    "dnat6-any": ("map", "type inet_proto . inet_service : ipv6_addr . inet_service;",
                  False),
    "pub4": ("set", "type ipv4_addr . inet_proto . inet_service;", False),
    "pub6": ("set", "type ipv6_addr . inet_proto . inet_service;", False),
}

# Base rules: (chain, comment, expression). Comments identify rules for drift checks.
_DNAT_KEY = "meta l4proto . th dport"
BASE_RULES = (
    (NFT_CHAIN_FORWARD, "cnm:user", "jump %s" % CHAIN_USER),
    (NFT_CHAIN_FORWARD, "cnm:published4",
     "ct status dnat ip daddr . %s @pub4 accept" % _DNAT_KEY),
    (NFT_CHAIN_FORWARD, "cnm:published6",
     "ct status dnat ip6 daddr . %s @pub6 accept" % _DNAT_KEY),
    (NFT_CHAIN_FORWARD, "cnm:from-bridge", "iifname vmap @fwd-out"),
    (NFT_CHAIN_FORWARD, "cnm:to-bridge", "oifname vmap @fwd-in"),
    # loopback-bound mappings are only reachable from the host itself (output)
    (NFT_CHAIN_PREROUTING, "cnm:dnat4",
     "ip daddr != 127.0.0.0/8 dnat ip to ip daddr . %s map @dnat4" % _DNAT_KEY),
    (NFT_CHAIN_PREROUTING, "cnm:dnat6",
     "ip6 daddr != ::1 dnat ip6 to ip6 daddr . %s map @dnat6" % _DNAT_KEY),
    (NFT_CHAIN_PREROUTING, "cnm:dnat4-any",
     "ip daddr != 127.0.0.0/8 fib daddr type local dnat ip to %s map @dnat4-any"
     % _DNAT_KEY),
    (NFT_CHAIN_PREROUTING, "cnm:dnat6-any",
     "ip6 daddr != ::1 fib daddr type local dnat ip6 to %s map @dnat6-any" % _DNAT_KEY),
    (NFT_CHAIN_OUTPUT, "cnm:dnat4",
     "dnat ip to ip daddr . %s map @dnat4" % _DNAT_KEY),
    (NFT_CHAIN_OUTPUT, "cnm:dnat6",
     "ip6 daddr != ::1 dnat ip6 to ip6 daddr . %s map @dnat6" % _DNAT_KEY),
    (NFT_CHAIN_OUTPUT, "cnm:dnat4-any",
     "meta nfproto ipv4 fib daddr type local dnat ip to %s map @dnat4-any" % _DNAT_KEY),
    (NFT_CHAIN_OUTPUT, "cnm:dnat6-any",
     "ip6 daddr != ::1 fib daddr type local dnat ip6 to %s map @dnat6-any" % _DNAT_KEY),
    (NFT_CHAIN_POSTROUTING, "cnm:by-subnet4", "ip saddr vmap @post4"),
    (NFT_CHAIN_POSTROUTING, "cnm:by-subnet6", "ip6 saddr vmap @post6"),
    # 127.0.0.1 mappings: the source stays 127.0.0.1 after DNAT (bridge route_localnet)
    (NFT_CHAIN_POSTROUTING, "cnm:loopback",
     "oifname @bridges ip saddr 127.0.0.0/8 masquerade"),
    # route_localnet must not let a sandbox reach the host's loopback services
    (NFT_CHAIN_RAW, "cnm:loopback", "iifname @bridges ip daddr 127.0.0.0/8 drop"),
    (NFT_CHAIN_RAW, "cnm:by-subnet4", "ip daddr vmap @raw4"),
    (NFT_CHAIN_RAW, "cnm:by-subnet6", "ip6 daddr vmap @raw6"),
)


class NftNetwork:
    """What one network owns in table inet cnm.

    ``chains``: chain name -> list of (comment, expression), in order;
    ``elements``: set name -> {key tuple: value tuple or None (plain set)}.
    """

    def __init__(self, chains=None, elements=None):
        self.chains = chains if chains is not None else {}
        self.elements = elements if elements is not None else {}


def net_chain_names(short_id):
    """The per-network chain names of a network id prefix (fwd-out, fwd-in, post, raw)."""
    return tuple(prefix + short_id for prefix in NFT_NET_CHAIN_PREFIXES)


def _quote(name):
    return '"%s"' % name


def network_objects(rules):
    """Describe ``rules`` (a NetworkRules) as chains and elements of table inet cnm.

    Pure; raises ValidationError (via ``validate_rules``) for unsafe input.
    """
    validate_rules(rules)
    br = _quote(rules.bridge)
    fwd_out, fwd_in, post, raw = net_chain_names(rules.short_id)
    out_rules = [("cnm:established", "ct state established,related accept")]
    out_rules.append(("cnm:icc", "oifname %s accept" % br) if rules.icc
                     else ("cnm:no-icc", "oifname %s drop" % br))
    if rules.internal:
        out_rules.append(("cnm:internal", "drop"))
    else:
        out_rules.append(("cnm:isolation", "oifname @bridges drop"))
        out_rules.append(("cnm:egress", "accept"))
    if rules.internal:
        in_rules = [("cnm:internal", "drop")]
    else:
        in_rules = [("cnm:established", "ct state established,related accept"),
                    ("cnm:inbound", "drop")]
    post_rules = []
    if rules.masquerade and not rules.internal:
        post_rules.append(("cnm:masquerade", "oifname != %s masquerade" % br))
    if not rules.internal:
        post_rules.append(("cnm:hairpin", "oifname %s ct status dnat masquerade" % br))
    raw_rules = []
    if rules.masquerade or rules.internal:
        raw_rules.append(("cnm:direct-access",
                          "iifname != %s fib daddr type != local drop" % br))
    net = NftNetwork(chains={fwd_out: out_rules, fwd_in: in_rules, post: post_rules,
                             raw: raw_rules})
    el = {name: {} for name in SETS}
    el["bridges"][(rules.bridge,)] = None
    el["fwd-out"][(rules.bridge,)] = ("jump", fwd_out)
    el["fwd-in"][(rules.bridge,)] = ("jump", fwd_in)
    for family in (4, 6):
        for subnet in rules.subnets_of(family):
            el["post%d" % family][(str(subnet),)] = ("jump", post)
            el["raw%d" % family][(str(subnet),)] = ("jump", raw)
        for p in rules.ports_of(family):
            name, key, target = _dnat_element(p)
            el[name][key] = target
            el["pub%d" % family][(p.container_ip, p.protocol, str(p.container_port))] = None
    net.elements = {k: v for k, v in el.items() if v}
    return net


# -- text of commands ---------------------------------------------------------------
def _key_text(set_name, key):
    quoted = SETS[set_name][2]
    return " . ".join(_quote(k) if quoted else k for k in key)


def _elem_text(set_name, key, value):
    text = _key_text(set_name, key)
    if value is None:
        return text
    return "%s : %s" % (text, " ".join(value) if value[0] == "jump" else " . ".join(value))


def _element_blocks(items):
    """Commands adding ``items`` ((set name, key, value) triples): one set block per set,
    in ``SETS`` order, each declaring the set as ``base_commands`` does (a no-op when it
    exists) with its new elements (see the module docstring for why not ``add
    element``)."""
    by_set = {}
    for name, key, value in items:
        by_set.setdefault(name, []).append(_elem_text(name, key, value))
    out = []
    for name, (kind, decl, dummy) in SETS.items():
        if name in by_set:
            out.append("add %s %s %s { %s elements = { %s } }"
                       % (kind, TABLE, name, decl, ", ".join(by_set[name])))
    return out


def _delete_element(set_name, key):
    return "delete element %s %s { %s }" % (TABLE, set_name, _key_text(set_name, key))


def _chain_refill(chain, rules, spec=None):
    """flush ``chain`` and add ``rules`` ((comment, expression) pairs) in one chain
    block; ``spec`` is a hooked chain's type/hook/priority/policy, repeated unchanged."""
    out = ["flush chain %s %s" % (TABLE, chain)]
    if rules or spec:
        body = "".join('%s comment "%s"; ' % (expr, comment) for comment, expr in rules)
        out.append("add chain %s %s { %s%s}"
                   % (TABLE, chain, spec + " " if spec else "", body))
    return out


def _chain_decls(names):
    return ["add chain %s %s" % (TABLE, n) for n in names]


def base_commands():
    """Commands that (re)create the table's skeleton idempotently, without touching
    CNM-USER's rules or any set's elements: add table/chains/sets, flush the hooked
    chains and add their rules again. Returns (chain declarations, set declarations,
    hooked chains' refills): chains must be declared before sets in one batch (the
    kernel refuses a verdict element pointing at a chain declared after a set created
    in the same batch), so callers put other chain declarations between the first two
    lists, and rules after both."""
    chains = ["add table %s" % TABLE]
    for name, spec in BASE_CHAINS:
        chains.append("add chain %s %s" % (TABLE, name) if spec is None
                      else "add chain %s %s { %s }" % (TABLE, name, spec))
    sets = ["add %s %s %s { %s }" % (kind, TABLE, name, decl)
            for name, (kind, decl, dummy) in SETS.items()]
    rules = []
    for name, spec in BASE_CHAINS:
        if spec:
            rules += _chain_refill(name, [(comment, expr) for chain, comment, expr
                                          in BASE_RULES if chain == name], spec)
    return chains, sets, rules


def _network_chain_commands(net, only=None):
    """Refills of the network's chains (all, or those named in ``only``)."""
    out = []
    for chain, rules in net.chains.items():
        if only is None or chain in only:
            out += _chain_refill(chain, rules)
    return out


def _all_elements(*nets):
    return _element_blocks((s, k, v) for net in nets for s, elems in net.elements.items()
                           for k, v in elems.items())


def render_create(rules):
    """Script for a network on a host where it may or may not exist yet.

    Idempotent: run twice, the kernel holds the same. Creates the table skeleton when
    missing (CNM-USER's rules are kept), the network's chains (flushed and refilled)
    and adds its elements. This is what the golden files pin.
    """
    net = network_objects(rules)
    chains, sets, base_rules = base_commands()
    head = chains + _chain_decls(net.chains) + sets + base_rules
    return _script(head + _network_chain_commands(net) + _all_elements(net))


def element_diff(old_net, new_net, actual=None):
    """(deletes, adds) turning ``old_net``'s elements into ``new_net``'s.

    Without ``actual`` the kernel is assumed to hold exactly ``old_net``'s elements.
    With ``actual`` (set name -> {key: value}, from ``parse_table``) deletes are limited
    to keys present and adds skip what is present already with the right value.
    """
    deletes, adds = [], []
    names = sorted(set(old_net.elements) | set(new_net.elements), key=list(SETS).index)
    for name in names:
        old = old_net.elements.get(name, {})
        new = new_net.elements.get(name, {})
        have = old if actual is None else actual.get(name, {})
        stale = [k for k in old if k not in new or new[k] != old[k]]
        if actual is not None:
            stale += [k for k in new if k in have and have[k] != new[k] and k not in stale]
        for key in stale:
            if key in have:
                deletes.append(_delete_element(name, key))
        for key, value in new.items():
            if actual is None:
                if key not in old or old[key] != value:
                    adds.append((name, key, value))
            elif key not in have or have[key] != value:
                adds.append((name, key, value))
    return deletes, _element_blocks(adds)


def render_update(old, new):
    """Script turning network ``old`` into ``new`` (same network id), assuming the
    kernel holds ``old`` exactly. A port added or removed is one to three element
    commands, computed from the changed mappings only (the cost does not grow with the
    number of mappings); option changes refill only the chains whose rules changed."""
    if old.without_ports() == new.without_ports():
        return _script(_port_commands(new, *port_delta(old, new)))
    old_net, new_net = network_objects(old), network_objects(new)
    changed = [c for c in new_net.chains if new_net.chains[c] != old_net.chains.get(c)]
    deletes, adds = element_diff(old_net, new_net)
    return _script(deletes + _network_chain_commands(new_net, only=changed) + adds)


def _port_commands(new, removed, added, gone_targets, new_targets):
    validate_structure(new)
    validate_ports(new, added)
    cmds = []
    for p in removed:
        name, key, dummy = _dnat_element(p)
        cmds.append(_delete_element(name, key))
    for family, cip, proto, cport in gone_targets:
        cmds.append(_delete_element("pub%d" % family, (cip, proto, str(cport))))
    adds = [_dnat_element(p) for p in added]
    adds += [("pub%d" % family, (cip, proto, str(cport)), None)
             for family, cip, proto, cport in new_targets]
    return cmds + _element_blocks(adds)


def _dnat_element(p):
    """(map name, key, value) of mapping ``p``'s DNAT element."""
    target = (p.container_ip, str(p.container_port))
    if p.host_ip:
        return "dnat%d" % p.family, (p.host_ip, p.protocol, str(p.host_port)), target
    return "dnat%d-any" % p.family, (p.protocol, str(p.host_port)), target


def render_reconcile(old, new, actual):
    """Script making the kernel hold ``new`` for this network whatever it holds now.

    ``actual`` is ``parse_table`` output or None (no table). Used after a fast-path
    batch failed (drift) and by ``restore_network``. Keeps CNM-USER and other
    networks; removes elements of ``old`` that ``new`` no longer has.
    """
    new_net = network_objects(new)
    old_net = network_objects(old) if old is not None else NftNetwork()
    chains, sets, base_rules = base_commands()
    deletes, adds = element_diff(old_net, new_net,
                                 actual=(actual or ParsedTable()).elements)
    head = chains + _chain_decls(new_net.chains) + sets + deletes + base_rules
    return _script(head + _network_chain_commands(new_net) + adds)


def render_remove(old):
    """Script removing network ``old`` (its chains and elements) while other networks
    of ours remain. When it is the last one, ``render_teardown`` says what goes: that
    depends on the user's rules in CNM-USER, which only the kernel knows."""
    net = network_objects(old)
    cmds = [_delete_element(s, k) for s, elems in net.elements.items() for k in elems]
    cmds += ["flush chain %s %s" % (TABLE, c) for c in net.chains]
    cmds += ["delete chain %s %s" % (TABLE, c) for c in net.chains]
    return _script(cmds)


def render_teardown(actual, keep_sets=()):
    """Script removing everything of ours once no network of ours remains, from what
    the kernel holds (``actual``: parse_table output, or None when there is no table).

    The user's rules survive, as Docker never deletes DOCKER-USER: when CNM-USER holds
    rules, the table stays with CNM-USER (and whatever else the user added to it)
    and every chain and set of ours goes; no hooked chain jumps to CNM-USER then, so
    its rules wait, unevaluated, for the next network, whose skeleton jumps to them
    again. An empty CNM-USER goes with the whole table: nothing of ours is left. ""
    when there is nothing to remove. ``keep_sets``: names of our sets the user's rules
    use (``sets_used``), emptied instead of deleted (the kernel refuses to delete a set
    a rule refers to).
    """
    if actual is None:
        return ""
    if not actual.chains.get(CHAIN_USER):
        return _script(["delete table %s" % TABLE])
    hooked = [name for name, spec in BASE_CHAINS if spec and name in actual.chains]
    nets = [c for c in actual.chains if _NET_CHAIN.match(c)]
    cmds = ["flush chain %s %s" % (TABLE, c) for c in hooked + nets]
    cmds += ["%s %s %s %s" % ("flush" if name in keep_sets else "delete", SETS[name][0],
                              TABLE, name)
             for name in SETS if name in actual.elements]
    cmds += ["delete chain %s %s" % (TABLE, c) for c in hooked + nets]
    return _script(cmds)


def sets_used(doc):
    """Names of the sets and maps the rules of ``doc`` (``nft -j`` output) refer to
    (``@name`` anywhere in their expressions)."""
    found = set()
    todo = [item["rule"].get("expr") for item in doc.get("nftables", []) if "rule" in item]
    while todo:
        value = todo.pop()
        if isinstance(value, dict):
            todo.extend(value.values())
        elif isinstance(value, list):
            todo.extend(value)
        elif isinstance(value, str) and value.startswith("@"):
            found.add(value[1:])
    return found


def render_remove_reconcile(old, actual):
    """Like ``render_remove(old)`` but only for what ``actual`` holds."""
    net = network_objects(old)
    cmds = [_delete_element(s, k) for s, elems in net.elements.items() for k in elems
            if k in actual.elements.get(s, {})]
    present = [c for c in net.chains if c in actual.chains]
    cmds += ["flush chain %s %s" % (TABLE, c) for c in present]
    cmds += ["delete chain %s %s" % (TABLE, c) for c in present]
    return _script(cmds)


def render_restore(networks, actual=None):
    """Script re-creating everything of ours for ``networks`` (a list of NetworkRules)
    from whatever the kernel holds (``actual``: parse_table output or None).

    Sets are flushed and refilled, per-network chains of networks not listed are
    deleted, CNM-USER keeps its rules. With no networks, everything of ours goes but
    the user's rules (``render_teardown``).
    """
    if not networks:
        return render_teardown(actual)
    nets = [network_objects(r) for r in networks]
    wanted = [c for n in nets for c in n.chains]
    stale = []
    if actual is not None:
        stale = [c for c in actual.chains if _NET_CHAIN.match(c) and c not in wanted]
    chains, sets, base_rules = base_commands()
    cmds = chains + _chain_decls(wanted) + sets
    cmds += ["flush %s %s %s" % (SETS[name][0], TABLE, name) for name in SETS]
    cmds += ["flush chain %s %s" % (TABLE, c) for c in stale]
    cmds += ["delete chain %s %s" % (TABLE, c) for c in stale]
    cmds += base_rules
    for net in nets:
        cmds += _network_chain_commands(net)
    return _script(cmds + _all_elements(*nets))


def _script(cmds):
    return "".join(c + "\n" for c in cmds)


# -- reading the kernel (nft -j list table inet cnm) ---------------------------------
class ParsedTable:
    """Our table as the kernel holds it: chains (name -> list of rule comments, None
    for an uncommented rule) and elements (set name -> {key tuple: value tuple|None})."""

    def __init__(self, chains=None, elements=None):
        self.chains = chains if chains is not None else {}
        self.elements = elements if elements is not None else {}


def _scalar(value):
    if isinstance(value, dict):
        if "prefix" in value:
            return "%s/%d" % (value["prefix"]["addr"], value["prefix"]["len"])
        if "range" in value:
            return "%s-%s" % tuple(_scalar(v) for v in value["range"])
        if "elem" in value:
            return _scalar(value["elem"].get("val"))
    return str(value)


def _key(value):
    if isinstance(value, dict) and "elem" in value:
        value = value["elem"].get("val")
    if isinstance(value, dict) and "concat" in value:
        return tuple(_scalar(v) for v in value["concat"])
    return (_scalar(value),)


def _value(value):
    if isinstance(value, dict):
        for verdict in ("jump", "goto"):
            if verdict in value:
                return (verdict, value[verdict]["target"])
        if "concat" in value:
            return tuple(_scalar(v) for v in value["concat"])
    return (_scalar(value),)


def parse_table(doc):
    """Turn ``nft -j list table inet cnm`` output (parsed JSON) into a ParsedTable.

    Interval subnets are normalised through ``ipaddress`` so they compare with what
    ``network_objects`` renders."""
    parsed = ParsedTable()
    for item in doc.get("nftables", []):
        if "chain" in item:
            parsed.chains.setdefault(item["chain"]["name"], [])
        elif "rule" in item:
            rule = item["rule"]
            parsed.chains.setdefault(rule["chain"], []).append(rule.get("comment"))
        elif "set" in item or "map" in item:
            s = item.get("set") or item.get("map")
            elems = parsed.elements.setdefault(s["name"], {})
            for e in s.get("elem", []):
                if "map" in item:
                    key, value = _key(e[0]), _value(e[1])
                else:
                    key, value = _key(e), None
                elems[tuple(_normalise_part(k) for k in key)] = value
    return parsed


def _normalise_part(text):
    if "/" in text:
        try:
            return str(ipaddress.ip_network(text, strict=False))
        except ValueError:
            return text
    return text


def check_network(rules, actual):
    """Human-readable differences between what ``rules`` needs and ``actual``
    (a ParsedTable, or None when the table is missing). [] means in sync.

    Compares the base chains' rules and the network's chains rule by rule (by comment),
    and the network's elements; also reports port elements pointing into the network's
    subnets that ``rules`` does not have (stale mappings).
    """
    if actual is None:
        return ["nftables: table %s is missing" % TABLE]
    problems = []
    net = network_objects(rules)
    expected = {}
    for chain, comment, dummy in BASE_RULES:
        expected.setdefault(chain, []).append(comment)
    for chain, items in net.chains.items():
        expected[chain] = [comment for comment, dummy in items]
    for name, dummy in BASE_CHAINS:
        if name not in actual.chains:
            problems.append("nftables: chain %s %s is missing" % (TABLE, name))
    for chain, comments in expected.items():
        have = actual.chains.get(chain)
        if have is None:
            if chain not in [n for n, dummy in BASE_CHAINS]:
                problems.append("nftables: chain %s %s is missing" % (TABLE, chain))
        elif have != comments:
            problems.append("nftables: chain %s %s has rules [%s], expected [%s]" % (
                TABLE, chain, ", ".join(str(c) for c in have), ", ".join(comments)))
    for name in SETS:
        if name not in actual.elements:
            problems.append("nftables: %s %s %s is missing" % (SETS[name][0], TABLE, name))
    for name, elems in net.elements.items():
        have = actual.elements.get(name)
        if have is None:
            continue
        for key, value in elems.items():
            if key not in have:
                problems.append("nftables: element { %s } missing from %s"
                                % (_elem_text(name, key, value), name))
            elif have[key] != value:
                problems.append("nftables: element { %s } of %s is { %s }" % (
                    _elem_text(name, key, value), name, _elem_text(name, key, have[key])))
    subnets = rules.subnets_of(4) + rules.subnets_of(6)
    for name in ("dnat4", "dnat4-any", "dnat6", "dnat6-any", "pub4", "pub6"):
        wanted = net.elements.get(name, {})
        for key, value in actual.elements.get(name, {}).items():
            target = value[0] if value else key[0]
            if key in wanted or not _inside(target, subnets):
                continue
            problems.append("nftables: stale element { %s } in %s"
                            % (_elem_text(name, key, value), name))
    return problems


def _inside(address, subnets):
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip.version == n.version and ip in n for n in subnets)
