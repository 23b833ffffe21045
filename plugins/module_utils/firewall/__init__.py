"""Firewall backends behind one interface; ``get_backend`` is the only registry.

``auto`` picks nftables when the kernel accepts our table (a dry run through
libnftables or ``nft -c``), else iptables (whichever variant the host's ``iptables``
command is). Backends are imported lazily so a run pays only for the one it uses.
"""
from ..constants import FIREWALL_BACKENDS
from ..errors import DependencyError, ValidationError
from ..host_packages import install_hint


def get_backend(name):
    """Return the firewall backend called ``name`` ("auto", "nftables", "iptables",
    "none"), ready to use in the calling thread's network namespace.

    Called once per run by the controller. Raises ValidationError (field
    ``firewall_backend``) for an unknown name, DependencyError when the named backend's
    tools are missing or, for ``auto``, when neither nftables nor iptables works.
    """
    if name not in FIREWALL_BACKENDS:
        raise ValidationError("unknown firewall backend %r (choose from %s)"
                              % (name, ", ".join(FIREWALL_BACKENDS)),
                              field="firewall_backend")
    if name == "auto":
        return _auto()
    return _make(name)


def _make(name):
    """A new backend by name, its module imported only now."""
    if name == "none":
        from .none import NoneBackend
        return NoneBackend()
    if name == "nftables":
        from .nftables import NftablesBackend
        return NftablesBackend()
    from .iptables import IptablesBackend
    return IptablesBackend()


def _auto():
    reasons = []
    for name, refused in (("nftables", "the kernel refused table inet cnm"),
                          ("iptables", "iptables-save failed")):
        try:
            backend = _make(name)
        except DependencyError as exc:
            reasons.append(str(exc))
            continue
        if backend.works():
            return backend
        reasons.append("%s: %s" % (name, refused))
    raise DependencyError("firewall_backend auto: no usable firewall (%s); %s, or %s, or "
                          "set firewall_backend: none" % ("; ".join(reasons),
                                                          install_hint("nftables"),
                                                          install_hint("iptables")))
