"""``cnm``: the host CLI. Argument parsing and dispatch to the engine's verbs.

Every command opens the same ``Engine`` the modules use, with the same common options
(``--state-dir``, ``--run-dir``, ``--netns-dir``, ``--firewall-backend``; environment
``CNM_STATE_DIR``, ``CNM_RUN_DIR``, ``CNM_NETNS_DIR``, ``CNM_FIREWALL_BACKEND``), and
only calls its public verbs: ``network_info``/``sandbox_info`` (ls, inspect, graph),
``doctor`` (doctor), ``restore_firewall`` (restore). Nothing here writes the store.

Exit status: 0 ok; 1 something is wrong (doctor found problems, inspect found no such
object, restore --check would change something); 2 bad usage or an engine error (the
message names the cause; no traceback).
"""
import argparse
import json
import os
import socket
import sys

from .. import constants as C
from ..errors import CnmError
from . import doctor as doctor_text
from . import facts, graph, tables

EXIT_OK, EXIT_WRONG, EXIT_ERROR = 0, 1, 2
PROG = "cnm"


def _common(parser, suppress):
    """The common options, on the main parser (with defaults) and on every command
    (``suppress``: no default, so ``cnm --json ls`` and ``cnm ls --json`` both work)."""
    def default(value):
        return argparse.SUPPRESS if suppress else value
    env = os.environ
    group = parser.add_argument_group("engine options (as the modules' common options)")
    group.add_argument("--state-dir", metavar="DIR",
                       default=default(env.get(C.ENV_STATE_DIR, C.DEFAULT_STATE_DIR)),
                       help="the store's directory (env %s, default %s)"
                       % (C.ENV_STATE_DIR, C.DEFAULT_STATE_DIR))
    group.add_argument("--run-dir", metavar="DIR",
                       default=default(env.get(C.ENV_RUN_DIR, C.DEFAULT_RUN_DIR)),
                       help="runtime files (env %s, default %s)"
                       % (C.ENV_RUN_DIR, C.DEFAULT_RUN_DIR))
    group.add_argument("--netns-dir", metavar="DIR",
                       default=default(env.get(C.ENV_NETNS_DIR, C.DEFAULT_NETNS_DIR)),
                       help="sandbox namespaces (env %s, default %s)"
                       % (C.ENV_NETNS_DIR, C.DEFAULT_NETNS_DIR))
    group.add_argument("--firewall-backend", choices=C.FIREWALL_BACKENDS,
                       default=default(env.get(C.ENV_FIREWALL_BACKEND, "auto")),
                       help="firewall backend (env %s, default auto)"
                       % C.ENV_FIREWALL_BACKEND)
    group.add_argument("--json", action="store_true", default=default(False),
                       help="print JSON for scripts instead of text")
    cluster = parser.add_argument_group("cluster store options (overlay networks)")
    cluster.add_argument("--cluster-store", metavar="URLS",
                         default=default(env.get(C.ENV_CLUSTER_STORE)),
                         help="etcd endpoints, comma-separated (env %s)"
                         % C.ENV_CLUSTER_STORE)
    for name in ("ca", "cert", "key"):
        cluster.add_argument("--cluster-store-%s" % name, metavar="FILE",
                             default=default(None), help="TLS %s file" % name)
    cluster.add_argument("--advertise-address", metavar="ADDRESS",
                         default=default(env.get(C.ENV_ADVERTISE_ADDRESS)),
                         help="this host's address in the cluster (env %s)"
                         % C.ENV_ADVERTISE_ADDRESS)


def _section(value):
    if value not in tables.SECTIONS:
        raise argparse.ArgumentTypeError("%r is not one of %s"
                                         % (value, ", ".join(tables.SECTIONS)))
    return value


