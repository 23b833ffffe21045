"""A simulated fleet that outlives the process that made it (``make fleet-demo``).

The fleet is a LAN (bridge ``br0`` in a namespace of its own), a 3-member etcd cluster
(Debian's ``etcd``, one member per namespace, started as daemons with pidfiles) and N
simulated hosts, each a network namespace cabled to the LAN as ``lan0`` with its own
engine directories. Every namespace is ``/run/netns/<prefix>-<suffix>-<role>``: the random
suffix keeps two fleets (the demo's and Molecule's) apart, the prefix makes leftovers
recognisable. Nothing is made in the real host's namespace.

Where things live (``root`` is the fleet's directory, ``build/fleet`` for the demo):

    <root>/fleet.json        the whole plan, written before anything is made: ``clean``
                             needs nothing else to remove every piece
    <root>/inventory.yml     Ansible inventory (cnm.core.nsenter, per host state dirs,
                             cluster_store endpoints, advertise_address)
    <root>/etcd/<m>.pid      etcd PIDs; <root>/etcd/<m>.log their logs
    <runtime>/<host>/...     each host's state_dir, run_dir, netns_dir and the etcd data
                             (tmpfs: /run/cnm-fleet-<suffix>), recorded in fleet.json

The etcd members and every namespace are found again from fleet.json, so ``clean`` works
from any later process and is safe to run twice.
"""
import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests"))

from cluster_harness import (CLIENT_PORT, PEER_PORT, http_json, lan_mac,  # noqa: E402
                             pin_neighbours)
from harness import in_netns, kill_processes_in, suffix  # noqa: E402

LAN_PREFIX = "10.77.0."
LAN_SUBNET = LAN_PREFIX + "0/24"
ETCD_FIRST, HOST_FIRST = 11, 101
MAX_HOSTS = 150
ETCD_MEMBERS = 3


