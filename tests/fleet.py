"""A simulated fleet for the overlay's tests: N hosts, a 3-member etcd cluster and a LAN
server, all on one LAN (``cluster_harness``), every piece a throwaway namespace.

``Fleet(n_hosts)`` builds on ``cluster_harness.EtcdCluster(extra_hosts=n_hosts)``: the
hosts are ``harness.SimHost`` objects (``fleet.hosts``, LAN addresses 10.77.0.101...,
``lan0``), each with its own engine directories. ``fleet.server`` is one more host on the
LAN (10.77.0.200) running an HTTP server on port 80 that answers ``GET /`` with
``SERVER_BODY``: the target for "an overlay sandbox reaches a server on the LAN".

    with Fleet(3) as fleet:
        params = dict(fleet.options(0), name="ov1", driver="overlay")
        ...                                   # run the engine / modules on each host
        fleet.sandbox_exec(1, None, "web2", ["ping", "-c1", "10.0.0.2"])

``close()`` stops the server and every etcd member by PID, removes every namespace and
directory; it is safe to call twice and after a failed test.
"""
import json
import os
import subprocess
import tempfile

from cluster_harness import LAN_NET, EtcdCluster
from harness import SimHost, eventually

SERVER_ADDRESS = LAN_NET + "200"
SERVER_PORT = 80
SERVER_BODY = "hello from the fleet's LAN server"


def _stop_agents(hosts):
    """Stop each host's overlay agent by the PID in its pidfile (the engine starts one per
    host with an overlay network); what is left in a namespace dies with SimHost.close()."""
    try:
        from ansible_collections.cnm.core.plugins.module_utils.cluster import agent_service
        from ansible_collections.cnm.core.plugins.module_utils.errors import CnmError
    except ImportError:
        return
    for host in hosts:
        try:
            agent_service.stop_agent(host.run_dir)
        except (CnmError, OSError, ValueError):
            pass


