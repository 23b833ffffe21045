"""The firewall interface every backend implements, and helpers they share.

A backend is chosen once per run (``get_backend``); drivers never firewall. It is
stateless: each call acts in the network namespace of the calling thread (tests setns a
thread into a simulated host; modules run under ``nsenter --net``) and reads back from
the kernel whatever it needs beyond the ``NetworkRules`` it is given.
"""
import os
import shutil
import subprocess

from ..errors import DependencyError, KernelError
from ..netns.sysctl import read_path as _read

TOOL_TIMEOUT = 30  # seconds; a firewall tool that hangs longer is reported, not waited on
_SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin"
# The legacy xtables (IPv4) tables of the calling thread's network namespace, one name a
# line; iptables-legacy-save lists the same file to know what to dump.
LEGACY_TABLES_FILE = "/proc/thread-self/net/ip_tables_names"


class FirewallBackend:
    """One firewall implementation (nftables, iptables, none)."""

    name = "abstract"

    def apply(self, old, new, complete=None):
        """Make the kernel hold ``new`` for this network instead of ``old``.

        Called by the controller whenever a network's desired rules change (created:
        ``old`` None; removed: ``new`` None; options or ports changed). Works in one batch
        (one nft transaction / one iptables-restore per family) whose cost follows the
        difference: a port added is a few element or rule adds. When the kernel does not
        hold ``old`` exactly (drift), it reads the kernel and reconciles instead. When no
        network of ours remains, every table/chain of ours is removed except the user
        chain CNM-USER when it holds rules: the user's rules survive every operation
        (kept unhooked, evaluated again from the next network on). Conntrack entries
        of removed mappings are flushed. Raises KernelError with the tool's message,
        ValidationError for unsafe input, DependencyError when the tool is missing.

        ``complete``: given when ``old``/``new`` carry only the mappings of the endpoint
        whose ports changed (the rest of the network is the same on both sides, so the
        difference is the same). A backend that has to leave the difference path (drift)
        calls it first: it returns ``(old, new)`` with every mapping of the network.
        """
        raise NotImplementedError

    def _whole_or_delta(self, old, new, complete):
        """The first step of every backend's ``apply``: returns ``(old, new, complete)``.

        A change that is not ports-only works on whole rule sets (``complete()`` is
        called, and None is returned in its place); a network whose id changed is
        removed first (``old`` becomes None). Otherwise everything is returned as given.
        """
        whole = old is None or new is None or old.network_id != new.network_id
        if complete is not None and (whole or old.without_ports() != new.without_ports()):
            old, new = complete()
            complete = None
        if old is not None and new is not None and old.network_id != new.network_id:
            self.apply(old, None)
            old = None
        return old, new, complete

    def check(self, rules):
        """Drift of one network: human-readable list of what the kernel lacks or holds
        in excess for ``rules`` ([] = in sync). Read-only; raises KernelError when the
        state cannot be read."""
        raise NotImplementedError

    def restore(self, networks):
        """Re-create everything of ours from scratch for ``networks`` (all networks of
        the host: after ``nft flush ruleset``, a firewalld reload, or drift). Chains of
        networks not listed are removed; CNM-USER keeps its rules (with no networks, as
        in ``apply``). Raises KernelError."""
        raise NotImplementedError

    def restore_network(self, rules):
        """Re-create everything ``rules`` needs, leaving other networks alone (repair
        of one network's drift). Idempotent. Raises KernelError."""
        raise NotImplementedError

    def warnings(self):
        """Things about the host's firewall the user should know (list of str), e.g.
        legacy xtables rules beside ours. Read-only, best effort, never raises."""
        return []


def find_tool(name):
    """Absolute path of executable ``name`` (PATH, then the sbin directories) or None."""
    path = os.environ.get("PATH", "")
    return shutil.which(name, path=path + os.pathsep + _SBIN_PATH if path else _SBIN_PATH)


def run_tool(argv, stdin=None, ok_codes=(0,)):
    """Run a firewall tool in the calling thread's network namespace.

    Returns (returncode, stdout). Raises DependencyError when the executable is missing,
    KernelError when it fails (with its stderr) or times out.
    """
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                              timeout=TOOL_TIMEOUT, check=False)
    except FileNotFoundError:
        raise DependencyError("%s is not installed" % argv[0]) from None
    except subprocess.TimeoutExpired:
        raise KernelError("%s did not finish within %d s" % (" ".join(argv), TOOL_TIMEOUT))
    if proc.returncode not in ok_codes:
        raise KernelError("%s failed (%d): %s" % (
            os.path.basename(argv[0]), proc.returncode,
            (proc.stderr or proc.stdout).strip()))
    return proc.returncode, proc.stdout


def removed_mappings(old, new):
    """Mappings of ``old`` that ``new`` no longer has (their conntrack entries go)."""
    if old is None:
        return []
    keep = set(new.ports) if new is not None and new.network_id == old.network_id else set()
    return [p for p in old.ports if p not in keep]


