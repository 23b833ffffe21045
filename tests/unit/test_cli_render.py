"""The pure parts of the host CLI ``cnm``: tables, DOT text, facts files, doctor text."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from ansible_collections.cnm.core.plugins.module_utils.cli import doctor as doctor_text
from ansible_collections.cnm.core.plugins.module_utils.cli import facts, graph, tables
from ansible_collections.cnm.core.plugins.module_utils.cli.main import build_parser
from ansible_collections.cnm.core.plugins.module_utils.errors import (
    DependencyError, NotFoundError, ValidationError)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLEET = os.path.join(REPO, "tests", "integration", "fixtures_cli", "fleet")
SCRIPT = os.path.join(REPO, "scripts", "cnm")

NET = {"Name": "frontend", "Id": "f2c76d66d00922253ae8a54c673437f19f22db005ecdf3af",
       "Driver": "bridge", "Scope": "local", "Options": {},
       "IPAM": {"Config": [{"Subnet": "10.89.1.0/24", "Gateway": "10.89.1.1"}]}}
SANDBOX = {"Id": "22f46868554d855cc770099124e2c9f7", "Name": "web", "Hostname": "web01",
           "Mode": "own", "SandboxKey": "/run/netns/web",
           "HostConfig": {"NetworkMode": "default"},
           "Networks": {"frontend": {
               "EndpointID": "98d5daae3f84d350d3a7165c", "NetworkID": NET["Id"],
               "InterfaceName": "eth0", "HostInterfaceName": "veth98d5daae",
               "IPAddress": "10.89.1.10", "IPPrefixLen": 24, "GlobalIPv6Address": "",
               "MacAddress": "02:42:0a:59:01:0a",
               "Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}],
                         "53/udp": [{"HostIp": "::", "HostPort": "5353"}]}}}}


def test_network_table_is_laid_out_like_docker_network_ls():
    text = tables.format_table(tables.NETWORK_COLUMNS,
                               [[r[c] for c in tables.NETWORK_COLUMNS]
                                for r in tables.network_rows([NET])])
    assert text.splitlines() == [
        "NETWORK ID     NAME       DRIVER    SCOPE",
        "f2c76d66d009   frontend   bridge    local"]


def test_endpoint_and_port_rows_show_interfaces_addresses_and_bindings():
    ep = tables.endpoint_rows([SANDBOX])
    assert ep == [{"ENDPOINT ID": "98d5daae3f84", "SANDBOX": "web", "NETWORK": "frontend",
                   "INTERFACE": "eth0", "HOST INTERFACE": "veth98d5daae",
                   "IPV4": "10.89.1.10/24", "IPV6": "", "MAC": "02:42:0a:59:01:0a"}]
    ports = tables.port_rows([SANDBOX])
    assert [(p["CONTAINER"], p["HOST"]) for p in ports] == [
        ("53/udp 10.89.1.10", "[::]:5353"), ("80/tcp 10.89.1.10", "0.0.0.0:8080")]


def test_ls_titles_sections_only_when_several_are_printed():
    rows = {"networks": tables.network_rows([NET]), "sandboxes": tables.sandbox_rows([SANDBOX]),
            "endpoints": [], "ports": []}
    one = tables.render_ls(["networks"], rows)
    assert one.startswith("NETWORK ID")
    both = tables.render_ls(["networks", "sandboxes"], rows)
    assert both.startswith("NETWORKS:\n") and "\n\nSANDBOXES:\n" in both
    assert "web01" in both and "frontend" in both


def test_dot_names_every_network_sandbox_bridge_address_and_port():
    dot = graph.render_dot(graph.local_topology("h1", [NET], [SANDBOX]))
    for text in ("host h1", "network frontend", "bridge br-f2c76d66d009",
                 "10.89.1.0/24 gw 10.89.1.1", "sandbox web", "hostname web01",
                 "eth0 10.89.1.10/24", "0.0.0.0:8080/tcp", "[::]:5353/udp",
                 "eth0 / veth98d5daae"):
        assert text in dot, text
    assert dot == graph.render_dot(graph.local_topology("h1", [NET], [SANDBOX]))


def test_dot_escapes_quotes_and_backslashes_in_names():
    evil = dict(NET, Name='a"b\\l')
    dot = graph.render_dot(graph.local_topology('x"y', [evil], []))
    assert 'network a\\"b\\\\l' in dot
    assert 'host x\\"y' in dot


def test_a_named_bridge_is_drawn_under_its_own_name():
    assert graph.bridge_name(dict(NET, Options={
        "com.docker.network.bridge.name": "cnm0"})) == "cnm0"
    assert graph.bridge_name(dict(NET, Driver="macvlan")) == ""


def test_facts_draw_one_cluster_per_host_and_an_overlay_once_with_its_hosts():
    topology = facts.load_facts(FLEET)
    assert [h["name"] for h in topology["hosts"]] == ["node1", "node2"]
    dot = graph.render_dot(topology)
    nodes = [line for line in dot.splitlines() if line.strip().startswith('"overlay/')]
    assert len(nodes) == 1 and "shape=hexagon" in nodes[0]
    assert "hosts: node1, node2" in dot
    assert '"h0/sb/web" -- "overlay/fleet"' in dot
    assert '"h1/sb/db" -- "overlay/fleet"' in dot
    assert '"h1/sb/db-metrics" -- "h1/sb/db"' in dot  # container mode
    assert '"h0/net/app"' in dot and '"h1/net/app"' not in dot


def test_facts_errors_name_the_file(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValidationError, match="bad.json is not JSON"):
        facts.load_facts(str(tmp_path))
    (tmp_path / "bad.json").write_text(json.dumps({"changed": False}))
    with pytest.raises(ValidationError, match="bad.json holds no cnm_network_info"):
        facts.load_facts(str(tmp_path))
    with pytest.raises(NotFoundError, match="missing cannot be read"):
        facts.load_facts(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotFoundError, match="has no <host>.json"):
        facts.load_facts(str(tmp_path / "empty"))


def test_a_facts_file_may_name_its_host():
    host = {"host": "edge-1", "results": [{"networks": [NET]}, {"sandboxes": [SANDBOX]}]}
    nets, sbs = {}, {}
    facts.collect(host, nets, sbs)
    assert list(nets) == [NET["Id"]] and list(sbs) == [SANDBOX["Id"]]


def test_missing_dot_is_an_error_naming_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(DependencyError, match="graphviz"):
        graph.render_files("graph x {}", str(tmp_path / "t"))
    assert list(tmp_path.iterdir()) == []
    # the DOT text alone needs no Graphviz
    assert graph.render_files("graph x {}", str(tmp_path / "t"), ["dot"]) == [
        str(tmp_path / "t.dot")]
    with pytest.raises(ValidationError, match="gif"):
        graph.render_files("graph x {}", str(tmp_path / "t"), ["gif"])


def test_doctor_text_says_how_each_problem_is_repaired():
    data = {"problems": [
        {"kind": "endpoint", "object": "web/app", "message": "host veth vethab is missing",
         "repair": {"verb": "endpoint", "module": "cnm_endpoint",
                    "params": {"network": "app", "sandbox": "web"}}, "hint": None},
        {"kind": "leak", "object": "vethzz", "message": "link vethzz belongs to no endpoint",
         "repair": None, "hint": "ip link del vethzz"}]}
    text = doctor_text.render_doctor(data)
    assert "2 problems:" in text
    assert "fixed by --fix (cnm_endpoint network=app sandbox=web)" in text
    assert "by hand: ip link del vethzz" in text
    assert "repair 1 of them" in text
    assert doctor_text.render_doctor({"problems": []}, fixed=[]).endswith(
        "ok: the kernel, firewall and resolver match the store")


def test_common_options_work_before_and_after_the_command():
    parser = build_parser()
    a = parser.parse_args(["--json", "--state-dir", "/x", "ls", "networks"])
    b = parser.parse_args(["ls", "networks", "--json", "--state-dir", "/x"])
    for args in (a, b):
        assert args.json and args.state_dir == "/x" and args.sections == ["networks"]


@pytest.mark.parametrize("command", [[], ["ls"], ["inspect"], ["doctor"], ["restore"],
                                     ["graph"]])
def test_every_command_has_help(command):
    proc = subprocess.run([sys.executable, SCRIPT] + command + ["--help"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: cnm")


def test_bad_usage_is_one_clear_line_not_a_traceback():
    proc = subprocess.run([sys.executable, SCRIPT, "ls", "bogus"], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 2
    assert "'bogus' is not one of networks, sandboxes, endpoints, ports" in proc.stderr
    assert "Traceback" not in proc.stderr
