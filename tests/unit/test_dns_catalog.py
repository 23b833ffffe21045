"""The resolver's catalog updated one sandbox at a time answers like one built whole."""
import random

from ansible_collections.cnm.core.plugins.module_utils.dns.resolver import catalog, wire

wire.import_dnspython()

NETS = ("app", "db", "intnet")
NAMES = ("web", "api", "cache", "worker")


def random_spec(rng, name, seq):
    records = {}
    for net in rng.sample(NETS, rng.randint(1, 2)):
        names = [name] + rng.sample(NAMES, rng.randint(0, 2))
        ipv4 = "10.%d.0.%d" % (NETS.index(net), rng.randint(2, 9))
        ipv6 = "fd00:%d::%d" % (NETS.index(net), rng.randint(2, 9)) if rng.random() < 0.3 \
            else None
        records[net] = (names, ipv4, ipv6, seq)
    netns = "/x/%s" % name if rng.random() < 0.8 else None
    return catalog.Spec(netns, tuple(sorted(records)), rng.random() < 0.7, None, records)


def answers(cat):
    """{sandbox: ({key: sorted record set}, local names)}: what each view answers,
    independent of the order of round-robin records."""
    out = {}
    for name, view in cat.views.items():
        table = {key: tuple(sorted(entry[3])) for key, entry in view[0].items()}
        out[name] = (table, frozenset(view[1]), view[2], view[3])
    return out


def test_incremental_updates_match_a_catalog_built_from_scratch():
    rng = random.Random(7)
    cat = catalog.Catalog(ttl=60)
    specs = {}
    for step in range(300):
        name = "s%d" % rng.randint(0, 11)
        if name in specs and rng.random() < 0.3:
            del specs[name]
            cat.set(name, None)
        else:
            specs[name] = random_spec(rng, name, step)
            cat.set(name, specs[name])
        assert answers(cat) == answers(catalog.Catalog.from_specs(specs, ttl=60)), step
    assert set(cat.tables) == {s.nets for s in specs.values() if s.netns}


def test_a_removed_name_stops_answering_and_a_shared_alias_keeps_the_other_address():
    cat = catalog.Catalog()
    cat.set("a", catalog.Spec("/a", ("app",), True, None,
                              {"app": (["a", "api"], "10.0.0.2", None, 1)}))
    cat.set("b", catalog.Spec("/b", ("app",), True, None,
                              {"app": (["b", "api"], "10.0.0.3", None, 2)}))
    table, names = cat.views["a"][0], cat.views["a"][1]
    api = wire.name_wire("api") + wire.QA
    assert len(table[api][3]) == 2
    cat.set("b", None)
    assert len(table[api][3]) == 1 and wire.name_wire("b") not in names
    assert wire.name_wire("b") + wire.QA not in table
