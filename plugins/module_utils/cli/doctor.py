"""``cnm doctor``'s text: the engine's drift report (``Engine.doctor``) for a person.

Pure: the report's data in, lines out. Each problem names its object and says how it is
repaired: by ``cnm doctor --fix`` (the module verb it calls) or by a command to run by
hand (leftovers no module run removes).
"""


def repair_text(p):
    """``cnm_endpoint network=a sandbox=b`` for a problem's repair, else its hint."""
    repair = p.get("repair")
    if repair:
        args = ["%s=%s" % kv for kv in sorted(repair.get("params", {}).items())]
        return "fixed by --fix (%s)" % " ".join([repair.get("module", "")] + args)
    if p.get("hint"):
        return "not fixed by --fix; by hand: %s" % p["hint"]
    return "not fixed by --fix"


def render_doctor(data, warnings=(), fixed=None):
    """The text of ``cnm doctor`` for the engine's ``data`` (``problems``), its
    ``warnings`` and, after ``--fix``, what was ``fixed``. Returns a str; raises
    nothing."""
    lines = []
    if fixed is not None:
        lines.append("fixed (%d):" % len(fixed) if fixed else "fixed: nothing to do")
        lines += ["  %s" % f for f in fixed]
    problems = data.get("problems") or []
    if not problems:
        lines.append("ok: the kernel, firewall and resolver match the store")
    else:
        lines.append("%d problem%s:" % (len(problems), "" if len(problems) == 1 else "s"))
        width = max(len(p.get("kind", "")) for p in problems)
        for p in problems:
            lines.append("  %s  %s" % (p.get("kind", "").ljust(width), p.get("message", "")))
            lines.append("  %s  -> %s" % ("".ljust(width), repair_text(p)))
        fixable = sum(1 for p in problems if p.get("repair"))
        if fixable and fixed is None:
            lines.append("run `cnm doctor --fix` to repair %d of them" % fixable)
    lines += ["warning: %s" % w for w in warnings]
    return "\n".join(lines)
