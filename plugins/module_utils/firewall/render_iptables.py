"""Pure rendering of networks' rules as iptables-restore scripts (one per family).

Layout (same names in iptables and ip6tables; the tables ``filter``, ``nat``, ``raw``):

* ``filter``: ``FORWARD -j CNM-FORWARD`` (inserted first). CNM-FORWARD jumps to
  ``CNM-USER`` (created once, never flushed; when the last network goes it stays with
  the user's rules, removed only when empty), then to ``CNM-PUB`` for DNATed traffic,
  which sends it to the target bridge's ``CNM-PUB-<id12>`` (one ACCEPT per published
  container port); then per network ``-i <bridge> -j CNM-FO-<id12>`` (traffic leaving
  the bridge: established, ICC, internal, isolation through ``CNM-ISOLATION``, egress)
  and ``-o <bridge> -j CNM-FI-<id12>`` (traffic entering it: established only).
* ``nat``: ``PREROUTING`` (not to 127.0.0.0/8) and ``OUTPUT`` jump to ``CNM-DNAT`` for
  local destinations, which jumps to every network's ``CNM-DN-<id12>`` (one DNAT rule
  per mapping); ``POSTROUTING -j CNM-POSTROUTING``: masquerade of the subnet leaving by
  another interface, of hairpin (DNATed traffic from the bridge back into it) and of
  127.0.0.0/8 sources entering the bridge.
* ``raw``: ``PREROUTING -j CNM-RAW``: drop direct access to a subnet from another
  interface, and packets from a bridge to 127.0.0.0/8 (route_localnet is on there).

Every rule is written exactly as ``iptables-save`` prints it, so the state read back
compares line by line with what is rendered (drift check, precise deletes). A port
mapping is two lines in its network's own chains (one DNAT, one ACCEPT), appended or
deleted on their own: ``iptables-restore --noflush`` never rewrites the chains holding
other mappings, and removing a network flushes its chains instead of deleting rules
one by one.
"""
from ..constants import (CHAIN_USER, IPT_CHAIN_DNAT, IPT_CHAIN_FORWARD,
                         IPT_CHAIN_ISOLATION, IPT_CHAIN_POSTROUTING, IPT_CHAIN_PREFIX,
                         IPT_CHAIN_PUBLISHED, IPT_CHAIN_RAW, IPT_NET_CHAIN_PREFIXES)
from .model import port_delta, validate_ports, validate_rules, validate_structure

TABLES = ("filter", "nat", "raw")
FAMILIES = (4, 6)
LOOPBACK = {4: "127.0.0.0/8", 6: "::1/128"}
HOST = {4: "/32", 6: "/128"}

# Our chains that exist while any network exists: (table, chain).
BASE_CHAINS = (
    ("filter", IPT_CHAIN_FORWARD), ("filter", CHAIN_USER), ("filter", IPT_CHAIN_PUBLISHED),
    ("filter", IPT_CHAIN_ISOLATION),
    ("nat", IPT_CHAIN_DNAT), ("nat", IPT_CHAIN_POSTROUTING),
    ("raw", IPT_CHAIN_RAW),
)
# Lines that must open CNM-FORWARD, in this order.
FORWARD_HEAD = ("-j %s" % CHAIN_USER,
                "-m conntrack --ctstate DNAT -j %s" % IPT_CHAIN_PUBLISHED)
# Per-network chains whose rules are a set (one per mapping): order carries no meaning.
_UNORDERED = IPT_NET_CHAIN_PREFIXES[2:]


def builtin_jumps(family):
    """(table, built-in chain, spec) jumps into our chains, each inserted at position 1."""
    return (
        ("filter", "FORWARD", "-j %s" % IPT_CHAIN_FORWARD),
        ("nat", "PREROUTING", "! -d %s -m addrtype --dst-type LOCAL -j %s"
         % (LOOPBACK[family], IPT_CHAIN_DNAT)),
        # IPv6 has no route_localnet: ::1 is never DNATed
        ("nat", "OUTPUT", ("-m addrtype --dst-type LOCAL -j %s" % IPT_CHAIN_DNAT)
         if family == 4 else "! -d ::1/128 -m addrtype --dst-type LOCAL -j %s"
         % IPT_CHAIN_DNAT),
        ("nat", "POSTROUTING", "-j %s" % IPT_CHAIN_POSTROUTING),
        ("raw", "PREROUTING", "-j %s" % IPT_CHAIN_RAW),
    )


