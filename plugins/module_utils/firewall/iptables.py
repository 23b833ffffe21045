"""iptables backend: CNM-* chains in filter/nat/raw of both families.

Applied with ``iptables-restore --noflush`` (one run per family, all tables in it) of
the same variant as the host's ``iptables`` command (nf_tables or legacy), so our rules
show up in that variant's ``iptables-save`` beside everybody else's. Adding or removing
a port is a pure delta (no read); creating or removing a network reads the family's
``iptables-save`` first, as does the fallback when a delta is refused (drift).
"""
import os

from ..errors import DependencyError, KernelError
from ..host_packages import install_hint
from . import iptables_nft
from . import render_iptables as R
from .base import (FirewallBackend, find_tool, kernel_drift, legacy_rules_warning,
                   prepare_kernel, removed_mappings, run_tool)

_TOOLS = {4: "iptables", 6: "ip6tables"}


def host_variant():
    """"nft" or "legacy": the variant the host's ``iptables`` command is, or None."""
    exe = find_tool("iptables")
    if exe is None:
        return None
    real = os.path.basename(os.path.realpath(exe))
    if "legacy" in real:
        return "legacy"
    if "nft" in real:
        return "nft"
    return None


class IptablesBackend(FirewallBackend):
    """Firewall rules as CNM-* chains (see render_iptables for the layout)."""

    name = "iptables"

    def __init__(self, variant=None):
        """``variant``: "nft", "legacy" or None (= whatever the host's iptables is).
        Raises DependencyError when iptables-restore/iptables-save are missing."""
        self.variant = variant or host_variant()
        self.tools = {}
        for family, base in _TOOLS.items():
            restore = save = None
            if self.variant:
                restore = find_tool("%s-%s-restore" % (base, self.variant))
                save = find_tool("%s-%s-save" % (base, self.variant))
            restore = restore or find_tool("%s-restore" % base)
            save = save or find_tool("%s-save" % base)
            if restore and save:
                self.tools[family] = (restore, save)
        if 4 not in self.tools:
            raise DependencyError("iptables backend: iptables-restore and iptables-save "
                                  "are not installed: %s" % install_hint("iptables"))

    def works(self):
        """True when iptables-save can read the kernel's tables."""
        try:
            self._save(4)
        except (KernelError, DependencyError):
            return False
        return True

    # -- tools ------------------------------------------------------------------------
    def _families(self, *rules):
        fams = [4]
        if 6 in self.tools:
            fams.append(6)
        elif any(r is not None and r.subnets_of(6) for r in rules):
            raise DependencyError("iptables backend: ip6tables-restore is needed for the "
                                  "IPv6 subnets of this network")
        return fams

    def _save(self, family):
        dummy, out = run_tool([self.tools[family][1]])
        return R.parse_save(out)

    def _restore(self, family, script):
        if script:
            run_tool([self.tools[family][0], "--noflush"], stdin=script)

    # -- interface --------------------------------------------------------------------
    def apply(self, old, new, complete=None):
        """See FirewallBackend.apply. Ports-only changes are one restore per family
        with the changed lines only; anything else reads the family's state first."""
        if old is None and new is None:
            return
        old, new, complete = self._whole_or_delta(old, new, complete)
        mappings = removed_mappings(old, new)
        ports_only = old is not None and new is not None and (
            old.without_ports() == new.without_ports())
        families = self._families(old, new)
        if ports_only:
            try:
                for family in families:
                    self._apply_fast(old, new, family)
                families = []
            except KernelError:
                # drift: reconcile every family against what the kernel holds
                if complete is not None:
                    old, new = complete()
        for family in families:
            self._restore(family, R.plan_apply(self._save(family), old, new, family))
        prepare_kernel(new)
        if mappings:
            from .conntrack import flush_mappings
            flush_mappings(mappings)

    def _apply_fast(self, old, new, family):
        """A ports-only change in one family, assuming the kernel holds ``old``: rules
        withdrawn are deleted by handle in-process when the host's iptables is the
        nf_tables variant (see iptables_nft: iptables-restore would wait for the
        kernel's RCU grace period before exiting), the rest is one restore."""
        runner = self._nft_runner()
        rules = iptables_nft.deletions(old, new, family) if runner is not None else None
        if rules is None:
            self._restore(family, R.plan_fast(old, new, family))
            return
        if rules:
            runner.run(iptables_nft.delete_script(runner, rules))
        self._restore(family, R.plan_fast(old, new, family, deletes=False))

    def _nft_runner(self):
        """An in-process NftRunner when our rules are nf_tables rules, else None."""
        if self.variant != "nft":
            return None
        from .nftables import NftRunner, _libnft
        return NftRunner(use_library=True) if _libnft is not None else None

    def check(self, rules):
        """See FirewallBackend.check (both families)."""
        problems = []
        for family in self._families(rules):
            problems += R.check_network(rules, self._save(family), family)
        return problems + kernel_drift(rules)

    def warnings(self):
        """See FirewallBackend.warnings: legacy rules matter when we write nf_tables."""
        return legacy_rules_warning() if self.variant == "nft" else []

    def restore(self, networks):
        """See FirewallBackend.restore (one restore per family)."""
        networks = list(networks)
        for family in self._families(*networks):
            self._restore(family, R.plan_restore(self._save(family), networks, family))
        for rules in networks:
            prepare_kernel(rules)

    def restore_network(self, rules):
        """See FirewallBackend.restore_network."""
        for family in self._families(rules):
            self._restore(family, R.plan_apply(self._save(family), None, rules, family))
        prepare_kernel(rules)
