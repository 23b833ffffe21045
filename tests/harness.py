"""Simulated hosts for integration tests: throwaway network namespaces.

A ``SimHost`` is a network namespace that plays one Linux host, with its own
``state_dir``/``run_dir``/``netns_dir`` so the engine's state never touches the
real host's. Every name carries a random suffix so several test runs can share
one machine. ``close()`` removes everything it made and is safe to call twice,
also after a failed test.

Enter a host from Python with ``in_netns(host.path)`` (setns of the calling thread:
netlink/UDP/TCP sockets created inside stay in that namespace), from a shell with
``host.run(...)`` (``nsenter --net=PATH``, never ``ip netns exec``: that gives a private
mount namespace in which sandbox bind mounts vanish).
"""
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
PREFIX = "cnmt"


def suffix(n=6):
    """Random lower-case hex suffix for names shared with other test runs."""
    return secrets.token_hex(n // 2 + 1)[:n]


def _setns(path_or_fd):
    fd = os.open(path_or_fd, os.O_RDONLY) if isinstance(path_or_fd, str) else path_or_fd
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, "setns %s: %s" % (path_or_fd, os.strerror(err)))
    finally:
        if isinstance(path_or_fd, str):
            os.close(fd)


@contextlib.contextmanager
def in_netns(path):
    """Run the body with the calling thread inside the network namespace ``path``."""
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(path)
        yield
    finally:
        _setns(back)
        os.close(back)


def _ns_inode(path):
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def kill_processes_in(paths):
    """SIGKILL every process whose network namespace is one of ``paths``."""
    inodes = {i for i in (_ns_inode(p) for p in paths) if i}
    if not inodes:
        return
    me = os.getpid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            ino = os.stat("/proc/%s/ns/net" % pid).st_ino
        except OSError:
            continue
        if ino in inodes:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass


def _umount(path):
    subprocess.run(["umount", "-l", path], stderr=subprocess.DEVNULL, check=False)


def tmpfs_dir():
    """A tmpfs directory for runtime files (/dev/shm), or None when there is none."""
    try:
        with open("/proc/self/mounts") as fh:
            mounts = {line.split()[1]: line.split()[2] for line in fh if line.strip()}
    except OSError:
        return None
    return "/dev/shm" if mounts.get("/dev/shm") == "tmpfs" else None


