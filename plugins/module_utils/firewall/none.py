"""The ``none`` backend: the collection installs no firewall rule at all.

For hosts whose firewall is managed by something else. Masquerade, isolation, ICC,
internal networks and published ports then depend entirely on that other manager.
"""
from .base import FirewallBackend


class NoneBackend(FirewallBackend):
    """Accepts every call and touches nothing."""

    name = "none"

    def works(self):
        """Always True."""
        return True

    def apply(self, old, new, complete=None):
        """Does nothing (no rules are managed)."""

    def check(self, rules):
        """Always [] (nothing is expected in the kernel)."""
        return []

    def restore(self, networks):
        """Does nothing."""

    def restore_network(self, rules):
        """Does nothing."""