def build_parser():
    """The argument parser of ``cnm`` (every command has ``--help``)."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Inspect, check and repair the container networks that "
        "cnm.core made on this host (the engine the modules use).")
    _common(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    ls = sub.add_parser("ls", help="list networks, sandboxes, endpoints and ports",
                        description="Tables like `docker network ls`: networks, "
                        "sandboxes, endpoints and published ports (all, or the sections "
                        "named).")
    ls.add_argument("sections", nargs="*", type=_section, metavar="SECTION",
                    help="any of: %s (default: all)" % ", ".join(tables.SECTIONS))
    _common(ls, suppress=True)

    inspect = sub.add_parser("inspect", help="a network or sandbox as Docker-shaped JSON",
                             description="Print networks (as `docker network inspect`) "
                             "and sandboxes (as cnm_sandbox_info) by name or id, as a JSON "
                             "array. Exit 1 when a name matches nothing.")
    inspect.add_argument("names", nargs="+", metavar="NAME")
    inspect.add_argument("--type", choices=("network", "sandbox"),
                         help="look only for this kind of object")
    _common(inspect, suppress=True)

    doctor = sub.add_parser("doctor", help="compare the store with the kernel",
                            description="Report drift between the store and the kernel "
                            "(bridges, veths, addresses, routes, namespaces), firewall rules "
                            "out of sync, the resolver's health, runs that died half-way "
                            "and leaked links, namespaces or resolver files. Exit 1 when "
                            "something is wrong.")
    doctor.add_argument("--fix", action="store_true",
                        help="repair what a module run would repair, then report again")
    _common(doctor, suppress=True)

    restore = sub.add_parser("restore", help="re-apply firewall rules, revive the resolver",
                             description="After `nft flush ruleset`, a firewalld reload or "
                             "a reboot: re-make every cnm firewall rule from the store and "
                             "start the resolver if it is not running (also finishes what "
                             "a run that died left). Bridges, veths and namespaces lost in "
                             "a reboot are re-made by `cnm doctor --fix`.")
    restore.add_argument("--check", action="store_true",
                         help="only report what would be restored (exit 1 if anything)")
    _common(restore, suppress=True)

    graph_cmd = sub.add_parser(
        "graph", help="draw the topology (SVG and PNG via Graphviz)",
        description="Draw networks, bridges, sandboxes with their interfaces and "
        "addresses, published ports and, for overlay networks, their hosts. From this "
        "host's engine, or with --facts from gathered cnm_network_info/cnm_sandbox_info "
        "results (one <host>.json per host).")
    graph_cmd.add_argument("-o", "--output", default="cnm-topology", metavar="BASE",
                           help="write BASE.svg, BASE.png (default: cnm-topology)")
    graph_cmd.add_argument("--format", default="svg,png", metavar="LIST",
                           help="comma-separated: svg, png, dot (default: svg,png)")
    graph_cmd.add_argument("--facts", metavar="DIR",
                           help="draw the fleet in DIR's <host>.json files instead")
    graph_cmd.add_argument("--host", metavar="NAME",
                           help="this host's name in the picture (default: hostname)")
    graph_cmd.add_argument("--dot", action="store_true",
                           help="print the DOT text and write no file")
    _common(graph_cmd, suppress=True)
    return parser


def cluster_options(args, env=None):
    """The modules' ``cluster_store*`` and ``advertise_address`` options from ``args``;
    user name and password only from the environment (``CNM_CLUSTER_STORE_USERNAME``,
    ``CNM_CLUSTER_STORE_PASSWORD``), never from the command line."""
    env = os.environ if env is None else env
    store = [u.strip() for u in (args.cluster_store or "").split(",") if u.strip()]
    tls = {k: getattr(args, "cluster_store_%s" % k) for k in ("ca", "cert", "key")}
    auth = {k: env.get("CNM_CLUSTER_STORE_%s" % k.upper()) for k in ("username", "password")}
    return {"cluster_store": store or None,
            "cluster_store_tls": tls if any(tls.values()) else None,
            "cluster_store_auth": auth if any(auth.values()) else None,
            "advertise_address": args.advertise_address or None}


def open_engine(args, check_mode=False):
    """The engine with the common options of ``args``."""
    from ..controller.engine import Engine
    return Engine(state_dir=args.state_dir, run_dir=args.run_dir, netns_dir=args.netns_dir,
                  firewall_backend=args.firewall_backend, check_mode=check_mode,
                  cluster=cluster_options(args))


def _out(text, stream=None):
    """One block of output (module_utils may not call print: ansible-test's rule)."""
    (stream or sys.stdout).write(text + "\n")


def _emit(args, data, text):
    _out(json.dumps(data, indent=2, sort_keys=True) if args.json else text)


def cmd_ls(args):
    """``cnm ls [SECTION...]``."""
    engine = open_engine(args)
    networks = engine.network_info({}).data["networks"]
    sandboxes = engine.sandbox_info({}).data["sandboxes"]
    sections = [s for s in tables.SECTIONS if s in args.sections] or list(tables.SECTIONS)
    rows = {"networks": tables.network_rows(networks),
            "sandboxes": tables.sandbox_rows(sandboxes),
            "endpoints": tables.endpoint_rows(sandboxes),
            "ports": tables.port_rows(sandboxes)}
    _emit(args, {s: rows[s] for s in sections}, tables.render_ls(sections, rows))
    return EXIT_OK


def cmd_inspect(args):
    """``cnm inspect NAME...``: always JSON, as ``docker inspect`` prints it."""
    engine = open_engine(args)
    found, missing = [], []
    for name in args.names:
        hits = []
        if args.type in (None, "network"):
            hits += engine.network_info({"name": name}).data["networks"]
        if args.type in (None, "sandbox"):
            sandboxes = engine.sandbox_info({}).data["sandboxes"]
            hits += [s for s in sandboxes if name == s["Name"] or (
                len(name) >= 12 and s["Id"].startswith(name))]
        if not hits:
            missing.append(name)
        found += hits
    _out(json.dumps(found, indent=4))
    for name in missing:
        _out("%s inspect: no such %s: %s" % (PROG, args.type or "network or sandbox", name),
             sys.stderr)
    return EXIT_WRONG if missing else EXIT_OK


def cmd_doctor(args):
    """``cnm doctor [--fix]``."""
    engine = open_engine(args)
    result = engine.doctor({"fix": args.fix})
    data = dict(result.data, warnings=list(result.warnings),
                ok=not result.data["problems"])
    fixed = result.data.get("fixed") if args.fix else None
    _emit(args, data, doctor_text.render_doctor(result.data, result.warnings, fixed))
    return EXIT_WRONG if result.data["problems"] else EXIT_OK


def cmd_restore(args):
    """``cnm restore [--check]``."""
    engine = open_engine(args, check_mode=args.check)
    result = engine.restore_firewall()
    nets = result.data.get("networks", [])
    text = "\n".join(result.actions) if result.actions else (
        "nothing to restore: rules of %d network(s) in place, resolver running or not "
        "needed" % len(nets))
    _emit(args, {"changed": result.changed, "actions": result.actions, "networks": nets,
                 "warnings": result.warnings}, text)
    for warning in result.warnings:
        _out("warning: %s" % warning, sys.stderr)
    return EXIT_WRONG if (args.check and result.changed) else EXIT_OK


def cmd_graph(args):
    """``cnm graph``: from the engine, or from ``--facts DIR``."""
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    if args.facts:
        topology = facts.load_facts(args.facts)
    else:
        engine = open_engine(args)
        topology = graph.local_topology(args.host or socket.gethostname(),
                                        engine.network_info({}).data["networks"],
                                        engine.sandbox_info({}).data["sandboxes"])
    dot_text = graph.render_dot(topology)
    if args.dot:
        sys.stdout.write(dot_text)
        return EXIT_OK
    written = graph.render_files(dot_text, args.output, formats)
    hosts = [h["name"] for h in topology["hosts"]]
    _emit(args, {"files": written, "hosts": hosts}, "\n".join(written))
    return EXIT_OK


COMMANDS = {"ls": cmd_ls, "inspect": cmd_inspect, "doctor": cmd_doctor,
            "restore": cmd_restore, "graph": cmd_graph}


def main(argv=None):
    """Run ``cnm`` with ``argv`` (default: the process's arguments); returns the exit
    status. Expected failures print one line naming the cause and return 2."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except CnmError as exc:
        _out("%s %s: error: %s" % (PROG, args.command, exc), sys.stderr)
    except OSError as exc:
        where = " (%s)" % exc.filename if getattr(exc, "filename", None) else ""
        _out("%s %s: error: %s%s" % (PROG, args.command, exc.strerror or exc, where),
             sys.stderr)
    except KeyboardInterrupt:
        return 130
    return EXIT_ERROR