class SimHost:
    """One simulated host: ``/run/netns/<name>`` plus private engine directories.

    ``tmpfs_runtime``: put run_dir and netns_dir on tmpfs, as a real host has them
    (/run), with state_dir on disk (/var/lib); the benchmarks use it. Tests keep
    everything under one /tmp directory.
    """

    def __init__(self, label="h", tmpfs_runtime=False):
        self.suffix = suffix()
        self.name = "%s-%s-%s" % (PREFIX, label, self.suffix)
        self.path = "/run/netns/%s" % self.name
        self.root = tempfile.mkdtemp(prefix="%s-%s-" % (PREFIX, self.suffix))
        runtime = tmpfs_dir() if tmpfs_runtime else None
        self.runtime_root = (tempfile.mkdtemp(prefix="%s-%s-" % (PREFIX, self.suffix),
                                              dir=runtime) if runtime else self.root)
        self.state_dir = os.path.join(self.root, "state")
        self.run_dir = os.path.join(self.runtime_root, "run")
        self.netns_dir = os.path.join(self.runtime_root, "netns")
        for d in (self.state_dir, self.run_dir, self.netns_dir):
            os.makedirs(d, exist_ok=True)
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.run("ip link set lo up")
        self.closed = False

    # -- engine parameters ------------------------------------------------------------
    def env(self):
        """Environment for an engine/ansible run against this host."""
        env = dict(os.environ)
        env.update({"CNM_STATE_DIR": self.state_dir, "CNM_RUN_DIR": self.run_dir,
                    "CNM_NETNS_DIR": self.netns_dir})
        return env

    def dirs(self):
        """The common module options pointing at this host's private directories."""
        return {"state_dir": self.state_dir, "run_dir": self.run_dir,
                "netns_dir": self.netns_dir}

    def sandbox_path(self, sandbox):
        return os.path.join(self.netns_dir, sandbox)

    # -- running things ---------------------------------------------------------------
    def run(self, cmd, check=True, timeout=60, input=None):
        """Run ``cmd`` (str for a shell, or argv list) in the host namespace."""
        return self._nsenter(self.path, cmd, check, timeout, input)

    def sandbox_run(self, sandbox, cmd, check=True, timeout=60, input=None):
        """Run ``cmd`` inside the sandbox namespace ``sandbox`` of this host."""
        return self._nsenter(self.sandbox_path(sandbox), cmd, check, timeout, input)

    def _nsenter(self, path, cmd, check, timeout, input):
        argv = ["nsenter", "--net=%s" % path]
        argv += ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              input=input, env=self.env(), check=False)
        if check and proc.returncode != 0:
            raise AssertionError("command failed (%d) in %s: %s\nstdout: %s\nstderr: %s" % (
                proc.returncode, path, cmd, proc.stdout, proc.stderr))
        return proc

    def popen(self, cmd, sandbox=None, **kw):
        """Start a background process (e.g. a server) in the host or a sandbox."""
        path = self.sandbox_path(sandbox) if sandbox else self.path
        argv = ["nsenter", "--net=%s" % path]
        argv += ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        return subprocess.Popen(argv, env=self.env(), **kw)

    def ping(self, address, sandbox=None, count=1, timeout=2):
        """True when ``address`` answers ping from the host (or from ``sandbox``)."""
        cmd = ["ping", "-n", "-q", "-c", str(count), "-W", str(timeout), str(address)]
        proc = (self.sandbox_run(sandbox, cmd, check=False) if sandbox
                else self.run(cmd, check=False))
        return proc.returncode == 0

    def ip_json(self, args, sandbox=None):
        """``ip -j <args>`` parsed, in the host or a sandbox."""
        import json
        cmd = ["ip", "-j"] + args.split()
        proc = self.sandbox_run(sandbox, cmd) if sandbox else self.run(cmd)
        return json.loads(proc.stdout or "[]")

    def sandboxes(self):
        """Names of the namespace files under this host's netns_dir."""
        try:
            return sorted(os.listdir(self.netns_dir))
        except FileNotFoundError:
            return []

    # -- cleanup ----------------------------------------------------------------------
    def close(self):
        """Kill processes, remove sandboxes, the namespace and the directories."""
        if self.closed:
            return
        self.closed = True
        sandbox_paths = [self.sandbox_path(s) for s in self.sandboxes()]
        kill_processes_in(sandbox_paths + [self.path])
        time.sleep(0.05)
        for p in sandbox_paths:
            _umount(p)
        # bind mounts under run_dir/state_dir (e.g. per-sandbox files), if any
        for root in sorted({self.root, self.runtime_root}):
            subprocess.run(["sh", "-c", "grep -o ' %s[^ ]*' /proc/self/mountinfo | sort -r "
                            "| xargs -r -n1 umount -l" % root],
                           stderr=subprocess.DEVNULL, check=False)
        subprocess.run(["ip", "netns", "del", self.name], stderr=subprocess.DEVNULL,
                       check=False)
        for root in sorted({self.root, self.runtime_root}):
            shutil.rmtree(root, ignore_errors=True)


def connect(h1, h2, addr1, addr2, prefix=24, name="lan"):
    """Join two hosts with a veth "LAN" cable: ``h1:<name>0`` <-> ``h2:<name>0``.

    Addresses are given without prefix. Returns the interface name used on both sides.
    """
    ifname = "%s0" % name
    tmp = "%s%s" % (name[:4], suffix(6))
    subprocess.run(["ip", "link", "add", tmp, "netns", h1.name, "type", "veth", "peer",
                    "name", ifname, "netns", h2.name], check=True)
    h1.run("ip link set %s name %s" % (tmp, ifname))
    h1.run("ip addr add %s/%d dev %s && ip link set %s up" % (addr1, prefix, ifname, ifname))
    h2.run("ip addr add %s/%d dev %s && ip link set %s up" % (addr2, prefix, ifname, ifname))
    return ifname


