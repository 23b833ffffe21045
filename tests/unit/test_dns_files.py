"""Per-sandbox name files and DNS input validation (pure functions + temp dirs)."""
import os
import stat

import pytest

from ansible_collections.cnm.core.plugins.module_utils.dns import files
from ansible_collections.cnm.core.plugins.module_utils.errors import ValidationError

HOST_RESOLV = """# host file
domain old.example
search corp.example lab.example
nameserver 127.0.0.53
options edns0 trust-ad ndots:3
"""


def lines(text):
    return [ln for ln in text.splitlines() if not ln.startswith("#")]


# --- resolv.conf --------------------------------------------------------------------------
def test_default_resolv_conf_points_at_embedded_resolver_with_host_search_domains():
    assert lines(files.render_resolv_conf(HOST_RESOLV)) == [
        "nameserver 127.0.0.11",
        "search corp.example lab.example",
        "options edns0 trust-ad ndots:0",
    ]


def test_resolv_conf_without_host_search_has_no_search_line():
    assert lines(files.render_resolv_conf("nameserver 10.0.0.1\n")) == [
        "nameserver 127.0.0.11", "options ndots:0"]


def test_explicit_nameservers_search_and_options_replace_the_defaults():
    text = files.render_resolv_conf(HOST_RESOLV, nameservers=["9.9.9.9", "fd00::53"],
                                    search=["svc.example"], options=["timeout:1"])
    assert lines(text) == ["nameserver 9.9.9.9", "nameserver fd00::53",
                           "search svc.example", "options timeout:1"]


def test_search_dot_means_no_search_domains_and_explicit_ndots_is_kept():
    text = files.render_resolv_conf(HOST_RESOLV, search=["."], options=["ndots:2"])
    assert lines(text) == ["nameserver 127.0.0.11", "options ndots:2"]


# --- hosts / hostname -----------------------------------------------------------------------
def test_hosts_file_has_localhost_extra_hosts_then_own_addresses():
    extra = files.parse_extra_hosts(["gw:10.0.0.1", "v6host:fd00::9"])
    text = files.render_hosts("web", "example.com", ["172.18.0.2/16", "fd00::2",
                                                     "172.18.0.2"], extra)
    body = lines(text)
    assert body[0] == "127.0.0.1\tlocalhost"
    assert body[1].startswith("::1\tlocalhost")
    assert body[6:] == ["10.0.0.1\tgw", "fd00::9\tv6host",
                        "172.18.0.2\tweb.example.com web", "fd00::2\tweb.example.com web"]


def test_hosts_file_without_domainname_lists_the_bare_hostname():
    assert lines(files.render_hosts("db", None, ["10.1.0.5"], []))[-1] == "10.1.0.5\tdb"


def test_sandbox_files_returns_the_three_files():
    out = files.sandbox_files("web", addresses=["172.18.0.2"],
                              host_resolv_conf_text=HOST_RESOLV)
    assert sorted(out) == ["hostname", "hosts", "resolv.conf"]
    assert out["hostname"] == "web\n"
    assert "172.18.0.2\tweb" in out["hosts"]
    assert "nameserver 127.0.0.11" in out["resolv.conf"]


# --- validation ---------------------------------------------------------------------------
def test_alias_with_spaces_is_refused_naming_the_field():
    with pytest.raises(ValidationError) as exc:
        files.validate_name("my db", "aliases[1]")
    assert exc.value.field == "aliases[1]"
    assert "aliases[1]" in str(exc.value) and "my db" in str(exc.value)


@pytest.mark.parametrize("bad", ["", "-web", "web-", "a..b", "x" * 64, "we$b",
                                 ".".join(["abcdefgh"] * 30)])
def test_invalid_names_are_refused(bad):
    with pytest.raises(ValidationError):
        files.validate_name(bad, "hostname")


@pytest.mark.parametrize("good", ["web", "Web-1", "my_db", "api.v2", "a" * 63, "web."])
def test_valid_names_are_accepted(good):
    assert files.validate_name(good, "hostname") == good.rstrip(".")