def net_chain_names(short_id):
    """Per-network chains of a network id prefix: (CNM-FO-, CNM-FI-, CNM-PUB-, CNM-DN-)."""
    return tuple(prefix + short_id for prefix in IPT_NET_CHAIN_PREFIXES)


def is_ours(chain):
    """True for a chain name this collection owns."""
    return chain == CHAIN_USER or chain.startswith(IPT_CHAIN_PREFIX + "-")


def _same(chain, have, want):
    """Chain contents compare in order, except the per-mapping chains (as sets)."""
    if have is None:
        return False
    if chain.startswith(_UNORDERED):
        return len(have) == len(set(have)) and set(have) == set(want)
    return have == want


class IptNetwork:
    """What one network owns in one family.

    ``own``: (table, chain) -> lines of chains only this network uses;
    ``shared``: (table, chain) -> lines this network adds to shared chains (order-free).
    """

    def __init__(self, own=None, shared=None):
        self.own = own if own is not None else {}
        self.shared = shared if shared is not None else {}


def _addr(ip, family):
    return "%s%s" % (ip, HOST[family])


def _dport(protocol, port):
    return "-p %s -m %s --dport %d" % (protocol, protocol, port)


def dnat_line(p):
    """The CNM-DN-<id> rule of mapping ``p``."""
    dest = "-d %s " % _addr(p.host_ip, p.family) if p.host_ip else ""
    to = ("%s:%d" if p.family == 4 else "[%s]:%d") % (p.container_ip, p.container_port)
    return "%s%s -j DNAT --to-destination %s" % (dest, _dport(p.protocol, p.host_port), to)


def pub_line(bridge, family, cip, protocol, cport):
    """The CNM-PUB-<id> rule accepting DNATed traffic to one container port."""
    return "-d %s -o %s %s -j ACCEPT" % (_addr(cip, family), bridge, _dport(protocol, cport))


def network_objects(rules, family):
    """Describe ``rules`` in ``family`` (4 or 6) as own chains and shared-chain lines.

    Filter rules (ICC, isolation, internal) are rendered for both families whatever the
    subnets, like the nft backend's inet table does; nat and raw rules, and the port
    chains, only for the families the network has subnets of. Pure; raises
    ValidationError for bad input.
    """
    validate_rules(rules)
    br = rules.bridge
    fo, fi, pub, dn = net_chain_names(rules.short_id)
    out = ["-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
           "-o %s -j %s" % (br, "ACCEPT" if rules.icc else "DROP")]
    if rules.internal:
        out.append("-j DROP")
        inside = ["-j DROP"]
    else:
        out += ["-j %s" % IPT_CHAIN_ISOLATION, "-j ACCEPT"]
        inside = ["-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT", "-j DROP"]
    net = IptNetwork(own={("filter", fo): out, ("filter", fi): inside})
    shared = {
        ("filter", IPT_CHAIN_FORWARD): ["-i %s -j %s" % (br, fo), "-o %s -j %s" % (br, fi)],
        ("filter", IPT_CHAIN_ISOLATION): ["-o %s -j DROP" % br],
        ("filter", IPT_CHAIN_PUBLISHED): [],
        ("nat", IPT_CHAIN_DNAT): [],
        ("nat", IPT_CHAIN_POSTROUTING): [],
        ("raw", IPT_CHAIN_RAW): [],
    }
    subnets = rules.subnets_of(family)
    if subnets and not rules.internal:
        ports = rules.ports_of(family)
        net.own[("filter", pub)] = _unique(pub_line(br, family, p.container_ip, p.protocol,
                                                    p.container_port) for p in ports)
        net.own[("nat", dn)] = [dnat_line(p) for p in ports]
        shared[("filter", IPT_CHAIN_PUBLISHED)].append("-o %s -j %s" % (br, pub))
        shared[("nat", IPT_CHAIN_DNAT)].append("-j %s" % dn)
    for subnet in subnets:
        if rules.masquerade and not rules.internal:
            shared[("nat", IPT_CHAIN_POSTROUTING)].append(
                "-s %s ! -o %s -j MASQUERADE" % (subnet, br))
        if not rules.internal:
            shared[("nat", IPT_CHAIN_POSTROUTING)].append(
                "-s %s -o %s -m conntrack --ctstate DNAT -j MASQUERADE" % (subnet, br))
        if rules.masquerade or rules.internal:
            shared[("raw", IPT_CHAIN_RAW)].append(
                "-d %s ! -i %s -m addrtype ! --dst-type LOCAL -j DROP" % (subnet, br))
    if family == 4 and subnets:
        if not rules.internal:
            shared[("nat", IPT_CHAIN_POSTROUTING)].append(
                "-s 127.0.0.0/8 -o %s -j MASQUERADE" % br)
        shared[("raw", IPT_CHAIN_RAW)].append("-d 127.0.0.0/8 -i %s -j DROP" % br)
    net.shared = {k: _unique(v) for k, v in shared.items() if v}
    return net


