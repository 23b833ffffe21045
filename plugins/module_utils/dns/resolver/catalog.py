"""The catalog: every sandbox's names and addresses, and the answer tables built from them.

What each sandbox brings is a ``Spec``; the catalog turns the specs into one answer
table per set of networks (question key -> prebuilt entry, see wire.py), so a sandbox
only ever sees the names of the networks it is attached to, as Docker's resolver does.
"""
import functools
import ipaddress

from .wire import (
    QA, QAAAA, QPTR, TYPE_A, TYPE_AAAA, TYPE_PTR, answer_entry, name_wire, reverse_wire,
)

DEFAULT_TTL = 600


@functools.lru_cache(maxsize=65536)
def _address(value):
    if not value:
        return None
    try:
        return ipaddress.ip_interface(str(value).strip()).ip
    except ValueError:
        return None


def _ttl(value):
    try:
        return max(0, min(int(value), 0x7FFFFFFF))
    except (TypeError, ValueError):
        return DEFAULT_TTL


class Spec:
    """What one sandbox brings: where it listens and its records on each network.

    ``netns`` is None for a sandbox that only has records (nothing listens for it);
    ``nets`` are the networks whose names it resolves; ``records`` maps a network to
    ``(names, ipv4, ipv6, seq)`` (``seq`` orders round-robin answers: older first).
    """

    __slots__ = ("netns", "nets", "forward", "upstreams", "records")

    def __init__(self, netns, nets, forward, upstreams, records):
        self.netns, self.nets, self.forward = netns, nets, forward
        self.upstreams, self.records = upstreams, records