def sh(argv, check=True, timeout=60):
    """subprocess.run with text output captured; raises RuntimeError naming the command
    and its stderr when ``check`` and it fails."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(argv), proc.returncode,
                                                   (proc.stderr or proc.stdout).strip()))
    return proc


def host_names(count):
    """Inventory names of ``count`` hosts: h01, h02, ... (h001 beyond 99)."""
    width = max(2, len(str(count)))
    return ["h%0*d" % (width, i + 1) for i in range(count)]


def plan(root, count, prefix="cnm-fleet", names=None, runtime_base="/run"):
    """The fleet as data (nothing made yet): namespaces, addresses, directories, etcd
    members. ``names`` overrides the host names (Molecule's platform names). Raises
    ValueError for a count the LAN cannot hold."""
    names = list(names) if names else host_names(count)
    if not 1 <= len(names) <= MAX_HOSTS:
        raise ValueError("hosts: %d is out of range (1..%d)" % (len(names), MAX_HOSTS))
    tag = suffix()
    base = "%s-%s" % (prefix, tag)
    runtime = os.path.join(runtime_base, base)
    etcd = []
    for index in range(ETCD_MEMBERS):
        etcd.append({
            "name": "m%d" % index, "namespace": "%s-etcd%d" % (base, index),
            "address": "%s%d" % (LAN_PREFIX, ETCD_FIRST + index),
            "data_dir": os.path.join(runtime, "etcd", "m%d" % index),
            "pidfile": os.path.join(root, "etcd", "m%d.pid" % index),
            "log": os.path.join(root, "etcd", "m%d.log" % index)})
    hosts = {}
    for index, name in enumerate(names):
        hroot = os.path.join(runtime, name)
        hosts[name] = {
            "namespace": "%s-%s" % (base, name), "path": "/run/netns/%s-%s" % (base, name),
            "address": "%s%d" % (LAN_PREFIX, HOST_FIRST + index), "lan_port": "p%d" % index,
            "state_dir": os.path.join(hroot, "state"), "run_dir": os.path.join(hroot, "run"),
            "netns_dir": os.path.join(hroot, "netns")}
    return {"prefix": prefix, "suffix": tag, "root": os.path.abspath(root),
            "runtime": runtime, "lan": {"namespace": base + "-lan", "subnet": LAN_SUBNET},
            "etcd": etcd, "token": base,
            "endpoints": ["http://%s:%d" % (m["address"], CLIENT_PORT) for m in etcd],
            "hosts": hosts}


def save(fleet):
    """Write fleet.json atomically."""
    path = os.path.join(fleet["root"], "fleet.json")
    os.makedirs(fleet["root"], exist_ok=True)
    with open(path + ".tmp", "w") as fh:
        json.dump(fleet, fh, indent=2)
    os.replace(path + ".tmp", path)


def load(root):
    """The fleet recorded under ``root``, or None."""
    try:
        with open(os.path.join(root, "fleet.json")) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


# -- making it -------------------------------------------------------------------------
def _add_netns(name):
    sh(["ip", "netns", "add", name])
    sh(["ip", "-n", name, "link", "set", "lo", "up"])


def _cable(lan, namespace, port, address):
    """A veth made directly in both namespaces: ``lan0`` in the host, ``port`` on br0."""
    sh(["ip", "link", "add", "lan0", "netns", namespace, "type", "veth",
        "peer", "name", port, "netns", lan])
    sh(["ip", "-n", namespace, "addr", "add", "%s/24" % address, "dev", "lan0"])
    sh(["ip", "-n", namespace, "link", "set", "lan0", "up"])
    sh(["ip", "-n", lan, "link", "set", port, "master", "br0", "up"])


def static_neighbours(members):
    """Permanent ARP entries on every LAN member's ``lan0`` for every other member
    (``members``: dicts with ``namespace`` and ``address``); why: ``pin_neighbours``.
    Raises CalledProcessError."""
    peers = [(m["address"], lan_mac(m["namespace"])) for m in members]
    for member, own in zip(members, peers):
        pin_neighbours(member["namespace"], [p for p in peers if p is not own])


def _make_host(lan, host):
    _add_netns(host["namespace"])
    _cable(lan, host["namespace"], host["lan_port"], host["address"])
    for key in ("state_dir", "run_dir", "netns_dir"):
        os.makedirs(host[key], exist_ok=True)


def create(fleet, workers=8):
    """Make the LAN, the etcd namespaces and the hosts of ``fleet`` (fleet.json is saved
    first), start etcd and wait for a healthy cluster, write the inventory. Raises
    RuntimeError when a step fails; what was made stays recorded for ``clean``."""
    save(fleet)
    lan = fleet["lan"]["namespace"]
    # The first `ip netns add` may bind-mount /run/netns onto itself: never concurrently.
    _add_netns(lan)
    sh(["ip", "-n", lan, "link", "add", "br0", "type", "bridge"])
    sh(["ip", "-n", lan, "link", "set", "br0", "up"])
    for index, member in enumerate(fleet["etcd"]):
        _add_netns(member["namespace"])
        _cable(lan, member["namespace"], "e%d" % index, member["address"])
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        for job in [pool.submit(_make_host, lan, h) for h in fleet["hosts"].values()]:
            job.result()
    static_neighbours(list(fleet["etcd"]) + list(fleet["hosts"].values()))
    start_etcd(fleet)
    wait_healthy(fleet)
    write_inventory(fleet)


def _etcd_argv(fleet, member, state):
    peers = ",".join("%s=http://%s:%d" % (m["name"], m["address"], PEER_PORT)
                     for m in fleet["etcd"])
    client = "http://%s:%d" % (member["address"], CLIENT_PORT)
    peer = "http://%s:%d" % (member["address"], PEER_PORT)
    return ["nsenter", "--net=/run/netns/%s" % member["namespace"], "etcd",
            "--name", member["name"], "--data-dir", member["data_dir"],
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", peers, "--initial-cluster-token", fleet["token"],
            "--initial-cluster-state", state,
            "--heartbeat-interval", "100", "--election-timeout", "1000",
            "--log-level", "warn", "--logger", "zap"]


def etcd_pid(member):
    """The PID of ``member``'s etcd when that process still runs (checked against its
    command line, so a reused PID is never taken for it), else None."""
    try:
        with open(member["pidfile"]) as fh:
            pid = int(fh.read().strip())
        with open("/proc/%d/cmdline" % pid, "rb") as fh:
            argv = fh.read().split(b"\0")
        with open("/proc/%d/stat" % pid) as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError):
        return None
    if state == "Z" or member["data_dir"].encode() not in argv:
        return None
    return pid


def start_etcd(fleet):
    """Start every member that does not run (nsenter execs etcd: the PID kept is etcd's,
    in a session of its own so it outlives this process)."""
    for member in fleet["etcd"]:
        if etcd_pid(member):
            continue
        state = "existing" if os.path.isdir(os.path.join(member["data_dir"], "member")) \
            else "new"
        os.makedirs(os.path.dirname(member["pidfile"]), exist_ok=True)
        os.makedirs(os.path.dirname(member["data_dir"]), exist_ok=True)
        with open(member["log"], "ab") as log:
            proc = subprocess.Popen(_etcd_argv(fleet, member, state), stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        with open(member["pidfile"], "w") as fh:
            fh.write("%d\n" % proc.pid)


def healthy(fleet):
    """True when every member answers /health and all agree on one leader (asked from
    the first member's namespace: the controller has no route to the LAN)."""
    leaders = set()
    with in_netns("/run/netns/%s" % fleet["etcd"][0]["namespace"]):
        for member in fleet["etcd"]:
            try:
                if http_json(member["address"], "/health").get("health") not in ("true", True):
                    return False
                leaders.add(http_json(member["address"], "/v3/maintenance/status", {})
                            .get("leader"))
            except OSError:
                return False
    return len(leaders) == 1 and None not in leaders and "0" not in leaders


def wait_healthy(fleet, timeout=60.0):
    """Wait for ``healthy``; raises RuntimeError with the logs' tails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(fleet):
            return
        time.sleep(0.2)
    tails = []
    for member in fleet["etcd"]:
        try:
            with open(member["log"], "rb") as fh:
                tails.append("%s: %s" % (member["name"], b"".join(
                    fh.readlines()[-5:]).decode(errors="replace")))
        except OSError:
            tails.append("%s: (no log)" % member["name"])
    raise RuntimeError("etcd cluster not healthy after %.0f s:\n%s" % (timeout, "\n".join(tails)))


def exists(fleet):
    """True when every namespace of ``fleet`` is there."""
    names = [fleet["lan"]["namespace"]] + [m["namespace"] for m in fleet["etcd"]]
    names += [h["namespace"] for h in fleet["hosts"].values()]
    return all(os.path.exists("/run/netns/%s" % n) for n in names)


def inventory(fleet, mitogen=False):
    """The Ansible inventory of ``fleet`` as a dict. Each host is reached with
    cnm.core.nsenter; with ``mitogen``, with the local connection and an interpreter
    started inside the host's namespace (``nsenter --net=<path> python``: Mitogen splits
    the interpreter line, stock Ansible would take it as one path)."""
    hosts = {}
    for name, host in fleet["hosts"].items():
        hosts[name] = {"ansible_host": host["path"],
                       "cnm_state_dir": host["state_dir"], "cnm_run_dir": host["run_dir"],
                       "cnm_netns_dir": host["netns_dir"],
                       "cnm_advertise_address": host["address"]}
        if mitogen:
            hosts[name]["ansible_python_interpreter"] = "nsenter --net=%s %s" % (
                host["path"], sys.executable)
    group = {"ansible_connection": "local" if mitogen else "cnm.core.nsenter",
             "cnm_cluster_store": fleet["endpoints"]}
    if not mitogen:
        group["ansible_python_interpreter"] = sys.executable
    return {"all": {"vars": group, "hosts": hosts}}


def write_inventory(fleet):
    """<root>/inventory.yml, and <root>/inventory-mitogen.yml for runs under Mitogen
    (YAML when PyYAML is there, else JSON, which is YAML too); returns the first path."""
    paths = []
    for name, mitogen in (("inventory.yml", False), ("inventory-mitogen.yml", True)):
        data = inventory(fleet, mitogen)
        try:
            import yaml
            text = "# Made by scripts/fleet_demo.py; `make fleet-demo-clean` removes it.\n"
            text += yaml.safe_dump(data, default_flow_style=False, sort_keys=True)
        except ImportError:
            text = json.dumps(data, indent=2)
        paths.append(os.path.join(fleet["root"], name))
        with open(paths[-1], "w") as fh:
            fh.write(text)
    return paths[0]


# -- removing it -----------------------------------------------------------------------
def stop_etcd(fleet, wait=5.0):
    """SIGTERM every member by its PID (SIGKILL after ``wait`` s); removes the pidfiles."""
    for member in fleet["etcd"]:
        pid = etcd_pid(member)
        if pid:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + wait
            while etcd_pid(member) and time.monotonic() < deadline:
                time.sleep(0.05)
            if etcd_pid(member):
                os.kill(pid, signal.SIGKILL)
                while etcd_pid(member):
                    time.sleep(0.05)
            try:
                os.waitpid(pid, os.WNOHANG)  # our own child when started by this process
            except ChildProcessError:
                pass
        try:
            os.unlink(member["pidfile"])
        except FileNotFoundError:
            pass


def clean(fleet, remove_root=True):
    """Remove everything ``fleet`` names: etcd members (by PID), every process left in a
    host or sandbox namespace (the engine's resolvers), sandbox bind mounts, the
    namespaces, the runtime directory and (``remove_root``) the fleet's own directory.
    Fine when parts are gone already."""
    stop_etcd(fleet)
    hosts = list(fleet["hosts"].values())
    paths = []
    for host in hosts:
        paths.append(host["path"])
        try:
            paths += [os.path.join(host["netns_dir"], s) for s in os.listdir(host["netns_dir"])]
        except OSError:
            pass
    kill_processes_in(paths)
    time.sleep(0.05)
    with open("/proc/self/mountinfo") as fh:
        mounts = [line.split()[4] for line in fh]
    runtime = fleet["runtime"]
    for mount in sorted({m for m in mounts if m == runtime or m.startswith(runtime + "/")},
                        reverse=True):
        sh(["umount", "-l", mount], check=False)
    names = [h["namespace"] for h in hosts] + [m["namespace"] for m in fleet["etcd"]]
    names.append(fleet["lan"]["namespace"])
    for name in names:
        if os.path.exists("/run/netns/%s" % name):
            sh(["ip", "netns", "del", name], check=False)
    shutil.rmtree(runtime, ignore_errors=True)
    if remove_root:
        shutil.rmtree(fleet["root"], ignore_errors=True)
    left = [n for n in names if os.path.exists("/run/netns/%s" % n)]
    if left or os.path.exists(runtime):
        raise RuntimeError("could not remove: %s" % ", ".join(left + [runtime]))


def strays(prefix):
    """Namespaces whose names start with ``<prefix>-``: fleets this process knows
    nothing about (for a warning; never removed without their fleet.json)."""
    try:
        return sorted(n for n in os.listdir("/run/netns") if n.startswith(prefix + "-"))
    except OSError:
        return []