def ensure_route_localnet(rules):
    """Set ``net.ipv4.conf.<bridge>.route_localnet=1`` when ``rules`` publishes IPv4 ports.

    Needed by mappings reached through 127.0.0.1 from the host (DNAT in output keeps the
    127.0.0.1 source until masquerade). The raw-table rule of every backend drops packets
    from the bridge to 127.0.0.0/8, so the setting opens nothing to sandboxes. Does
    nothing when the bridge does not exist (yet). Raises KernelError when the write fails.
    """
    if rules is None or not rules.ports_of(4):
        return
    path = "/proc/sys/net/ipv4/conf/%s/route_localnet" % rules.bridge
    try:
        with open(path) as fh:
            if fh.read().strip() == "1":
                return
        with open(path, "w") as fh:
            fh.write("1")
    except FileNotFoundError:
        return
    except OSError as exc:
        raise KernelError("sysctl net.ipv4.conf.%s.route_localnet=1: %s"
                          % (rules.bridge, os.strerror(exc.errno))) from None


def ensure_bridge_netfilter(rules):
    """Make bridged traffic pass the IP hooks when ``rules`` disables ICC.

    Sandboxes of one bridge talk at layer 2; only with br_netfilter
    (``net.bridge.bridge-nf-call-iptables=1``, ip6tables for IPv6) does their traffic
    reach the forward rules that drop it, as Docker arranges for ``enable_icc=false``.
    Loads the module when its sysctls are absent (best effort). Raises KernelError
    when ICC cannot be enforced.
    """
    if rules is None or rules.icc:
        return
    base = "/proc/sys/net/bridge"
    if not os.path.isdir(base):
        exe = find_tool("modprobe")
        if exe:
            subprocess.run([exe, "-q", "br_netfilter"], capture_output=True, check=False,
                           timeout=TOOL_TIMEOUT)
        if not os.path.isdir(base):
            raise KernelError("enable_icc=false needs the br_netfilter kernel module, "
                              "which is not available")
    names = ["bridge-nf-call-iptables"] + (["bridge-nf-call-ip6tables"]
                                           if rules.subnets_of(6) else [])
    for name in names:
        path = os.path.join(base, name)
        try:
            with open(path) as fh:
                if fh.read().strip() == "1":
                    continue
            with open(path, "w") as fh:
                fh.write("1")
        except OSError as exc:
            raise KernelError("sysctl net.bridge.%s=1: %s"
                              % (name, os.strerror(exc.errno or 0))) from None


def prepare_kernel(rules):
    """The sysctls ``rules`` needs besides rules: route_localnet for IPv4 ports,
    br_netfilter for ICC off. Called by backends after applying ``rules``."""
    ensure_route_localnet(rules)
    ensure_bridge_netfilter(rules)


def kernel_drift(rules):
    """What ``prepare_kernel`` would change for ``rules`` (human-readable, [] = none).
    A bridge that does not exist is the driver's drift, not reported here."""
    problems = []
    if rules.ports_of(4):
        value = _read("/proc/sys/net/ipv4/conf/%s/route_localnet" % rules.bridge)
        if value not in (None, "1"):
            problems.append("sysctl net.ipv4.conf.%s.route_localnet is %s, expected 1"
                            % (rules.bridge, value))
    if not rules.icc:
        names = ["bridge-nf-call-iptables"] + (["bridge-nf-call-ip6tables"]
                                               if rules.subnets_of(6) else [])
        for name in names:
            value = _read("/proc/sys/net/bridge/%s" % name)
            if value != "1":
                problems.append("sysctl net.bridge.%s is %s, expected 1 (enable_icc=false)"
                                % (name, value if value is not None else "missing"))
    return problems


def legacy_rules_warning():
    """A warning when legacy xtables hold rules (beside our nf_tables rules), else [].

    Both are evaluated for every packet: an accept in one does not override a drop in
    the other, which is a classic source of "published port unreachable" reports. Costs
    one ``iptables-legacy-save`` run, and only when the calling thread's namespace has a
    legacy table at all (``LEGACY_TABLES_FILE`` lists them; the tool reads the same
    list): a host without any spends no process on it. Returns [] when that tool is
    absent or fails.
    """
    try:
        with open(LEGACY_TABLES_FILE) as listing:
            if not listing.read().strip():
                return []
    except OSError:  # ip_tables is not loaded: no legacy table can hold rules
        return []
    exe = find_tool("iptables-legacy-save")
    if exe is None:
        return []
    try:
        dummy, out = run_tool([exe])
    except (KernelError, DependencyError):
        return []
    count = sum(1 for line in out.splitlines() if line.startswith("-A "))
    if not count:
        return []
    return ["iptables-legacy holds %d rule(s) beside the nf_tables rules of this host; "
            "both are evaluated, and a drop in either one wins" % count]