class Catalog:
    """Every sandbox's records and the answer tables built from them, kept up to date
    one sandbox at a time.

    Sandboxes attached to the same set of networks share one table (question key ->
    prebuilt entry) and one set of local name keys. ``set`` changes only the entries of
    the names and addresses the sandbox had or has, in place, so its cost does not
    depend on how many sandboxes exist. Tables are read by the serving threads while
    the control thread updates them: each change is one dict/set operation (atomic in
    CPython), and a query sees either the old or the new entry.
    """

    def __init__(self, ttl=DEFAULT_TTL):
        self.ttl = _ttl(ttl)
        self.specs = {}          # sandbox -> Spec
        self.addrs = {}          # net -> {name wire: {sandbox: (v4, v6)}}
        self.ptrs = {}           # net -> {reverse wire: {sandbox: target wire}}
        self.tables = {}         # nets -> [table, names, users]
        self.views = {}          # sandbox with netns -> (table, names, forward, upstreams)

    @classmethod
    def from_specs(cls, specs, ttl=DEFAULT_TTL):
        """A catalog holding ``specs`` ({sandbox: Spec}); older records first."""
        cat = cls(ttl)

        def age(name):
            return (min([r[3] for r in specs[name].records.values()] or [0]), name)
        for name in sorted(specs, key=age):
            cat.set(name, specs[name])
        return cat

    def desired(self):
        """``{sandbox: (netns, view)}`` of the sandboxes that listen."""
        return {name: (self.specs[name].netns, view) for name, view in self.views.items()}

    # -- contributions of one sandbox
    def _keys(self, name, net, rec):
        """(address keys, pointer keys with their target) of one record."""
        names, ipv4, ipv6, dummy = rec
        netl = net.lower()
        v4, v6 = _address(ipv4), _address(ipv6)
        v4 = v4 if v4 is not None and v4.version == 4 else None
        v6 = v6 if v6 is not None and v6.version == 6 else None
        wires = []
        for text in names:
            for full in (text, "%s.%s" % (text, netl)):
                w = name_wire(full)
                if w is not None and w not in wires:
                    wires.append(w)
        ptrs = []
        # the sandbox's own name comes first in its record (a remote endpoint's file
        # name is the host agent's, not the sandbox's)
        target = name_wire("%s.%s" % (names[0] if names else name, netl))
        if target is not None:
            ptrs = [(reverse_wire(ip), target) for ip in (v4, v6) if ip is not None]
        return wires, (v4, v6), ptrs

    def _withdraw(self, name, spec, touched):
        for net, rec in spec.records.items():
            wires, dummy, ptrs = self._keys(name, net, rec)
            for index, keys in ((self.addrs.get(net, {}), wires),
                                (self.ptrs.get(net, {}), [w for w, dummy in ptrs])):
                for w in keys:
                    holders = index.get(w)
                    if holders is not None:
                        holders.pop(name, None)
                        if not holders:
                            del index[w]
                    touched.setdefault(net, set()).add(w)

    def _contribute(self, name, spec, touched):
        for net, rec in spec.records.items():
            wires, ips, ptrs = self._keys(name, net, rec)
            addrs = self.addrs.setdefault(net, {})
            rev = self.ptrs.setdefault(net, {})
            for w in wires:
                addrs.setdefault(w, {})[name] = ips
                touched.setdefault(net, set()).add(w)
            for w, target in ptrs:
                rev.setdefault(w, {})[name] = target
                touched.setdefault(net, set()).add(w)

    # -- tables
    def _entries(self, nets, w):
        """(A entry, AAAA entry, PTR entry, is a local name) of name key ``w``."""
        four, six, targets = [], [], []
        named = False
        for net in nets:
            holders = self.addrs.get(net, {}).get(w)
            if holders:
                named = True
                for v4, v6 in holders.values():
                    if v4 is not None and v4 not in four:
                        four.append(v4)
                    if v6 is not None and v6 not in six:
                        six.append(v6)
            holders = self.ptrs.get(net, {}).get(w)
            if holders:
                for target in holders.values():
                    if target not in targets:
                        targets.append(target)
        ttl = self.ttl
        a = aaaa = None
        if named:
            a = answer_entry(TYPE_A, ttl, tuple(ip.packed for ip in four))
            aaaa = answer_entry(TYPE_AAAA, ttl, tuple(ip.packed for ip in six))
        ptr = answer_entry(TYPE_PTR, ttl, tuple(targets)) if targets else None
        return a, aaaa, ptr, named or bool(targets)

    def _refresh(self, tab, nets, w):
        table, names = tab[0], tab[1]
        a, aaaa, ptr, local = self._entries(nets, w)
        for key, ent in ((w + QA, a), (w + QAAAA, aaaa), (w + QPTR, ptr)):
            if ent is None:
                table.pop(key, None)
            else:
                table[key] = ent
        if local:
            names.add(w)
        else:
            names.discard(w)

    def _build(self, nets):
        tab = [{}, set(), 0]
        keys = set()
        for net in nets:
            keys.update(self.addrs.get(net, ()))
            keys.update(self.ptrs.get(net, ()))
        for w in keys:
            self._refresh(tab, nets, w)
        return tab

    def set(self, name, spec):
        """Replace sandbox ``name``'s Spec (None: remove it). Returns True when its own
        view changed (it must be re-registered with the serving threads)."""
        old = self.specs.pop(name, None)
        touched = {}
        if old is not None:
            self._withdraw(name, old, touched)
        if spec is not None:
            self.specs[name] = spec
            self._contribute(name, spec, touched)
        fresh = None
        old_nets = old.nets if old is not None and old.netns else None
        new_nets = spec.nets if spec is not None and spec.netns else None
        if old_nets != new_nets:
            if new_nets is not None:
                if new_nets not in self.tables:
                    fresh = self.tables[new_nets] = self._build(new_nets)
                self.tables[new_nets][2] += 1
            if old_nets is not None:
                tab = self.tables[old_nets]
                tab[2] -= 1
                if tab[2] <= 0:
                    del self.tables[old_nets]
        for nets, tab in self.tables.items():
            if tab is fresh:
                continue
            keys = set()
            for net in nets:
                keys.update(touched.get(net, ()))
            for w in keys:
                self._refresh(tab, nets, w)
        before = self.views.get(name)
        if new_nets is None:
            self.views.pop(name, None)
        else:
            tab = self.tables[new_nets]
            self.views[name] = (tab[0], tab[1], spec.forward, spec.upstreams)
        return self.views.get(name) != before
