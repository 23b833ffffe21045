"""Which package of the managed host's OS provides a dependency, for error messages.

A missing library or tool fails the task that needs it with a message naming the
package to install on that OS (Debian/Ubuntu, the RHEL family, else pip or the tool's
name), read from /etc/os-release once per process.
"""
import os
import sys

OS_RELEASE = "/etc/os-release"
# dependency -> {OS family: package}; "pip" is the fallback for Python libraries
PACKAGES = {
    "dnspython": {"debian": "python3-dnspython", "rhel": "python3-dns", "pip": "dnspython"},
    "nftables": {"debian": "nftables python3-nftables", "rhel": "nftables python3-nftables"},
    "iptables": {"debian": "iptables", "rhel": "iptables-nft"},
}
_FAMILIES = {"debian": ("debian", "ubuntu"), "rhel": ("rhel", "fedora", "centos", "rocky",
                                                      "almalinux")}
_family = []


def os_family(path=OS_RELEASE):
    """``debian``, ``rhel`` or None, from ``ID`` and ``ID_LIKE`` of os-release."""
    if not _family:
        ids = []
        try:
            with open(path) as fh:
                for line in fh:
                    key, dummy, value = line.strip().partition("=")
                    if key in ("ID", "ID_LIKE"):
                        ids += value.strip('"').lower().split()
        except OSError:
            pass
        _family.append(next((family for family, names in _FAMILIES.items()
                             if any(i in names for i in ids)), None))
    return _family[0]


def install_hint(dependency):
    """``install python3-dnspython`` (the package for this host's OS) or ``pip install
    dnspython``; called when raising DependencyError. Raises nothing."""
    packages = PACKAGES.get(dependency, {})
    family = os_family()
    if family in packages:
        return "install %s (%s)" % (packages[family], "apt-get" if family == "debian"
                                    else "dnf")
    if "pip" in packages:
        return "pip install %s for %s" % (packages["pip"], os.path.realpath(sys.executable))
    return "install %s" % dependency


def python_library_missing(module):
    """True when ``module`` cannot be imported by this Python (not imported: a finder
    lookup only, ~0.1 ms)."""
    import importlib.util
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True
