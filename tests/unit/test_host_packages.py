"""A missing dependency's error names the package of the host's OS."""
import pytest

from ansible_collections.cnm.core.plugins.module_utils import host_packages


@pytest.mark.parametrize("release, dnspython, nft", [
    ('ID=debian\nVERSION_ID="12"\n', "python3-dnspython (apt-get)",
     "nftables python3-nftables (apt-get)"),
    ('ID=ubuntu\nID_LIKE=debian\n', "python3-dnspython (apt-get)",
     "nftables python3-nftables (apt-get)"),
    ('ID="rocky"\nID_LIKE="rhel centos fedora"\n', "python3-dns (dnf)",
     "nftables python3-nftables (dnf)"),
])
def test_the_hint_names_the_package_of_the_os(tmp_path, monkeypatch, release, dnspython,
                                              nft):
    path = tmp_path / "os-release"
    path.write_text(release)
    monkeypatch.setattr(host_packages, "_family", [])
    monkeypatch.setattr(host_packages, "OS_RELEASE", str(path))
    monkeypatch.setattr(host_packages.os_family, "__defaults__", (str(path),))
    assert host_packages.install_hint("dnspython") == "install " + dnspython
    assert host_packages.install_hint("nftables") == "install " + nft


def test_an_unknown_os_gets_pip_for_python_libraries(tmp_path, monkeypatch):
    path = tmp_path / "os-release"
    path.write_text("ID=alpine\n")
    monkeypatch.setattr(host_packages, "_family", [])
    monkeypatch.setattr(host_packages.os_family, "__defaults__", (str(path),))
    assert host_packages.install_hint("dnspython").startswith("pip install dnspython for ")
    assert host_packages.install_hint("iptables") == "install iptables"


def test_a_missing_library_is_found_without_importing_it():
    assert host_packages.python_library_missing("no_such_module_cnm")
    assert not host_packages.python_library_missing("json")
