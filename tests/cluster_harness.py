"""An etcd cluster on a LAN of simulated hosts, for the cluster store's tests.

``Lan`` is a bridge in a namespace of its own; ``Lan.attach(host, address)`` cables a
simulated host (``harness.SimHost``) to it (interface ``lan0``). ``EtcdCluster`` runs N
members of Debian's ``etcd`` (3.4), each in its own host namespace with client and peer
URLs on its LAN address, data under one temporary directory (tmpfs when there is one), and
a ``client`` host on the same LAN for the test's own requests (the test process has no
route to the LAN: run client code inside ``in_netns(cluster.client.path)``, or as a
process under ``nsenter``). Nothing listens on the real host's network.

Every member is started directly (``nsenter`` execs etcd, so the PID we keep is etcd's)
and stopped by that PID; ``close()`` stops every member, removes the namespaces and the
data, and is safe to call twice and after a failed test.
"""
import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time

from harness import SimHost, in_netns, suffix, tmpfs_dir

LAN_NET = "10.77.0."
CLIENT_PORT = 2379
PEER_PORT = 2380


def lan_mac(namespace):
    """The MAC address of ``lan0`` in the named network namespace."""
    out = subprocess.run(["ip", "-n", namespace, "-j", "link", "show", "lan0"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return json.loads(out)[0]["address"]


def pin_neighbours(namespace, peers):
    """Permanent ARP entries on ``lan0`` of the named namespace for ``peers``
    (``[(address, mac)]``), in one ``ip -batch``. Raises CalledProcessError.

    Every simulated host shares this machine's one neighbour table, whose limit
    (``net.ipv4.neigh.default.gc_thresh3``, 1,024 by default) is machine-wide: with 50
    hosts each resolving its 49 peer VTEPs and the etcd members, the dynamic entries
    passed it and the kernel refused new ones ("neighbor table overflow", ENOBUFS):
    sandboxes stayed unanswered for seconds and a host could not reach etcd. Permanent
    entries do not count against that limit, and the machine's settings are left
    alone. (Real hosts each have a table of their own.)"""
    if not peers:
        return
    script = "".join("neigh replace %s lladdr %s dev lan0 nud permanent\n" % peer
                     for peer in peers)
    subprocess.run(["ip", "-n", namespace, "-batch", "-"], input=script,
                   capture_output=True, text=True, check=True, timeout=60)


class Lan:
    """A switch: a bridge ``br0`` in a namespace of its own; hosts hang off it."""

    def __init__(self):
        self.switch = SimHost("lan")
        self.switch.run("ip link add br0 type bridge && ip link set br0 up")
        self.cabled = []    # (host, address, lan0 MAC)

    def attach(self, host, address, prefix=24):
        """Cable ``host`` to the switch as ``lan0`` with ``address``/``prefix``."""
        port = "p%s" % suffix(8)
        tmp = "t%s" % suffix(8)
        subprocess.run(["ip", "link", "add", tmp, "netns", host.name, "type", "veth",
                        "peer", "name", port, "netns", self.switch.name], check=True)
        host.run("ip link set %s name lan0 && ip addr add %s/%d dev lan0 && "
                 "ip link set lan0 up" % (tmp, address, prefix))
        self.switch.run("ip link set %s master br0 && ip link set %s up" % (port, port))
        mac = lan_mac(host.name)
        pin_neighbours(host.name, [(a, m) for dummy, a, m in self.cabled])
        for other, dummy, dummy2 in self.cabled:
            pin_neighbours(other.name, [(address, mac)])
        self.cabled.append((host, address, mac))

    def close(self):
        """Remove the switch (the hosts are their owners' to close)."""
        self.switch.close()


def make_certs(directory, address):
    """A CA, a server certificate for ``address`` (IP SAN) and a client certificate,
    made with ``openssl`` in ``directory``; returns their paths as a dict (``ca``,
    ``server_cert``, ``server_key``, ``client_cert``, ``client_key``)."""
    directory = str(directory)
    paths = {name: os.path.join(directory, name + ".pem") for name in (
        "ca", "ca_key", "server_cert", "server_key", "client_cert", "client_key")}

    def openssl(*args):
        subprocess.run(["openssl"] + list(args), check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=cnmt-ca", "-keyout", paths["ca_key"], "-out", paths["ca"])
    for who, subject, ext in (
            ("server", "/CN=%s" % address,
             "subjectAltName=IP:%s\nextendedKeyUsage=serverAuth,clientAuth" % address),
            ("client", "/O=cnmt-client", "extendedKeyUsage=clientAuth")):
        csr = os.path.join(directory, who + ".csr")
        extfile = os.path.join(directory, who + ".ext")
        with open(extfile, "w") as fh:
            fh.write(ext + "\n")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
                "-keyout", paths[who + "_key"], "-out", csr)
        openssl("x509", "-req", "-in", csr, "-CA", paths["ca"], "-CAkey", paths["ca_key"],
                "-CAcreateserial", "-days", "2", "-extfile", extfile,
                "-out", paths[who + "_cert"])
    return paths


def client_ssl(certs):
    """An ssl context trusting ``certs["ca"]`` and showing the client certificate."""
    context = ssl.create_default_context(cafile=certs["ca"])
    context.load_cert_chain(certs["client_cert"], certs["client_key"])
    return context


def http_json(address, path, body=None, timeout=2.0, context=None, token=None):
    """POST ``body`` to etcd's JSON gateway at ``address`` (from the calling thread's
    namespace; over TLS with an ssl ``context``); returns the decoded answer, or raises
    OSError."""
    if context is not None:
        conn = http.client.HTTPSConnection(address, CLIENT_PORT, timeout=timeout,
                                           context=context)
    else:
        conn = http.client.HTTPConnection(address, CLIENT_PORT, timeout=timeout)
    try:
        conn.request("POST" if body is not None else "GET", path,
                     body=None if body is None else json.dumps(body),
                     headers={"Authorization": token} if token else {})
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise OSError("HTTP %d from %s%s: %s" % (response.status, address, path, data))
        return json.loads(data.decode() or "{}")
    except http.client.HTTPException as err:
        raise OSError(str(err))
    finally:
        conn.close()


class EtcdMember:
    """One etcd member: its host namespace, address, data dir and process."""

    def __init__(self, name, host, address, data_dir):
        self.name, self.host, self.address, self.data_dir = name, host, address, data_dir
        self.process = None
        self.tls = None
        self.log_path = data_dir + ".log"

    @property
    def endpoint(self):
        """The member's client URL (``http://<LAN address>:2379``)."""
        return "%s://%s:%d" % ("https" if self.tls else "http", self.address, CLIENT_PORT)

    @property
    def running(self):
        """True while the member's process lives."""
        return self.process is not None and self.process.poll() is None


class EtcdCluster:
    """N etcd members on a LAN, plus a client host; a context manager."""

    def __init__(self, members=3, extra_hosts=0, heartbeat_ms=50, election_ms=500,
                 certs=None):
        """Build the LAN and start ``members`` etcd members; ``extra_hosts`` more
        simulated hosts are cabled to the LAN for clients (``self.hosts``). With
        ``certs`` (``make_certs`` for the first member's address, 10.77.0.11) clients
        must use https and a client certificate. Waits up to 30 s for a healthy
        cluster; raises AssertionError (after cleaning up) when it does not come up."""
        self.certs = certs
        self.context = client_ssl(certs) if certs else None
        self.token = "cnmt-%s" % suffix()
        self.lan = None
        self.members, self.hosts, self.client = [], [], None
        self.tmp = tempfile.mkdtemp(prefix="cnmt-etcd-", dir=tmpfs_dir())
        self.heartbeat_ms, self.election_ms = heartbeat_ms, election_ms
        try:
            self.lan = Lan()
            for index in range(members):
                address = "%s%d" % (LAN_NET, 11 + index)
                host = self._cabled(SimHost("etcd%d" % index), address)
                member = EtcdMember("m%d" % index, host, address,
                                    os.path.join(self.tmp, "m%d" % index))
                member.tls = certs
                self.members.append(member)
            self.client = self._cabled(SimHost("ctl"), "%s%d" % (LAN_NET, 2))
            for index in range(extra_hosts):
                self.hosts.append(self._cabled(SimHost("c%d" % index),
                                               "%s%d" % (LAN_NET, 101 + index)))
            for member in self.members:
                self._start(member, "new")
            self.wait_healthy()
        except BaseException:
            self.close()
            raise

    def _cabled(self, host, address):
        """``host`` cabled to the LAN; closed when that fails (it is no one's yet)."""
        try:
            self.lan.attach(host, address)
        except BaseException:
            host.close()
            raise
        return host

    # --- processes --------------------------------------------------------------------
    def _start(self, member, state):
        peers = ",".join("%s=http://%s:%d" % (m.name, m.address, PEER_PORT)
                         for m in self.members)
        argv = ["nsenter", "--net=%s" % member.host.path, "etcd",
                "--name", member.name, "--data-dir", member.data_dir,
                "--listen-client-urls", member.endpoint,
                "--advertise-client-urls", member.endpoint,
                "--listen-peer-urls", "http://%s:%d" % (member.address, PEER_PORT),
                "--initial-advertise-peer-urls", "http://%s:%d" % (member.address, PEER_PORT),
                "--initial-cluster", peers, "--initial-cluster-token", self.token,
                "--initial-cluster-state", state,
                "--heartbeat-interval", str(self.heartbeat_ms),
                "--election-timeout", str(self.election_ms),
                "--log-level", "warn", "--logger", "zap"]
        if member.tls:
            argv += ["--cert-file", member.tls["server_cert"],
                     "--key-file", member.tls["server_key"],
                     "--trusted-ca-file", member.tls["ca"], "--client-cert-auth"]
        log = open(member.log_path, "ab")
        try:
            member.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL)
        finally:
            log.close()

    def _stop(self, member, sig=signal.SIGTERM, wait=5.0):
        process = member.process
        if process is None or process.poll() is not None:
            return
        try:
            os.kill(process.pid, sig)
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        except ProcessLookupError:
            pass

    # --- the cluster's state ----------------------------------------------------------
    @property
    def endpoints(self):
        """Every member's client URL (live or not): what ``cluster_store`` lists."""
        return [m.endpoint for m in self.members]

    def ask(self, member, path, body=None, timeout=2.0, token=None):
        """``http_json`` to ``member`` from the client host's namespace."""
        with in_netns(self.client.path):
            return http_json(member.address, path, body, timeout, self.context, token)

    def enable_auth(self, password):
        """Add user ``root`` with ``password`` and the root role, then turn auth on."""
        first = self.members[0]
        self.ask(first, "/v3/auth/user/add", {"name": "root", "password": password})
        self.ask(first, "/v3/auth/role/add", {"name": "root"})
        self.ask(first, "/v3/auth/user/grant", {"user": "root", "role": "root"})
        self.ask(first, "/v3/auth/enable", {})

    def healthy(self):
        """True when every running member reports health and agrees on a leader."""
        leaders = set()
        for member in self.members:
            if not member.running:
                continue
            try:
                if self.ask(member, "/health").get("health") not in ("true", True):
                    return False
                leaders.add(self.ask(member, "/v3/maintenance/status", {}).get("leader"))
            except OSError:
                return False
        return len(leaders) == 1 and None not in leaders and "0" not in leaders

    def wait_healthy(self, timeout=30.0):
        """Wait until ``healthy()``; raises AssertionError with the members' logs' tails
        after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for member in self.members:
                if member.process is not None and member.process.poll() is not None \
                        and member.process.returncode not in (None, -9, -15):
                    raise AssertionError("etcd %s exited %s: %s" % (
                        member.name, member.process.returncode, self.log_tail(member)))
            if self.healthy():
                return
            time.sleep(0.1)
        raise AssertionError("etcd cluster not healthy after %.0f s:\n%s" % (
            timeout, "\n".join("%s: %s" % (m.name, self.log_tail(m)) for m in self.members)))

    def log_tail(self, member, lines=5):
        """The last ``lines`` lines of a member's log."""
        try:
            with open(member.log_path, "rb") as fh:
                return b"".join(fh.readlines()[-lines:]).decode(errors="replace")
        except OSError:
            return "(no log)"

    def leader(self):
        """The member that leads now, found through the API (maintenance status of each
        running member: its own id against the leader's id). None if there is none."""
        for member in self.members:
            if not member.running:
                continue
            try:
                status = self.ask(member, "/v3/maintenance/status", {})
            except OSError:
                continue
            if status.get("leader") and status.get("leader") == status.get(
                    "header", {}).get("member_id"):
                return member
        return None

    def kill(self, member):
        """SIGKILL one member (by its PID) and reap it."""
        self._stop(member, signal.SIGKILL)

    def kill_leader(self):
        """SIGKILL the current leader; returns that member. Raises AssertionError when no
        leader is found within 5 s."""
        deadline = time.monotonic() + 5.0
        leader = self.leader()
        while leader is None and time.monotonic() < deadline:
            time.sleep(0.05)
            leader = self.leader()
        assert leader is not None, "no etcd leader to kill"
        self.kill(leader)
        return leader

    def restart(self, member, timeout=30.0):
        """Start a stopped member again on its data dir and wait for a healthy cluster."""
        self._start(member, "existing")
        self.wait_healthy(timeout)

    # --- cleanup ----------------------------------------------------------------------
    def close(self):
        """Stop every member by its PID, remove the hosts, the LAN and the data."""
        for member in self.members:
            self._stop(member)
        for host in [m.host for m in self.members] + self.hosts + [self.client]:
            if host is not None:
                host.close()
        if self.lan is not None:
            self.lan.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.members, self.hosts, self.client, self.lan = [], [], None, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LossyProxy:
    """A one-way-lossy HTTP relay in front of one etcd member, for the ambiguous commit.

    Listens on ``listen`` (host, port) in the calling thread's namespace and relays each
    request to ``upstream``. ``drop_replies = n``: the next n write transactions
    (``/v3/kv/txn`` with a put or delete) reach etcd, but the client's connection is
    closed instead of answered (the commit happened, the answer is lost).
    ``drop_requests = n``: the next n write transactions are not relayed at all (no
    commit, no answer). ``dropped`` counts both. A context manager; ``close()`` stops it.
    """

    def __init__(self, listen, upstream):
        import socket
        import threading
        self.upstream = upstream
        self.drop_replies = self.drop_requests = self.dropped = 0
        self.server = socket.create_server(listen)
        self.server.settimeout(0.2)
        self.closed = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        import socket
        import threading
        while not self.closed:
            try:
                conn, dummy = self.server.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    def _relay(self, conn):
        reader = conn.makefile("rb")
        try:
            while not self.closed:
                head = reader.readline()
                if not head:
                    return
                method, path, dummy = head.decode().split(" ", 2)
                headers = {}
                for line in iter(reader.readline, b"\r\n"):
                    name, value = line.decode().split(":", 1)
                    headers[name.strip().lower()] = value.strip()
                body = reader.read(int(headers.get("content-length", 0)))
                write = path == "/v3/kv/txn" and (b"request_put" in body
                                                  or b"request_delete_range" in body)
                if write and self.drop_requests:
                    self.drop_requests -= 1
                    self.dropped += 1
                    return
                upstream = http.client.HTTPConnection(*self.upstream, timeout=10)
                upstream.request(method, path, body=body,
                                 headers={"Content-Type": "application/json"})
                response = upstream.getresponse()
                data = response.read()
                upstream.close()
                if write and self.drop_replies:
                    self.drop_replies -= 1
                    self.dropped += 1
                    return
                conn.sendall(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (
                                 response.status, response.reason.encode(), len(data), data))
        except (OSError, ValueError):
            return
        finally:
            reader.close()
            conn.close()

    def close(self):
        """Stop listening; relays in flight end with their connections."""
        self.closed = True
        self.server.close()
        self.thread.join(timeout=2)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