def _unique(lines):
    seen, out = set(), []
    for line in lines:
        if line not in seen:
            seen.add(line)
            out.append(line)
    return out


# -- the state of one family, as iptables-save shows it --------------------------------
class SavedFamily:
    """Tables of one family: table -> {chain: [rule specs in order]} (built-ins too)."""

    def __init__(self, tables=None):
        self.tables = tables if tables is not None else {}

    def chain(self, table, chain):
        """Rules of ``chain`` (None when the chain does not exist)."""
        return self.tables.get(table, {}).get(chain)


def parse_save(text):
    """Parse ``iptables-save`` output into a SavedFamily."""
    saved = SavedFamily()
    table = None
    for line in text.splitlines():
        if line.startswith("*"):
            table = saved.tables.setdefault(line[1:].strip(), {})
        elif line.startswith(":") and table is not None:
            table.setdefault(line[1:].split()[0], [])
        elif line.startswith("-A ") and table is not None:
            dummy, chain, spec = line.split(" ", 2)
            table.setdefault(chain, []).append(spec)
    return saved


# -- planning: a list of (table, restore line) ---------------------------------------
class Plan:
    """Lines for iptables-restore --noflush, grouped by table in a fixed order."""

    def __init__(self):
        self.decl = {t: [] for t in TABLES}
        self.ops = {t: [] for t in TABLES}

    def declare(self, table, chain):
        """Create ``chain``, or flush it when it exists (iptables-restore semantics)."""
        if chain not in self.decl[table]:
            self.decl[table].append(chain)

    def op(self, table, line):
        """Append one restore line (``-A``/``-I``/``-D``/``-F``/``-X``) to ``table``."""
        self.ops[table].append(line)

    def script(self):
        """The restore script; "" when there is nothing to do."""
        out = []
        for t in TABLES:
            if not self.decl[t] and not self.ops[t]:
                continue
            out.append("*%s" % t)
            out += [":%s - [0:0]" % c for c in self.decl[t]]
            out += self.ops[t]
            out.append("COMMIT")
        return "".join(line + "\n" for line in out)


def _has_networks(saved, excluding=None):
    lines = saved.chain("filter", IPT_CHAIN_FORWARD) or []
    return any(line.startswith("-i ") and line != excluding for line in lines)


def plan_fast(old, new, family, deletes=True):
    """Restore script turning ``old`` into ``new`` assuming the kernel holds ``old``
    exactly and both differ only in ports: single-line deletes and appends in the
    network's CNM-DN/CNM-PUB chains, computed from the changed mappings only. Without
    ``deletes``, only the appends (the caller deletes by handle, see iptables_nft)."""
    validate_structure(new)
    removed, added, gone, fresh = port_delta(old, new)
    validate_ports(new, added)
    if new.internal or not new.subnets_of(family):
        return ""
    dummy, dummy2, pub, dn = net_chain_names(new.short_id)
    plan = Plan()
    if not deletes:
        removed, gone = [], []
    for p in removed:
        if p.family == family:
            plan.op("nat", "-D %s %s" % (dn, dnat_line(p)))
    for fam, cip, proto, cport in gone:
        if fam == family:
            plan.op("filter", "-D %s %s" % (pub, pub_line(new.bridge, fam, cip, proto, cport)))
    for p in added:
        if p.family == family:
            plan.op("nat", "-A %s %s" % (dn, dnat_line(p)))
    for fam, cip, proto, cport in fresh:
        if fam == family:
            plan.op("filter", "-A %s %s" % (pub, pub_line(new.bridge, fam, cip, proto, cport)))
    return plan.script()


