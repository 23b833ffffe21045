"""Parsing the user's ``ports`` list and printing mappings the way Docker does."""
import pytest

from ansible_collections.cnm.core.plugins.module_utils.errors import ValidationError
from ansible_collections.cnm.core.plugins.module_utils.firewall.model import PortMapping
from ansible_collections.cnm.core.plugins.module_utils.ports.spec import (
    RequestedPort,
    parse_ports,
    to_docker_ports,
)


def test_defaults_are_tcp_ephemeral_and_no_host_ip():
    [req] = parse_ports([{"container_port": 80}])
    assert req == RequestedPort(index=0, protocol="tcp", container_start=80,
                                container_end=80, host_start=0, host_end=0, host_ip=None)
    assert req.ephemeral and req.count == 1


def test_ranges_strings_and_protocols_are_normalised():
    reqs = parse_ports([
        {"container_port": "80-81", "host_port": "8080-8081", "protocol": "UDP"},
        {"container_port": "53", "host_port": 5353, "protocol": "sctp",
         "host_ip": " 127.0.0.1 "},
        {"container_port": 443, "host_port": 0, "host_ip": "[2001:DB8::1]"},
        {"container_port": 22, "host_port": None, "host_ip": ""},
    ])
    assert (reqs[0].protocol, reqs[0].container_start, reqs[0].container_end,
            reqs[0].host_start, reqs[0].host_end) == ("udp", 80, 81, 8080, 8081)
    assert reqs[1].host_ip == "127.0.0.1" and reqs[1].protocol == "sctp"
    assert reqs[2].host_ip == "2001:db8::1" and reqs[2].ephemeral
    assert reqs[3].host_ip is None and reqs[3].ephemeral


def test_none_means_no_ports():
    assert parse_ports(None) == []
    assert parse_ports([]) == []


@pytest.mark.parametrize("entry,field,words", [
    ({"host_port": 80}, "ports[1].container_port", "required"),
    ({"container_port": 0}, "ports[1].container_port", "out of range"),
    ({"container_port": 70000}, "ports[1].container_port", "out of range"),
    ({"container_port": "81-80"}, "ports[1].container_port", "ends before"),
    ({"container_port": "http"}, "ports[1].container_port", "not a port"),
    ({"container_port": True}, "ports[1].container_port", "not a port"),
    ({"container_port": "80-81", "host_port": "8080-8082"}, "ports[1].host_port",
     "has 3 port(s) but container range 80-81 has 2"),
    ({"container_port": 80, "host_port": "8080-8081"}, "ports[1].host_port",
     "has 2 port(s)"),
    ({"container_port": 80, "host_port": -1}, "ports[1].host_port", "port -1 is out of"),
    ({"container_port": 80, "host_port": "8080-70000"}, "ports[1].host_port",
     "8080-70000: port 70000 is out of range"),
    ({"container_port": 80, "protocol": "icmp"}, "ports[1].protocol", "not one of"),
    ({"container_port": 80, "host_ip": "10.0.0.300"}, "ports[1].host_ip", "not a valid"),
    ({"container_port": 80, "host_ip": "10.0.0.0/24"}, "ports[1].host_ip", "plain"),
    ({"container_port": 80, "host_ip": "::1"}, "ports[1].host_ip", "127.0.0.1"),
    ({"container_port": 80, "host_ip": "::ffff:10.0.0.1"}, "ports[1].host_ip", "10.0.0.1"),
    ({"container_port": 80, "hostport": 8080}, "ports[1]", "unknown key(s) hostport"),
])
def test_errors_name_the_entry_and_key(entry, field, words):
    with pytest.raises(ValidationError) as err:
        parse_ports([{"container_port": 1}, entry])
    assert err.value.field == field
    assert str(err.value).startswith(field)
    assert words in str(err.value)


def test_not_a_list_or_not_a_dict():
    with pytest.raises(ValidationError, match="must be a list"):
        parse_ports("80:80")
    with pytest.raises(ValidationError) as err:
        parse_ports(["8080:80"])
    assert err.value.field == "ports[0]"


def test_a_custom_field_prefix_is_used_in_errors():
    with pytest.raises(ValidationError) as err:
        parse_ports([{"container_port": "x"}], field="endpoint.ports")
    assert err.value.field == "endpoint.ports[0].container_port"


def test_docker_shape_of_applied_mappings():
    mappings = [
        PortMapping("tcp", "", 8080, "172.18.0.2", 80, 4),
        PortMapping("tcp", "", 8080, "fd00::2", 80, 6),
        PortMapping("udp", "127.0.0.1", 5353, "172.18.0.2", 53, 4),
        PortMapping("tcp", "10.0.0.5", 8443, "172.18.0.2", 443, 4),
        PortMapping("tcp", "", 8444, "172.18.0.2", 443, 4),
    ]
    assert to_docker_ports(mappings) == {
        "443/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8444"},
                    {"HostIp": "10.0.0.5", "HostPort": "8443"}],
        "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}],
        "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"},
                   {"HostIp": "::", "HostPort": "8080"}],
    }
    assert list(to_docker_ports(mappings)) == ["443/tcp", "53/udp", "80/tcp"]
    assert to_docker_ports(list(reversed(mappings))) == to_docker_ports(mappings)
    assert to_docker_ports([]) == {}
