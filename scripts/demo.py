"""`make demo` and `make demo-clean`: playbooks/demo.yml on a simulated host.

The simulated host is the network namespace ``cnm-demo`` (``/run/netns/cnm-demo``) with
its engine directories under ``/tmp/cnm-demo``. Ansible reaches it through the
``cnm.core.nsenter`` connection, so every bridge, veth, firewall rule and sandbox the
playbook makes lives inside that namespace: the real host's network is never touched.

    python scripts/demo.py           create the host if needed, run the playbook, summarise
    python scripts/demo.py --clean   remove the host, its sandboxes, processes and files

Running the demo again is fine: the second run reports changed=0.
"""
import argparse
import concurrent.futures
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "cnm-demo"
NETNS_PATH = "/run/netns/%s" % HOST
ROOT = "/tmp/cnm-demo"
STATE_DIR = os.path.join(ROOT, "state")
RUN_DIR = os.path.join(ROOT, "run")
NETNS_DIR = os.path.join(ROOT, "netns")
INVENTORY = os.path.join(ROOT, "inventory.json")
PLAYBOOK = os.path.join(REPO, "playbooks", "demo.yml")
VENV_BIN = os.path.join(REPO, ".venv", "bin")
DEMO_LABEL = "cnm.demo"

OK, FAIL, SELF = "\u2713", "\u2717", "\u00b7"


# -- the simulated host --------------------------------------------------------------
def run(argv, check=True, **kwargs):
    """subprocess.run with text output captured."""
    return subprocess.run(argv, check=check, capture_output=True, text=True, **kwargs)


def nsenter(path, argv, check=True, timeout=30):
    """Run ``argv`` inside the network namespace file ``path``."""
    return run(["nsenter", "--net=%s" % path] + list(argv), check=check, timeout=timeout)


def create_host():
    """Make the namespace (loopback up) and the engine directories, unless they exist."""
    if not os.path.exists(NETNS_PATH):
        run(["ip", "netns", "add", HOST])
        print("created simulated host %s (%s)" % (HOST, NETNS_PATH))
    nsenter(NETNS_PATH, ["ip", "link", "set", "lo", "up"])
    for d in (STATE_DIR, RUN_DIR, NETNS_DIR):
        os.makedirs(d, exist_ok=True)