def plan_apply(saved, old, new, family):
    """Restore script making the kernel (``saved``, this family's iptables-save) hold
    ``new`` for this network instead of ``old`` (either may be None).

    Creates our base chains and jumps when missing (CNM-USER is only ever created, never
    declared again: that would flush it), rewrites the network's own chains when they
    differ, deletes only lines that are present and appends only lines that are
    missing. When ``new`` is None and no other network remains, removes every chain and
    jump of ours in this family but CNM-USER with the user's rules (``_plan_teardown``).
    """
    plan = Plan()
    o = network_objects(old, family) if old is not None else IptNetwork()
    if new is None:
        fo = o.shared[("filter", IPT_CHAIN_FORWARD)][0]
        if not _has_networks(saved, excluding=fo):
            return _plan_teardown(saved, family, plan).script()
        _delete_present(plan, saved, o, None)
        _drop_chains(plan, saved, o.own)
        return plan.script()
    n = network_objects(new, family)
    _ensure_base(plan, saved, family)
    # CNM-FORWARD: the head first, then every network's dispatch lines
    current = saved.chain("filter", IPT_CHAIN_FORWARD) or []
    stale = set(o.shared.get(("filter", IPT_CHAIN_FORWARD), [])) - set(
        n.shared[("filter", IPT_CHAIN_FORWARD)])
    body = [line for line in current if line not in FORWARD_HEAD and line not in stale]
    body += [line for line in n.shared[("filter", IPT_CHAIN_FORWARD)] if line not in body]
    wanted = list(FORWARD_HEAD) + body
    for (table, chain), lines in n.own.items():
        if not _same(chain, saved.chain(table, chain), lines):
            plan.declare(table, chain)
            plan.ops[table] += ["-A %s %s" % (chain, line) for line in lines]
    if current != wanted:
        plan.declare("filter", IPT_CHAIN_FORWARD)
        plan.ops["filter"] += ["-A %s %s" % (IPT_CHAIN_FORWARD, line) for line in wanted]
    skip = {("filter", IPT_CHAIN_FORWARD)}
    _delete_present(plan, saved, o, n, skip)
    for (table, chain), lines in sorted(n.shared.items()):
        if (table, chain) in skip:
            continue
        have = saved.chain(table, chain) or []
        for line in lines:
            if line not in have:
                plan.op(table, "-A %s %s" % (chain, line))
    _drop_chains(plan, saved, {k: v for k, v in o.own.items() if k not in n.own})
    return plan.script()


def _drop_chains(plan, saved, chains):
    """Flush and delete ``chains`` (after the jumps to them were deleted)."""
    for (table, chain) in chains:
        if saved.chain(table, chain) is not None:
            plan.op(table, "-F %s" % chain)
            plan.op(table, "-X %s" % chain)


def _delete_present(plan, saved, old_net, new_net, skip=()):
    for (table, chain), lines in sorted(old_net.shared.items()):
        if (table, chain) in skip:
            continue
        have = list(saved.chain(table, chain) or [])
        keep = new_net.shared.get((table, chain), []) if new_net else []
        for line in lines:
            while line not in keep and line in have:
                have.remove(line)
                plan.op(table, "-D %s %s" % (chain, line))


def _ensure_base(plan, saved, family):
    for table, chain in BASE_CHAINS:
        if saved.chain(table, chain) is None:
            plan.declare(table, chain)
    for table, builtin, spec in builtin_jumps(family):
        if spec not in (saved.chain(table, builtin) or []):
            plan.op(table, "-I %s 1 %s" % (builtin, spec))


