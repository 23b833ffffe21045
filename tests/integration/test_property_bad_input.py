"""Property: whatever a task gives a module, the engine answers with a result or a
refusal naming the field, never a Python error, and a refusal changes nothing.

The arguments are generated from each module's own argument_spec (captured from the
module file), coerced by Ansible's ``ArgumentSpecValidator`` exactly as AnsibleModule
does (what Ansible itself refuses never reaches the engine), then given to the engine
on a simulated host that has a network, a sandbox and a published port. Odd strings
(newlines, NUL, non-ASCII digits, huge numbers, nested values, special addresses) are
mixed with valid names so the generated tasks get past the first check. The examples
are derandomised: CI runs the same ones every time.
"""
import importlib
import ipaddress
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine_helpers import HostEngine
from harness import SimHost
from test_bad_input import full_snapshot
from ansible_collections.cnm.core.plugins.module_utils.errors import CnmError

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

MODULES = ["cnm_network", "cnm_network_info", "cnm_endpoint", "cnm_sandbox",
           "cnm_sandbox_info", "cnm_port_mapping", "cnm_dns"]
COMMON = ("state_dir", "run_dir", "netns_dir", "firewall_backend")
EXAMPLES = 30
STATS = {"ansible": 0, "refused": 0, "done": 0}  # reported at the end of the run

ODD_TEXT = ["", " ", "app", "web", "new1", "endnl\n", "a\x00b", "\u00b2", "7000-\u00b2",
            "\u0667\u0660\u0660\u0662", "lo", "all", "default", "br:0", "br\t0", "x" * 70,
            "brp121%d", "127.0.0.0/8", "224.0.0.0/4", "0.0.0.0/8", "10.95.0.0/24",
            "fd00:95::/64", "10.94.0.77", "fd00::5", "0.0.0.0", "224.0.0.1", "127.0.0.11",
            "::1:53", "[::1]:53", "1.1.1.1:5353", "02:42:0a:5e:00:99", "ff:ff:ff:ff:ff:ff",
            "80", "8094", "1-30000", "65536", "tcp", "sctp", "bridge", "macvlan", "host",
            "overlay", "present", "absent", "true", "no", "ndots:2\n", "-1", "2" * 30]
ODD_INT = [0, 1, -1, 80, 8094, 65535, 65536, 2 ** 31, -2 ** 70, 2 ** 70]


def module_spec(name):
    """(argument_spec, verb) of a module, captured from its ``main()``."""
    module = importlib.import_module("ansible_collections.cnm.core.plugins.modules." + name)
    seen = {}

    def capture(spec, verb, *dummy, **ignored):
        seen.update(spec=spec, verb=verb)
    original = module.run_module
    module.run_module = capture
    try:
        module.main()
    finally:
        module.run_module = original
    return seen["spec"], seen["verb"]


def text():
    return st.one_of(st.sampled_from(ODD_TEXT), st.text(max_size=20))


def scalar():
    return st.one_of(text(), st.sampled_from(ODD_INT), st.booleans(), st.none())


def value_for(option):
    """A strategy of values of the option's type (sometimes of another type)."""
    kind = option.get("type", "str")
    if option.get("choices"):
        base = st.one_of(st.sampled_from(option["choices"]), text())
    elif kind == "int":
        base = st.one_of(st.sampled_from(ODD_INT), st.integers(), text())
    elif kind == "bool":
        base = st.one_of(st.booleans(), text())
    elif kind == "list":
        if option.get("elements") == "dict" and option.get("options"):
            element = arguments(option["options"])
        elif option.get("elements") == "dict":
            element = st.dictionaries(text(), scalar(), max_size=3)
        else:
            element = text()
        base = st.lists(element, max_size=3)
    elif kind == "dict":
        if option.get("options"):
            base = arguments(option["options"])
        else:
            base = st.dictionaries(text(), st.one_of(scalar(), st.dictionaries(
                text(), scalar(), max_size=2)), max_size=3)
    else:
        base = st.one_of(text(), st.sampled_from(ODD_INT))
    return base


def arguments(spec):
    """Dicts of some of ``spec``'s options (required ones always)."""
    required = {k: value_for(v) for k, v in spec.items() if v.get("required")}
    optional = {k: value_for(v) for k, v in spec.items()
                if not v.get("required") and k not in COMMON}
    return st.fixed_dictionaries(required, optional=optional)


@pytest.fixture(scope="module")
def site():
    """One simulated host for all examples (always removed)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    host = SimHost("pb")
    try:
        eng = HostEngine(host, firewall_backend="nftables")
        eng.network(name="app", ipam={"config": [{"subnet": "10.94.0.0/24"}]})
        eng.endpoint(network="app", sandbox="web", mac_address="02:42:0a:5e:00:99")
        eng.port_mapping(sandbox="web", ports=[{"container_port": 80, "host_port": 8094}])
        yield host, eng
    finally:
        host.close()


def _check_one(site, spec, verb, params):
    host, eng = site
    validated = ArgumentSpecValidator(spec).validate(params)
    if validated.error_messages:
        STATS["ansible"] += 1
        return  # Ansible's own refusal: the module never calls the engine
    args = {k: v for k, v in validated.validated_parameters.items() if k not in COMMON}
    before = full_snapshot(host)
    try:
        getattr(eng, verb)(args)
    except CnmError as exc:
        STATS["refused"] += 1
        assert exc.field, "refusal without a field: %s (params %r)" % (exc, args)
        assert exc.field.split(".")[0].split("[")[0] in str(exc)
        assert full_snapshot(host) == before, "a refusal changed the host: %r" % args
    else:
        STATS["done"] += 1
    # any other exception fails the test with its traceback


@pytest.mark.parametrize("name", MODULES)
def test_any_arguments_give_a_result_or_a_refusal_naming_the_field(site, name):
    spec, verb = module_spec(name)

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(params=arguments({k: v for k, v in spec.items() if k not in COMMON}))
    def check(params):
        _check_one(site, spec, verb, params)
    check()


def test_most_examples_reach_the_engine():
    """Reported, and checked: the generated tasks mostly get past Ansible's own checks
    (runs after the module cases, in file order)."""
    print("property examples: %r" % STATS)
    assert STATS["refused"] + STATS["done"] >= STATS["ansible"]


def test_the_odd_values_are_what_the_name_says():
    """The generator's special addresses really are special (a typo would test less)."""
    assert ipaddress.ip_network("224.0.0.0/4").is_multicast
    assert ipaddress.ip_network("127.0.0.0/8").is_loopback