def engine_env():
    env = dict(os.environ)
    env.update({
        "CNM_STATE_DIR": STATE_DIR, "CNM_RUN_DIR": RUN_DIR, "CNM_NETNS_DIR": NETNS_DIR,
        "ANSIBLE_CONFIG": os.path.join(REPO, "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": os.path.join(REPO, "build", "collections"),
        "PATH": VENV_BIN + os.pathsep + env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    })
    return env


def write_inventory():
    """JSON is YAML: the inventory is written with the standard library only."""
    inventory = {"all": {"hosts": {HOST: {
        "ansible_connection": "cnm.core.nsenter",
        "ansible_host": NETNS_PATH,
        "ansible_python_interpreter": sys.executable,
        "cnm_state_dir": STATE_DIR,
        "cnm_run_dir": RUN_DIR,
        "cnm_netns_dir": NETNS_DIR,
    }}}}
    with open(INVENTORY, "w") as f:
        json.dump(inventory, f, indent=2)


def run_playbook():
    """ansible-playbook with its normal output on the terminal; returns its exit status."""
    argv = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", INVENTORY, PLAYBOOK]
    print("$ %s" % " ".join(argv), flush=True)
    return subprocess.run(argv, cwd=REPO, env=engine_env(), check=False).returncode


def network_info():
    """The demo networks as cnm_network_info returns them (docker network inspect shape)."""
    with tempfile.TemporaryDirectory(prefix="cnm-demo-") as tree:
        args = json.dumps({"filters": {"label": DEMO_LABEL}, "state_dir": STATE_DIR,
                           "run_dir": RUN_DIR, "netns_dir": NETNS_DIR})
        proc = run([os.path.join(VENV_BIN, "ansible"), "-i", INVENTORY, HOST,
                    "-m", "cnm.core.cnm_network_info", "-a", args, "-t", tree],
                   check=False, cwd=REPO, env=engine_env())
        try:
            with open(os.path.join(tree, HOST)) as f:
                result = json.load(f)
        except (OSError, ValueError):
            return None, (proc.stderr or proc.stdout).strip()
    if result.get("failed"):
        return None, result.get("msg", "cnm_network_info failed")
    return result.get("networks", []), None


# -- reading the kernel --------------------------------------------------------------
def ip_json(path, args):
    proc = nsenter(path, ["ip", "-j"] + args, check=False)
    try:
        return json.loads(proc.stdout or "[]")
    except ValueError:
        return []


def sandboxes():
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def sandbox_interfaces(name):
    """[(ifname, [ipv4/len...], mac)] of every interface but lo in sandbox ``name``."""
    out = []
    for link in ip_json(os.path.join(NETNS_DIR, name), ["addr"]):
        if link.get("ifname") == "lo":
            continue
        addrs = ["%s/%s" % (a["local"], a["prefixlen"]) for a in link.get("addr_info", [])
                 if a.get("family") == "inet"]
        out.append((link["ifname"], addrs, link.get("address", "")))
    return out


def host_bridges():
    """{gateway address: bridge name} of the bridges in the simulated host."""
    found = {}
    for link in ip_json(NETNS_PATH, ["addr", "show", "type", "bridge"]):
        for a in link.get("addr_info", []):
            found[a["local"]] = link["ifname"]
    return found


def ping(src, address):
    proc = nsenter(os.path.join(NETNS_DIR, src),
                   ["ping", "-n", "-q", "-c", "1", "-W", "1", address], check=False)
    return proc.returncode == 0


# -- the summary ---------------------------------------------------------------------
def table(rows, header):
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    fmt = "  ".join("%%-%ds" % w for w in widths)
    print("  " + fmt % tuple(header))
    print("  " + fmt % tuple("-" * w for w in widths))
    for r in rows:
        print("  " + fmt % tuple(r))


def print_networks(networks, error):
    print("\nNetworks (cnm_network_info, label %s)" % DEMO_LABEL)
    if networks is None:
        print("  could not read them: %s" % error)
        return
    bridges = host_bridges()
    rows = []
    for net in sorted(networks, key=lambda n: n.get("Name", "")):
        for pool in (net.get("IPAM") or {}).get("Config") or [{}]:
            gateway = pool.get("Gateway", "")
            members = sorted(c.get("Name", "?") for c in (net.get("Containers") or {}).values())
            rows.append((net.get("Name", "?"), net.get("Driver", "?"), pool.get("Subnet", ""),
                         gateway, bridges.get(gateway, "-"), ", ".join(members)))
    table(rows, ("network", "driver", "subnet", "gateway", "bridge", "sandboxes"))


def print_sandboxes(names):
    print("\nSandboxes (ip -j addr inside %s/<name>)" % NETNS_DIR)
    rows = []
    for name in names:
        interfaces = sandbox_interfaces(name)
        if not interfaces:
            rows.append((name, "(loopback only)", "", ""))
        for ifname, addrs, mac in interfaces:
            rows.append((name, ifname, ", ".join(addrs) or "-", mac))
    table(rows, ("sandbox", "interface", "IPv4", "MAC"))


def print_ping_matrix(names):
    targets = []  # (sandbox, address)
    for name in names:
        for _ifname, addrs, _mac in sandbox_interfaces(name):
            targets += [(name, a.split("/")[0]) for a in addrs]
    if not targets:
        print("\nPing matrix: no addresses to ping")
        return
    jobs = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        for src in names:
            for dst, address in targets:
                if src != dst:
                    jobs[(src, dst, address)] = pool.submit(ping, src, address)
    # Docker's rule: sandboxes answer each other on a network they share; a bridge
    # network is isolated from every other one (and 'none' has loopback only).
    subnets = {name: [ipaddress.ip_interface(a).network
                      for _i, addrs, _m in sandbox_interfaces(name) for a in addrs]
               for name in names}
    print("\nPing matrix (rows ping columns; %s answers, %s no answer, ! not what Docker does)"
          % (OK, FAIL))
    header = ["from \\ to"] + ["%s %s" % (dst, address) for dst, address in targets]
    rows = []
    surprises = 0
    for src in names:
        row = [src]
        for dst, address in targets:
            if src == dst:
                row.append(SELF)
                continue
            answered = jobs[(src, dst, address)].result()
            expected = any(ipaddress.ip_address(address) in net for net in subnets[src])
            mark = "" if answered == expected else "!"
            surprises += bool(mark)
            row.append((OK if answered else FAIL) + mark)
        rows.append(row)
    table(rows, header)
    print("  Expected: answers on a shared network, none across networks (isolation),")
    print("  none from the sandbox on 'none'. %s" % (
        "All as expected." if not surprises else "%d cell(s) differ (!)." % surprises))


# -- cleanup ---------------------------------------------------------------------------
def print_dns_and_ports():
    """What the embedded DNS answers (dig @127.0.0.11) and web's published port."""
    print("\nEmbedded DNS (dig @127.0.0.11 inside a sandbox)")
    rows = []
    for src, name in (("api", "web"), ("api", "db"), ("api", "redis"), ("cache", "api.internal"),
                      ("web", "db")):
        out = nsenter(os.path.join(NETNS_DIR, src),
                      ["dig", "+short", "+time=2", "+tries=1", "@127.0.0.11", name],
                      check=False).stdout.split()
        rows.append((src, name, ", ".join(out) or "(no answer: not on a shared network)"))
    table(rows, ("from", "name", "answer"))
    web = [a for a in sandbox_interfaces("web") if a[1]]
    if web:
        out = nsenter(NETNS_PATH, ["sh", "-c", "nft list map inet cnm dnat4-any 2>/dev/null"
                                               " | grep -o 'tcp . 8080 : [0-9.]* . 80'"],
                      check=False).stdout.strip()
        print("\nPublished port: host 8080/tcp -> web:80  (nft: %s)" % (out or "see nft list ruleset"))


def _ns_inode(path):
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def kill_processes_in(paths):
    """SIGKILL every process whose network namespace is one of ``paths``."""
    inodes = {i for i in (_ns_inode(p) for p in paths) if i}
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            if os.stat("/proc/%s/ns/net" % pid).st_ino in inodes:
                os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass


def clean():
    """Remove the simulated host and everything in it; fine when parts are gone."""
    sandbox_paths = [os.path.join(NETNS_DIR, s) for s in sandboxes()]
    kill_processes_in(sandbox_paths + [NETNS_PATH])
    time.sleep(0.05)
    # Sandbox namespace files and any other bind mount under ROOT, deepest first.
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f]
    for mount in sorted({m for m in mounts if m == ROOT or m.startswith(ROOT + "/")},
                        reverse=True):
        run(["umount", "-l", mount], check=False)
    if os.path.exists(NETNS_PATH):
        run(["ip", "netns", "del", HOST], check=False)
    shutil.rmtree(ROOT, ignore_errors=True)
    print("removed simulated host %s and %s" % (HOST, ROOT))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clean", action="store_true", help="remove the demo host")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("the demo needs root (network namespaces)")
    if args.clean:
        clean()
        return 0

    create_host()
    write_inventory()
    rc = run_playbook()
    if rc != 0:
        print("\nansible-playbook failed (rc=%d); the host is left for inspection, "
              "`make demo-clean` removes it." % rc)
        return rc
    names = sandboxes()
    networks, error = network_info()
    print_networks(networks, error)
    print_sandboxes(names)
    print_ping_matrix(names)
    print_dns_and_ports()
    print("\nInspect: nsenter --net=%s ip addr   |   nsenter --net=%s/web ip route"
          % (NETNS_PATH, NETNS_DIR))
    print("Remove:  make demo-clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