def _plan_teardown(saved, family, plan):
    """Remove every jump and chain of ours in this family, but the user's rules: a
    CNM-USER holding rules stays as it is (Docker never deletes DOCKER-USER), with no
    jump to it until the next network's CNM-FORWARD jumps to it again; an empty one
    goes with the rest."""
    for table, builtin, spec in builtin_jumps(family):
        for line in saved.chain(table, builtin) or []:
            if line == spec:
                plan.op(table, "-D %s %s" % (builtin, spec))
    for table in TABLES:
        ours = [c for c in saved.tables.get(table, {}) if is_ours(c) and not (
            c == CHAIN_USER and saved.chain(table, c))]
        for chain in ours:
            plan.op(table, "-F %s" % chain)
        for chain in ours:
            plan.op(table, "-X %s" % chain)
    return plan


def plan_restore(saved, networks, family):
    """Restore script re-creating everything of ours in this family for ``networks``
    (NetworkRules list), from whatever ``saved`` holds: our chains are flushed and
    refilled (CNM-USER excepted), chains of networks not listed are deleted, missing
    jumps are inserted. With no networks, everything of ours is removed but CNM-USER
    with the user's rules."""
    plan = Plan()
    if not networks:
        return _plan_teardown(saved, family, plan).script()
    nets = [network_objects(r, family) for r in networks]
    _ensure_base(plan, saved, family)
    wanted = {}
    for table, chain in BASE_CHAINS:
        if chain != CHAIN_USER:
            wanted[(table, chain)] = []
    wanted[("filter", IPT_CHAIN_FORWARD)] = list(FORWARD_HEAD)
    for net in nets:
        for key, lines in net.own.items():
            wanted[key] = list(lines)
        for key, lines in net.shared.items():
            wanted.setdefault(key, []).extend(lines)
    for (table, chain), lines in wanted.items():
        plan.declare(table, chain)
        plan.ops[table] += ["-A %s %s" % (chain, line) for line in lines]
    for table in TABLES:
        for chain in saved.tables.get(table, {}):
            if is_ours(chain) and chain != CHAIN_USER and (table, chain) not in wanted:
                plan.op(table, "-F %s" % chain)
                plan.op(table, "-X %s" % chain)
    return plan.script()


def render_create(rules, family):
    """Script for ``rules`` on a host without anything of ours (the golden files)."""
    return plan_apply(SavedFamily(), None, rules, family)


def check_network(rules, saved, family):
    """Human-readable differences between what ``rules`` needs in ``family`` and
    ``saved`` (this family's iptables-save). [] means in sync. Rules of the network's
    port chains that ``rules`` does not have are reported as stale."""
    tool = "iptables" if family == 4 else "ip6tables"
    problems = []
    net = network_objects(rules, family)
    for table, chain in BASE_CHAINS:
        if saved.chain(table, chain) is None:
            problems.append("%s: chain %s of table %s is missing" % (tool, chain, table))
    for table, builtin, spec in builtin_jumps(family):
        if spec not in (saved.chain(table, builtin) or []):
            problems.append("%s: rule '-A %s %s' (table %s) is missing"
                            % (tool, builtin, spec, table))
    forward = saved.chain("filter", IPT_CHAIN_FORWARD) or []
    if forward[:len(FORWARD_HEAD)] != list(FORWARD_HEAD):
        problems.append("%s: chain %s does not start with %s" % (
            tool, IPT_CHAIN_FORWARD, " / ".join(FORWARD_HEAD)))
    for (table, chain), lines in net.own.items():
        have = saved.chain(table, chain)
        if have is None:
            problems.append("%s: chain %s of table %s is missing" % (tool, chain, table))
        elif chain.startswith(_UNORDERED):
            problems += ["%s: rule '-A %s %s' (table %s) is missing"
                         % (tool, chain, line, table) for line in lines if line not in have]
            problems += ["%s: stale rule '-A %s %s' (table %s)" % (tool, chain, line, table)
                         for line in have if line not in lines]
        elif have != lines:
            problems.append("%s: chain %s has [%s], expected [%s]" % (
                tool, chain, "; ".join(have), "; ".join(lines)))
    for (table, chain), lines in sorted(net.shared.items()):
        have = saved.chain(table, chain) or []
        for line in lines:
            if line not in have:
                problems.append("%s: rule '-A %s %s' (table %s) is missing"
                                % (tool, chain, line, table))
    return problems
