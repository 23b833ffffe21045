"""`make fleet-demo` and `make fleet-demo-clean`: one overlay across a simulated fleet.

The fleet (scripts/fleet/fleet_build.py) is N hosts, each a network namespace cabled to
one LAN (a bridge in a namespace of its own), plus a 3-member etcd cluster on that LAN,
each member in its own namespace. Ansible reaches every host with ``cnm.core.nsenter``
(build/fleet/inventory.yml). playbooks/fleet-demo.yml builds overlay ``ov1`` with one
sandbox per host; it runs twice (the second run must report changed=0), then the demo
pings across hosts from inside the sandboxes and asks the embedded DNS. The real host's
network is never touched.

    python scripts/fleet_demo.py [--hosts N]    make (or reuse) the fleet, run, report
    python scripts/fleet_demo.py --up ...       only make the fleet (Molecule's create)
    python scripts/fleet_demo.py --report       only the ping matrix and DNS answers
    python scripts/fleet_demo.py --clean        remove everything (safe to run twice)
"""
import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts", "fleet"))

import fleet_build  # noqa: E402
import fleet_report  # noqa: E402

PLAYBOOK = os.path.join(REPO, "playbooks", "fleet-demo.yml")
VENV_BIN = os.path.join(REPO, ".venv", "bin")
DEFAULT_ROOT = os.path.join(REPO, "build", "fleet")


def sandbox_of(host):
    """The sandbox the play makes on ``host`` (playbooks/fleet-demo.yml: sb-<host>)."""
    return "sb-%s" % host


def ansible_env():
    env = dict(os.environ)
    env.update({
        "ANSIBLE_CONFIG": os.path.join(REPO, "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": os.path.join(REPO, "build", "collections"),
        "PATH": VENV_BIN + os.pathsep + env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    })
    return env


def mitogen_strategy_dir():
    """The directory of Mitogen's strategy plugins in this Python, or None."""
    try:
        import ansible_mitogen
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(ansible_mitogen.__file__), "plugins", "strategy")
    return path if os.path.isdir(path) else None


def run_play(fleet, driver, forks, quiet, mitogen=False):
    """ansible-playbook on the fleet, its output shown as it comes; returns (rc, seconds,
    CPU seconds of the run and its children (the modules), {host: changed count from the
    recap})."""
    inventory = "inventory-mitogen.yml" if mitogen else "inventory.yml"
    argv = [os.path.join(VENV_BIN, "ansible-playbook"), "-i",
            os.path.join(fleet["root"], inventory), PLAYBOOK,
            "-f", str(forks), "-e", "fleet_driver=%s" % driver]
    env = ansible_env()
    if mitogen:
        env.update(ANSIBLE_STRATEGY="mitogen_linear",
                   ANSIBLE_STRATEGY_PLUGINS=mitogen_strategy_dir())
        print("(Mitogen: ANSIBLE_STRATEGY=mitogen_linear)")
    if quiet:
        env["ANSIBLE_DISPLAY_OK_HOSTS"] = "false"
        env["ANSIBLE_DISPLAY_SKIPPED_HOSTS"] = "false"
    print("$ %s" % " ".join(argv), flush=True)
    start, cpu = time.monotonic(), _children_cpu()
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    changed, in_recap = {}, False
    for line in proc.stdout:
        sys.stdout.write(line)
        in_recap = in_recap or line.startswith("PLAY RECAP")
        match = in_recap and re.match(r"^(\S+)\s+:\s+ok=\d+\s+changed=(\d+)", line)
        if match:
            changed[match.group(1)] = int(match.group(2))
    rc = proc.wait()
    return rc, time.monotonic() - start, _children_cpu() - cpu, changed


