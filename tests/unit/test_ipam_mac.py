"""Endpoint MAC addresses: derived from the IPv4 address like Docker, random, or given."""
import ipaddress

import pytest

from ansible_collections.cnm.core.plugins.module_utils.errors import ValidationError
from ansible_collections.cnm.core.plugins.module_utils.ipam.mac import (
    generate_mac,
    mac_from_ip,
    normalise_mac,
)


def test_mac_from_ip_matches_docker():
    assert mac_from_ip("172.17.0.2") == "02:42:ac:11:00:02"
    assert mac_from_ip(ipaddress.ip_address("10.255.0.254")) == "02:42:0a:ff:00:fe"


def test_mac_from_ip_refuses_ipv6():
    with pytest.raises(ValueError):
        mac_from_ip("2001:db8::1")


def test_generated_macs_are_local_unicast_and_valid():
    macs = {generate_mac() for dummy in range(200)}
    assert len(macs) > 190
    for mac in macs:
        first = int(mac[:2], 16)
        assert first & 0x02 and not first & 0x01
        assert normalise_mac(mac) == mac


@pytest.mark.parametrize("value", [
    "02:42:AC:11:00:02", " 02:42:ac:11:00:02 ", "02-42-ac-11-00-02", "0242.AC11.0002",
])
def test_normalise_mac_accepts_common_spellings(value):
    assert normalise_mac(value) == "02:42:ac:11:00:02"


@pytest.mark.parametrize("value,reason", [
    ("02:42:ac:11:00", "not a valid MAC"),
    ("02:42:ac:11:00:02:03", "not a valid MAC"),
    ("02:42-ac:11:00:02", "not a valid MAC"),
    ("2:42:ac:11:0:2", "not a valid MAC"),
    ("zz:42:ac:11:00:02", "not a valid MAC"),
    ("", "not a valid MAC"),
    (None, "not a MAC"),
    ("01:00:5e:00:00:01", "multicast"),
    ("ff:ff:ff:ff:ff:ff", "multicast"),
    ("00:00:00:00:00:00", "all-zero"),
])
def test_normalise_mac_refuses_bad_values_naming_the_field(value, reason):
    with pytest.raises(ValidationError) as info:
        normalise_mac(value, "mac_address")
    assert info.value.field == "mac_address"
    assert reason in str(info.value)
