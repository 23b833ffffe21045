"""The firewall's input data and the backend registry (no kernel)."""
import dataclasses

import pytest

from ansible_collections.cnm.core.plugins.module_utils.errors import ValidationError
from ansible_collections.cnm.core.plugins.module_utils.firewall import get_backend
from ansible_collections.cnm.core.plugins.module_utils.firewall.base import removed_mappings
from ansible_collections.cnm.core.plugins.module_utils.firewall.model import (
    NetworkRules,
    PortMapping,
    validate_rules,
)

NID = "ab" * 32


def sample():
    return NetworkRules(network_id=NID, bridge="br-abababababab",
                        subnets=("172.18.0.0/16", "fd00::/64"), icc=False,
                        ports=(PortMapping("tcp", "", 8080, "172.18.0.2", 80, 4),
                               PortMapping("udp", "127.0.0.1", 53, "172.18.0.2", 53, 4)))


def test_rules_round_trip_through_json_dicts():
    rules = sample()
    doc = rules.to_dict()
    assert doc["ports"][0] == {"protocol": "tcp", "host_ip": "", "host_port": 8080,
                               "container_ip": "172.18.0.2", "container_port": 80,
                               "family": 4}
    assert NetworkRules.from_dict(doc) == rules
    assert NetworkRules.from_dict(dict(doc, ports=list(reversed(doc["ports"])))) == rules
    assert PortMapping(**doc["ports"][1]) == rules.ports[1]
    validate_rules(rules)


def test_malformed_documents_are_validation_errors():
    with pytest.raises(ValidationError):
        NetworkRules.from_dict({"bridge": "x"})
    with pytest.raises(ValidationError):
        PortMapping.from_dict({"protocol": "tcp"})


def test_structure_and_families():
    rules = sample()
    assert rules.without_ports().ports == ()
    assert [str(n) for n in rules.subnets_of(6)] == ["fd00::/64"]
    assert len(rules.ports_of(4)) == 2 and rules.ports_of(6) == []
    assert rules.short_id == "abababababab"
    assert rules.ports[1].is_loopback and not rules.ports[0].is_loopback
    assert rules.ports[0].describe() == "tcp 0.0.0.0:8080 -> 172.18.0.2:80"


def test_removed_mappings_are_what_the_new_rules_lack():
    rules = sample()
    fewer = dataclasses.replace(rules, ports=rules.ports[:1])
    assert removed_mappings(rules, fewer) == [rules.ports[1]]
    assert removed_mappings(rules, None) == list(rules.ports)
    assert removed_mappings(None, rules) == []


def test_registry_knows_four_names_and_refuses_others():
    assert get_backend("none").name == "none"
    assert get_backend("none").check(sample()) == []
    with pytest.raises(ValidationError) as err:
        get_backend("firewalld")
    assert err.value.field == "firewall_backend"
    assert "auto, nftables, iptables, none" in str(err.value)