def test_upstreams_are_normalised():
    assert files.validate_upstreams(["10.0.0.1", "10.0.0.2:5353", "[fd00::1]:53",
                                     "fd00:0::2", "[fd00::3]:5300", "127.0.0.53:53"]) == [
        "10.0.0.1", "10.0.0.2:5353", "fd00::1", "fd00::2", "[fd00::3]:5300", "127.0.0.53"]


@pytest.mark.parametrize("bad", ["dns.google", "10.0.0.1:0", "10.0.0.1:70000",
                                 "[fd00::1", "10.0.0.300", "[fd00::1]x", "10.0.0.1%eth0"])
def test_invalid_upstream_is_refused_naming_the_entry(bad):
    with pytest.raises(ValidationError) as exc:
        files.validate_upstreams(["1.1.1.1", bad])
    assert exc.value.field == "upstreams[1]"


def test_extra_hosts_accepts_docker_strings_and_dicts():
    assert files.parse_extra_hosts(["a:10.0.0.1", "b=10.0.0.2", "c:fd00::1",
                                    "d:[fd00::2]"]) == [
        ("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "fd00::1"), ("d", "fd00::2")]
    assert files.parse_extra_hosts({"x": "10.0.0.9", "y": ["10.0.0.8", "fd00::8"]}) == [
        ("x", "10.0.0.9"), ("y", "10.0.0.8"), ("y", "fd00::8")]


@pytest.mark.parametrize("raw,field", [
    (["ok:10.0.0.1", "noip"], "extra_hosts[1]"),
    (["noip:"], "extra_hosts[0]"),
    (["bad:10.0.0.999"], "extra_hosts[0]"),
    ({"x": ""}, "extra_hosts.x"),
    (["bad name:10.0.0.1"], "extra_hosts[0]"),
])
def test_extra_hosts_without_or_with_bad_ip_are_refused(raw, field):
    with pytest.raises(ValidationError) as exc:
        files.parse_extra_hosts(raw)
    assert exc.value.field == field


def test_host_gateway_needs_a_known_gateway():
    with pytest.raises(ValidationError):
        files.parse_extra_hosts(["gw:host-gateway"])
    assert files.parse_extra_hosts(["gw:host-gateway"], host_gateway="172.17.0.1") == [
        ("gw", "172.17.0.1")]


def test_nameservers_search_options_validators():
    assert files.validate_nameservers(["10.0.0.1", "[fd00::1]"]) == ["10.0.0.1", "fd00::1"]
    with pytest.raises(ValidationError):
        files.validate_nameservers(["10.0.0.1:53"])
    assert files.validate_search(["."]) == []
    with pytest.raises(ValidationError):
        files.validate_search(["bad domain"])
    assert files.validate_options(["ndots:1", "edns0"]) == ["ndots:1", "edns0"]
    with pytest.raises(ValidationError):
        files.validate_options(["ndots 1"])


# --- writing --------------------------------------------------------------------------
def test_write_sandbox_files_writes_each_dir_once_and_is_idempotent(tmp_path):
    dirs = [str(tmp_path / "run" / "sandboxes" / "web"), str(tmp_path / "etc" / "web")]
    content = files.sandbox_files("web", addresses=["10.0.0.2"])
    changed = files.write_sandbox_files(dirs, content)
    assert len(changed) == 6
    for d in dirs:
        for name, text in content.items():
            p = os.path.join(d, name)
            assert open(p).read() == text
            assert stat.S_IMODE(os.stat(p).st_mode) == 0o644
    assert files.write_sandbox_files(dirs, content) == []
    content["hostname"] = "web2\n"
    assert files.write_sandbox_files(dirs, content) == [os.path.join(d, "hostname")
                                                        for d in dirs]
    assert not [f for f in os.listdir(dirs[0]) if f.startswith(".")]  # no temp leftovers


def test_remove_sandbox_files_removes_ours_and_empty_dirs_only(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    files.write_sandbox_files([a, b], files.sandbox_files("web"))
    open(os.path.join(b, "user-file"), "w").close()
    files.remove_sandbox_files([a, b, str(tmp_path / "missing")])
    assert not os.path.exists(a)
    assert os.listdir(b) == ["user-file"]