class Fleet:
    """N simulated hosts, 3 etcd members and an HTTP server on one LAN."""

    def __init__(self, n_hosts=3, heartbeat_ms=100, election_ms=1000, **cluster_kw):
        """Build everything; waits for a healthy etcd cluster and a listening server.
        Raises AssertionError (after removing what was made) when either does not come
        up."""
        self.cluster = None
        self.server = None
        self.server_process = None
        self.web_root = None
        try:
            self.cluster = EtcdCluster(extra_hosts=n_hosts, heartbeat_ms=heartbeat_ms,
                                       election_ms=election_ms, **cluster_kw)
            self.hosts = list(self.cluster.hosts)
            self.addresses = ["%s%d" % (LAN_NET, 101 + i) for i in range(n_hosts)]
            self._start_server()
        except BaseException:
            self.close()
            raise

    # --- the LAN server -------------------------------------------------------------
    def _start_server(self):
        self.server = SimHost("srv")
        self.cluster.lan.attach(self.server, SERVER_ADDRESS)
        self.web_root = tempfile.mkdtemp(prefix="cnmt-web-")
        with open(os.path.join(self.web_root, "index.html"), "w") as fh:
            fh.write(SERVER_BODY + "\n")
        self.server_process = self.server.popen(
            ["python3", "-m", "http.server", str(SERVER_PORT), "--bind", SERVER_ADDRESS,
             "--directory", self.web_root],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def listening():
            return bool(self.server.run(["ss", "-Hltn", "sport", "= :%d" % SERVER_PORT],
                                        check=False).stdout.strip())
        assert eventually(listening, timeout=10.0), "the LAN server did not start"

    @property
    def server_url(self):
        """``http://10.77.0.200/``: what a sandbox fetches to reach the LAN server."""
        return "http://%s:%d/" % (SERVER_ADDRESS, SERVER_PORT)

    # --- what tests need ------------------------------------------------------------
    @property
    def endpoints(self):
        """The etcd members' client URLs (``cluster_store``)."""
        return self.cluster.endpoints

    def host(self, host):
        """A SimHost from an index into ``hosts`` or a SimHost."""
        return self.hosts[host] if isinstance(host, int) else host

    def address(self, host):
        """The LAN address of ``host`` (index or SimHost): its ``advertise_address``."""
        return self.addresses[self.hosts.index(self.host(host))]

    def options(self, host):
        """The common module options for ``host``: its engine directories,
        ``cluster_store`` and ``advertise_address``."""
        h = self.host(host)
        return dict(h.dirs(), cluster_store=list(self.endpoints),
                    advertise_address=self.address(h))

    def run(self, host, cmd, check=True, timeout=60):
        """Run ``cmd`` (shell string or argv) in ``host``'s namespace (``SimHost.run``)."""
        return self.host(host).run(cmd, check=check, timeout=timeout)

    def sandbox_exec(self, host, state_dir, sandbox, cmd, check=False, timeout=60):
        """Run ``cmd`` inside ``sandbox`` on ``host``; returns the CompletedProcess.

        The sandbox's namespace file is ``<netns_dir>/<sandbox>``: the host's own
        netns_dir when ``state_dir`` is None or the host's state_dir, else the
        ``netns`` directory next to ``state_dir`` (SimHost's layout). Raises
        AssertionError when ``check`` and the command fails."""
        h = self.host(host)
        if state_dir is None or os.path.abspath(state_dir) == os.path.abspath(h.state_dir):
            netns_dir = h.netns_dir
        else:
            netns_dir = os.path.join(os.path.dirname(os.path.abspath(state_dir)), "netns")
        return h._nsenter(os.path.join(netns_dir, sandbox), cmd, check, timeout, None)

    def ping(self, host, sandbox, address, timeout=2):
        """True when ``address`` answers one ping from ``sandbox`` on ``host``."""
        proc = self.sandbox_exec(host, None, sandbox, [
            "ping", "-n", "-q", "-c1", "-W%d" % timeout, str(address)])
        return proc.returncode == 0

    def dig(self, host, sandbox, name):
        """The sorted A records ``dig @127.0.0.11 name`` returns in ``sandbox`` on
        ``host`` ([] on no answer or an error)."""
        proc = self.sandbox_exec(host, None, sandbox, [
            "dig", "+short", "+time=2", "+tries=2", "@127.0.0.11", name])
        return sorted(proc.stdout.split()) if proc.returncode == 0 else []

    def fetch(self, host, sandbox, url=None, timeout=3):
        """The body ``curl`` gets from ``url`` (default: the LAN server) inside
        ``sandbox`` on ``host``; None when the request fails."""
        proc = self.sandbox_exec(host, None, sandbox, [
            "curl", "-sS", "--max-time", str(timeout), url or self.server_url])
        return proc.stdout.strip() if proc.returncode == 0 else None

    def write_inventory(self, path):
        """An Ansible inventory (JSON, which is YAML) reaching every host with
        cnm.core.nsenter, hosts named h1..hN, with their directories, cluster_store and
        advertise_address as cnm_* variables; returns ``path``."""
        hosts = {}
        for index, h in enumerate(self.hosts):
            hosts["h%d" % (index + 1)] = {
                "ansible_host": h.path, "cnm_state_dir": h.state_dir,
                "cnm_run_dir": h.run_dir, "cnm_netns_dir": h.netns_dir,
                "cnm_advertise_address": self.addresses[index]}
        inventory = {"all": {"hosts": hosts, "vars": {
            "ansible_connection": "cnm.core.nsenter",
            "ansible_python_interpreter": "{{ ansible_playbook_python }}",
            "cnm_cluster_store": list(self.endpoints)}}}
        with open(path, "w") as fh:
            json.dump(inventory, fh, indent=2)
        return path

    # --- cleanup --------------------------------------------------------------------
    def close(self):
        """Stop the server (by PID), the etcd members, remove every host and the LAN."""
        if self.server_process is not None:
            if self.server_process.poll() is None:
                self.server_process.kill()
            self.server_process.wait(timeout=10)
            self.server_process = None
        if self.server is not None:
            self.server.close()
            self.server = None
        if self.web_root:
            subprocess.run(["rm", "-rf", self.web_root], check=False)
            self.web_root = None
        if self.cluster is not None:
            _stop_agents(self.hosts)
            self.cluster.close()
            self.cluster = None
        self.hosts = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
