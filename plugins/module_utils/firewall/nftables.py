"""nftables backend: table ``inet cnm``, applied through libnftables in-process.

Scripts come from ``render_nftables``; each is one nft transaction (all or nothing).
libnftables (Debian's ``python3-nftables`` binding) is used when importable, with one
context per network namespace (a context's netlink socket belongs to the namespace it
was opened in); otherwise ``nft -f -`` runs as a subprocess (same syntax, ~10 ms more).
"""
import json
import os

from ..constants import CHAIN_USER, NFT_TABLE
from ..errors import DependencyError, KernelError
from ..host_packages import install_hint
from . import render_nftables as R
from .base import (FirewallBackend, find_tool, kernel_drift, legacy_rules_warning,
                   prepare_kernel, removed_mappings, run_tool)

try:
    import nftables as _libnft
except ImportError:  # the binding is optional: fall back to the nft executable
    _libnft = None


_CONTEXT = {}  # {"netns": (dev, inode), "ctx": Nftables}: the most recent one only


def _context(lib):
    """The libnftables context of the calling thread's namespace, reused across calls.

    Freeing a context closes its netfilter netlink socket, which waits for an RCU grace
    period in the kernel (~10-15 ms measured here): reusing it makes repeated operations
    of one process (tests, benchmarks, a long-lived caller) pay that once. Only the most
    recent namespace's context is kept, so at most one namespace is held open.
    """
    st = os.stat("/proc/thread-self/ns/net")
    key = (st.st_dev, st.st_ino)
    if _CONTEXT.get("netns") != key:
        _CONTEXT.clear()
        _CONTEXT.update(netns=key, ctx=lib.Nftables())
    return _CONTEXT["ctx"]


class NftRunner:
    """Runs nft scripts and listings in the calling thread's network namespace."""

    def __init__(self, use_library=True):
        self.lib = _libnft if use_library else None
        self.exe = None if self.lib else find_tool("nft")
        if self.lib is None and self.exe is None:
            raise DependencyError("nftables backend: neither the python3-nftables binding "
                                  "nor the nft executable is available: %s"
                                  % install_hint("nftables"))

    def run(self, script, dry_run=False):
        """Apply ``script`` as one transaction. Raises KernelError with nft's message."""
        if not script:
            return
        if self.lib is not None:
            ctx = _context(self.lib)
            ctx.set_json_output(False)
            ctx.set_dry_run(dry_run)
            try:
                rc, dummy, err = ctx.cmd(script)
            finally:
                ctx.set_dry_run(False)
            if rc != 0:
                raise KernelError("nft: %s" % _first_lines(err))
            return
        argv = [self.exe] + (["-c"] if dry_run else []) + ["-f", "-"]
        run_tool(argv, stdin=script)

    def list_json(self, what):
        """``nft -j list <what>`` parsed, or None when the object does not exist."""
        if self.lib is not None:
            ctx = _context(self.lib)
            ctx.set_dry_run(False)
            ctx.set_json_output(True)
            try:
                rc, out, err = ctx.cmd("list %s" % what)
            finally:
                ctx.set_json_output(False)
        else:
            try:
                rc, out = run_tool([self.exe, "-j", "list"] + what.split())
                err = ""
            except KernelError as exc:
                rc, out, err = 1, "", str(exc)
        if rc != 0:
            if "No such file or directory" in err or "does not exist" in err:
                return None
            raise KernelError("nft list %s: %s" % (what, _first_lines(err)))
        try:
            return json.loads(out or "{}")
        except ValueError as exc:
            raise KernelError("nft list %s: unreadable JSON: %s" % (what, exc)) from None

    def table(self):
        """Our table as a ParsedTable, or None when it does not exist."""
        doc = self.list_json("table %s" % R.TABLE)
        return None if doc is None else R.parse_table(doc)

    def bridges(self):
        """Bridge names in our ``bridges`` set (one per network), None without table."""
        doc = self.list_json("set %s bridges" % R.TABLE)
        if doc is None:
            return None
        return {k[0] for k in R.parse_table(doc).elements.get("bridges", {})}


def _first_lines(text, limit=12):
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return "\n".join(lines[:limit]) or "unknown error"


class NftablesBackend(FirewallBackend):
    """Firewall rules in table inet cnm (see render_nftables for the layout)."""

    name = "nftables"

    def __init__(self, use_library=True):
        self.nft = NftRunner(use_library)

    def works(self):
        """True when the kernel accepts our table (dry run: nothing is changed)."""
        try:
            self.nft.run("add table %s\n" % R.TABLE, dry_run=True)
        except (KernelError, DependencyError):
            return False
        return True

    def apply(self, old, new, complete=None):
        """See FirewallBackend.apply. Fast path: one transaction computed from ``old``;
        if the kernel refuses it (drift), the table is read and reconciled."""
        if old is None and new is None:
            return
        old, new, complete = self._whole_or_delta(old, new, complete)
        removed = removed_mappings(old, new)
        if new is None:
            self._remove(old)
        else:
            script = R.render_create(new) if old is None else R.render_update(old, new)
            try:
                self.nft.run(script)
            except KernelError:
                if complete is not None:
                    old, new = complete()
                self.nft.run(R.render_reconcile(old, new, self.nft.table()))
            prepare_kernel(new)
        _flush_conntrack(removed)

    def _remove(self, old):
        bridges = self.nft.bridges()
        if bridges is None:  # no table, or its bridges set is gone: read everything
            actual = self.nft.table()
            if actual is None:
                return  # nothing of ours exists
            bridges = {k[0] for k in actual.elements.get("bridges", {})}
        if not bridges - {old.bridge}:
            self._teardown()
            return
        try:
            self.nft.run(R.render_remove(old))
        except KernelError:
            actual = self.nft.table()
            if actual is not None:
                self.nft.run(R.render_remove_reconcile(old, actual))

    def _teardown(self):
        """No network of ours remains: remove our table, or, when the user's chain
        holds rules, everything in it but that chain and the sets its rules use, kept
        empty (``render_teardown``). The usual case (CNM-USER empty) reads one chain,
        not the table."""
        user = self.nft.list_json("chain %s %s" % (R.TABLE, CHAIN_USER))
        if user is not None and not R.parse_table(user).chains.get(CHAIN_USER):
            self.nft.run("delete table %s\n" % R.TABLE)
            return
        used = R.sets_used(user) if user is not None else ()
        self.nft.run(R.render_teardown(self.nft.table(), keep_sets=used))

    def check(self, rules):
        """See FirewallBackend.check."""
        return R.check_network(rules, self.nft.table()) + kernel_drift(rules)

    def warnings(self):
        """See FirewallBackend.warnings (legacy xtables rules beside ours)."""
        return legacy_rules_warning()

    def restore(self, networks):
        """See FirewallBackend.restore: one transaction rebuilding the whole table."""
        networks = list(networks)
        if not networks:
            self._teardown()
            return
        self.nft.run(R.render_restore(networks, self.nft.table()))
        for rules in networks:
            prepare_kernel(rules)

    def restore_network(self, rules):
        """See FirewallBackend.restore_network."""
        self.nft.run(R.render_reconcile(None, rules, self.nft.table()))
        prepare_kernel(rules)


def _flush_conntrack(mappings):
    if mappings:
        from .conntrack import flush_mappings
        flush_mappings(mappings)


__all__ = ["NftablesBackend", "NftRunner", "NFT_TABLE"]