def eventually(predicate, timeout=3.0, interval=0.05):
    """Poll ``predicate`` until true or ``timeout``; returns its last value.

    For kernel work that finishes asynchronously (a removed namespace takes its veth
    with it a few milliseconds later).
    """
    deadline = time.time() + timeout
    value = predicate()
    while not value and time.time() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


def udp_ask(address, port, tries=3, timeout=2):
    """argv of a UDP client that sends ``ping`` to ``address``:``port`` and prints the
    first answer, sending again after ``timeout`` seconds up to ``tries`` times (as any
    UDP client does: one lost datagram on a loaded 2-core machine is not a failure)."""
    code = ("import socket\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.settimeout(%d)\n"
            "for i in range(%d):\n"
            "    s.sendto(b'ping', (%r, %d))\n"
            "    try:\n"
            "        print(s.recv(100).decode())\n"
            "        break\n"
            "    except socket.timeout:\n"
            "        pass\n") % (timeout, tries, address, port)
    return ["python3", "-c", code]


def tcp_greeter(port, name, idle=60, with_client=False):
    """argv of a TCP server on ``port`` that greets each client with ``hello from
    <name>`` (plus the client's address as the server sees it, ``with_client``) and
    exits after ``idle`` seconds without a client."""
    greeting = "('hello from %s ' + a[0])" % name if with_client else "'hello from %s'" % name
    code = ("import socket\n"
            "s = socket.socket()\n"
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            "s.bind(('0.0.0.0', %d))\n"
            "s.listen()\n"
            "s.settimeout(%d)\n"
            "while True:\n"
            "    c, a = s.accept()\n"
            "    c.sendall((%s + '\\n').encode())\n"
            "    c.close()\n") % (port, idle, greeting)
    return ["python3", "-c", code]


def udp_echo(port, idle=60):
    """argv of a UDP server on ``port`` answering ``echo:<datagram>``."""
    code = ("import socket\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.bind(('0.0.0.0', %d))\n"
            "s.settimeout(%d)\n"
            "while True:\n"
            "    d, a = s.recvfrom(100)\n"
            "    s.sendto(b'echo:' + d, a)\n") % (port, idle)
    return ["python3", "-c", code]


def tcp_read(address, port, timeout=2):
    """argv of a TCP client printing the first line a server at ``address:port`` sends."""
    code = ("import socket\n"
            "s = socket.create_connection((%r, %d), timeout=%d)\n"
            "s.settimeout(%d)\n"
            "print(s.recv(100).decode().strip())\n") % (address, port, timeout, timeout)
    return ["python3", "-c", code]


def tcp_answer(host, address, port, sandbox=None, timeout=2):
    """The first line a TCP server at ``address:port`` sends to a client on ``host``
    (in its ``sandbox`` when given); None when no connection is made (refused, dropped,
    timed out)."""
    cmd = tcp_read(address, port, timeout)
    proc = (host.sandbox_run(sandbox, cmd, check=False, timeout=timeout + 10) if sandbox
            else host.run(cmd, check=False, timeout=timeout + 10))
    return proc.stdout.strip() if proc.returncode == 0 else None


def wait_listening(host, port, sandbox=None, proto="tcp", timeout=10.0):
    """Wait until a ``proto`` socket listens on ``port`` in ``host`` (or its
    ``sandbox``); raises AssertionError after ``timeout`` seconds."""
    cmd = ["ss", "-Hltn" if proto == "tcp" else "-Hlun", "sport", "= :%d" % port]

    def listening():
        proc = (host.sandbox_run(sandbox, cmd, check=False) if sandbox
                else host.run(cmd, check=False))
        return bool(proc.stdout.strip())
    assert eventually(listening, timeout=timeout), "nothing listens on %s port %d" % (
        proto, port)


@contextlib.contextmanager
def greeters(host, ports, sandbox=None, name="web", idle=60):
    """TCP servers on ``ports`` in ``host`` (or its ``sandbox``), the one on port P
    greeting each client with ``hello from <name> P`` (so a client can tell which
    port it reached), all listening when the body starts, killed after it."""
    procs = [host.popen(tcp_greeter(p, "%s %d" % (name, p), idle=idle), sandbox=sandbox)
             for p in ports]
    try:
        for p in ports:
            wait_listening(host, p, sandbox)
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)
