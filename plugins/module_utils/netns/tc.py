"""Traffic control: an endpoint's bandwidth limits as ``tc`` lines, read back and applied
in one batch (the CNI bandwidth plugin's layout).

Into the sandbox (``ingress_*``): a ``tbf`` qdisc at the root of the host side of the
veth (its egress is the sandbox's ingress). Out of the sandbox (``egress_*``): an
``ingress`` qdisc on the host veth whose u32 match-all filter redirects (``mirred``)
every packet to an ``ifb`` device that carries the ``tbf``. Shaping there queues rather
than drops, so TCP settles at the rate; a policer (``act_police``) would drop and is
not even built into every kernel (it is not on the CI's).

Why the ``tc`` command and not rtnetlink from ``rtnl.py``: a tbf needs its rate tables
(TCA_TBF_RTAB, 256 slot lengths computed from psched's tick) and the u32/mirred filter
three levels of nested TCA_* attributes; iproute2 computes these exactly as the kernel
expects and its JSON output is stable. The commands run in the calling thread's network
namespace (a child inherits the namespace of the thread that forks it), one
``tc -batch -`` per change. Rendering and comparing are pure functions (unit-tested).
"""
import json
import subprocess

from ..errors import KernelError

IFB_PREFIX = "cnb"
TBF_HANDLE = "1:"
INGRESS_HANDLE = "ffff:"
LATENCY = "25ms"   # CNI's: the queue holds 25 ms at the rate


def ifb_name(endpoint_id):
    """The ifb device carrying the egress limit of endpoint ``endpoint_id``."""
    return IFB_PREFIX + endpoint_id[:8]


def _tbf(dev, bits, burst):
    return ("qdisc replace dev %s root handle %s tbf rate %dbit burst %db latency %s"
            % (dev, TBF_HANDLE, bits, burst, LATENCY))


def _redirect(dev, ifb):
    return ("filter add dev %s parent %s protocol all prio 1 u32 match u32 0 0 "
            "action mirred egress redirect dev %s" % (dev, INGRESS_HANDLE, ifb))


def _same_tbf(root, bits, burst):
    """Whether a read-back root qdisc is our tbf at ``bits``/``burst`` (tc keeps the
    burst as time in ticks: it reads back within ~1%)."""
    if not root or root.get("kind") != "tbf":
        return False
    if root.get("rate") != bits // 8:
        return False
    return abs(root.get("burst", 0) - burst) <= burst // 50 + 64


def plan(dev, ifb, want, state):
    """``(lines, drift)``: the tc lines that make ``dev`` (and ``ifb``) carry ``want``
    (normalised ``bandwidth``, {} = none) from ``state`` (``read_state``), and one
    sentence per difference. Pure."""
    lines, drift = [], []
    root = state.get("root")
    if "ingress_rate" in want:
        bits, burst = want["ingress_rate"], want["ingress_burst"]
        if not _same_tbf(root, bits, burst):
            lines.append(_tbf(dev, bits, burst))
            drift.append("ingress limit (tbf %dbit on %s) is %s"
                         % (bits, dev, _describe(root)))
    elif root and root.get("kind") == "tbf" and root.get("handle") == TBF_HANDLE:
        lines.append("qdisc del dev %s root" % dev)
        drift.append("%s has an ingress limit (tbf) that is not configured" % dev)
    if "egress_rate" in want:
        bits, burst = want["egress_rate"], want["egress_burst"]
        if not state.get("ingress"):
            lines.append("qdisc add dev %s handle %s ingress" % (dev, INGRESS_HANDLE))
            lines.append(_redirect(dev, ifb))
            drift.append("egress limit: ingress qdisc on %s is missing" % dev)
        elif state.get("redirects") != [ifb]:
            if state.get("redirects") or state.get("filters"):
                lines.append("filter del dev %s parent %s" % (dev, INGRESS_HANDLE))
            lines.append(_redirect(dev, ifb))
            drift.append("egress limit: %s does not redirect to %s" % (dev, ifb))
        if not _same_tbf(state.get("ifb_root"), bits, burst):
            lines.append(_tbf(ifb, bits, burst))
            drift.append("egress limit (tbf %dbit on %s) is %s"
                         % (bits, ifb, _describe(state.get("ifb_root"))))
    elif state.get("ingress"):
        lines.append("qdisc del dev %s ingress" % dev)
        drift.append("%s has an egress limit (ingress qdisc) that is not configured" % dev)
    return lines, drift


def _describe(root):
    if not root or root.get("kind") != "tbf":
        return "missing"
    return "tbf %dbit burst %db" % (root.get("rate", 0) * 8, root.get("burst", 0))


def parse_state(qdiscs, filters, ifb_qdiscs):
    """The state ``plan`` compares, from ``tc -j`` output (lists; ``ifb_qdiscs`` None
    when the ifb is missing). Pure."""
    state = {"root": None, "ingress": False, "redirects": [], "filters": 0,
             "ifb_root": None}
    for q in qdiscs or []:
        if q.get("root"):
            state["root"] = dict(q.get("options") or {}, kind=q.get("kind"),
                                 handle=q.get("handle"))
        elif q.get("kind") in ("ingress", "clsact"):
            state["ingress"] = True
    for f in filters or []:
        actions = (f.get("options") or {}).get("actions")
        if actions is None:
            continue
        state["filters"] += 1
        for action in actions:
            if action.get("kind") == "mirred" and action.get("to_dev"):
                state["redirects"].append(action["to_dev"])
    for q in ifb_qdiscs or []:
        if q.get("root"):
            state["ifb_root"] = dict(q.get("options") or {}, kind=q.get("kind"),
                                     handle=q.get("handle"))
    return state


def _tc_json(args):
    """``tc -j <args>`` parsed, or None when the device does not exist."""
    proc = subprocess.run(["tc", "-j"] + args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        if "Cannot find device" in proc.stderr or "No such device" in proc.stderr:
            return None
        raise KernelError("tc %s: %s" % (" ".join(args), proc.stderr.strip()))
    return json.loads(proc.stdout or "[]")


def read_state(dev, ifb, with_ifb=True):
    """What the kernel has on host veth ``dev`` and its ``ifb`` (``parse_state``).
    Raises KernelError if ``tc`` fails for another reason than a missing device."""
    qdiscs = _tc_json(["qdisc", "show", "dev", dev])
    if qdiscs is None:
        raise KernelError("tc: interface %s is missing" % dev)
    filters = []
    if any(q.get("kind") in ("ingress", "clsact") for q in qdiscs):
        filters = _tc_json(["filter", "show", "dev", dev, "ingress"]) or []
    ifb_qdiscs = _tc_json(["qdisc", "show", "dev", ifb]) if with_ifb else None
    return parse_state(qdiscs, filters, ifb_qdiscs)


def apply(lines):
    """Run ``lines`` in one ``tc -batch -``. Raises KernelError with tc's message."""
    if not lines:
        return
    try:
        proc = subprocess.run(["tc", "-batch", "-"], input="\n".join(lines) + "\n",
                              capture_output=True, text=True, check=False)
    except OSError as exc:  # tc not installed
        raise KernelError("tc (iproute2) is needed for bandwidth limits: %s" % exc)
    if proc.returncode != 0:
        raise KernelError("tc -batch failed: %s (lines: %s)"
                          % (proc.stderr.strip(), "; ".join(lines)))