def _children_cpu():
    """User + system CPU seconds of the waited-for children (their own children too)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def up(args):
    """Make the fleet under ``args.root`` unless a whole, healthy one with the same hosts
    is there already (then only restart etcd members that stopped)."""
    names = args.names.split(",") if args.names else fleet_build.host_names(args.hosts)
    fleet = fleet_build.load(args.root)
    if fleet and sorted(fleet["hosts"]) == sorted(names) and fleet_build.exists(fleet):
        fleet_build.start_etcd(fleet)
        fleet_build.wait_healthy(fleet)
        fleet_build.write_inventory(fleet)
        print("reusing fleet %s-%s: %d hosts, etcd %s" % (
            fleet["prefix"], fleet["suffix"], len(names), ", ".join(fleet["endpoints"])))
        return fleet
    if fleet:
        print("removing the previous fleet %s-%s" % (fleet["prefix"], fleet["suffix"]))
        fleet_build.clean(fleet)
    fleet = fleet_build.plan(args.root, len(names), prefix=args.prefix, names=names)
    start = time.monotonic()
    try:
        fleet_build.create(fleet)
    except BaseException:
        print("making the fleet failed; removing what was made", file=sys.stderr)
        fleet_build.clean(fleet)
        raise
    print("made fleet %s-%s in %.1f s: %d hosts on %s, etcd %s" % (
        fleet["prefix"], fleet["suffix"], time.monotonic() - start, len(names),
        fleet["lan"]["subnet"], ", ".join(fleet["endpoints"])))
    print("inventory: %s" % os.path.join(fleet["root"], "inventory.yml"))
    return fleet


def report(fleet, extra=None):
    """Observe, print, and save the summary as <root>/summary.json; True when every
    ping and DNS answer was as expected."""
    summary = fleet_report.observe(fleet, sandbox_of)
    summary.update(extra or {})
    fleet_report.print_report(summary, sandbox_of)
    with open(os.path.join(fleet["root"], "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=2)
    brief = {k: summary[k] for k in summary if k not in ("addresses", "pings", "dns")}
    brief["failed_pings"] = ["%s->%s" % (p["src"], p["dst"]) for p in summary["pings"]
                             if not p["ok"]]
    brief["failed_dns"] = ["%s:%s" % (d["src"], d["name"]) for d in summary["dns"]
                           if not d["ok"]]
    print("\nSummary (JSON; full in %s/summary.json)" % fleet["root"])
    print(json.dumps(brief, indent=2))
    return summary["pings_ok"] == summary["pings_total"] \
        and summary["dns_ok"] == summary["dns_total"]


def demo(args):
    """Fleet, play twice (second run: changed=0), report. Returns the exit status."""
    start = time.monotonic()
    fleet = up(args)
    made = time.monotonic() - start
    forks = args.forks or min(len(fleet["hosts"]), 10)
    quiet = len(fleet["hosts"]) > 10
    load_before = os.getloadavg()[0]
    rc, first, first_cpu, changed = run_play(fleet, args.driver, forks, quiet,
                                             args.mitogen)
    if rc != 0:
        print("\nansible-playbook failed (rc=%d); the fleet is left for inspection, "
              "`make fleet-demo-clean` removes it." % rc)
        return rc
    print("first run: %.1f s (%.0f CPU s), changed=%d over %d hosts" % (
        first, first_cpu, sum(changed.values()), len(changed)), flush=True)
    rc, second, second_cpu, changed2 = run_play(fleet, args.driver, forks, True,
                                                args.mitogen)
    again = sum(changed2.values())
    print("second run: %.1f s (%.0f CPU s), changed=%d (%s)" % (
        second, second_cpu, again,
        "idempotent" if rc == 0 and again == 0 else "NOT idempotent"))
    extra = {"driver": args.driver, "forks": forks, "mitogen": args.mitogen,
             "fleet_seconds": round(made, 1),
             "first_run_seconds": round(first, 1), "first_run_cpu_seconds": round(first_cpu),
             "second_run_seconds": round(second, 1),
             "second_run_cpu_seconds": round(second_cpu), "second_run_changed": again,
             "load_average_before": load_before}
    ok = report(fleet, extra)
    if args.driver != "overlay":
        print("(driver %s: each host has its own ov1, so only a host's own sandbox "
              "could answer; cross-host failures are expected)" % args.driver)
    print("\nInspect: nsenter --net=%s ip -d link   |   inventory %s/inventory.yml" % (
        fleet["hosts"][sorted(fleet["hosts"])[0]]["path"], fleet["root"]))
    print("Remove:  make fleet-demo-clean")
    if rc != 0 or again != 0:
        return rc or 3
    return 0 if ok or args.driver != "overlay" else 4


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=int(os.environ.get("FLEET", "3")),
                        help="number of simulated hosts (default 3, env FLEET)")
    parser.add_argument("--names", help="comma-separated host names instead of h01...")
    parser.add_argument("--root", default=DEFAULT_ROOT, help="the fleet's directory")
    parser.add_argument("--prefix", default="cnm-fleet", help="namespace name prefix")
    parser.add_argument("--driver", default=os.environ.get("FLEET_DRIVER", "overlay"),
                        help="driver of ov1 (overlay; bridge while overlay is missing)")
    parser.add_argument("--forks", type=int, default=0, help="ansible forks (default "
                        "min(hosts, 10))")
    parser.add_argument("--mitogen", action="store_true",
                        default=os.environ.get("FLEET_MITOGEN", "") in ("1", "true", "yes"),
                        help="run the plays under Mitogen (one warm interpreter per host; "
                        "env FLEET_MITOGEN=1)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--up", action="store_true", help="only make the fleet")
    action.add_argument("--report", action="store_true", help="only ping and ask DNS")
    action.add_argument("--clean", action="store_true", help="remove the fleet")
    args = parser.parse_args()
    args.root = os.path.abspath(args.root)
    if os.geteuid() != 0:
        sys.exit("the fleet demo needs root (network namespaces)")
    if args.clean:
        fleet = fleet_build.load(args.root)
        if fleet is None:
            print("no fleet under %s: nothing to remove" % args.root)
        else:
            fleet_build.clean(fleet)
            print("removed fleet %s-%s (%d hosts, 3 etcd members, LAN) and %s" % (
                fleet["prefix"], fleet["suffix"], len(fleet["hosts"]), args.root))
        others = fleet_build.strays(args.prefix)
        if others:
            print("note: namespaces of another %s fleet (another --root, or one whose "
                  "fleet.json is gone) remain: %s" % (args.prefix, ", ".join(others)))
        return 0
    if args.mitogen and not mitogen_strategy_dir():
        sys.exit("--mitogen: Mitogen is not installed in this Python (make deps)")
    if args.report:
        fleet = fleet_build.load(args.root)
        if fleet is None:
            sys.exit("no fleet under %s: run `make fleet-demo` first" % args.root)
        return 0 if report(fleet) else 4
    try:
        if args.up:
            up(args)
            return 0
        return demo(args)
    except (RuntimeError, ValueError) as err:
        sys.exit("fleet demo: %s" % err)


if __name__ == "__main__":
    sys.exit(main())
