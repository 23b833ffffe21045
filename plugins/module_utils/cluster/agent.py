"""The host agent: keeps this host's overlay peers in step with the cluster store.

Runs as its own process on each host (``agent_service.py`` installs, starts and stops
it; the module runs of a host with overlay networks restart it when it is gone). Its
configuration (``<run_dir>/agent/config.json``) names the cluster store and this host's
overlay network instances. It reads every network's peer records and members once, at
one revision, programs them (``peers.apply``: FDB, neighbour entries, the resolver's
records of remote sandboxes), then watches the store from the next revision: each change
of a network's endpoints or members is applied at once (a detach on another host is gone
here within milliseconds). A watch that breaks (etcd restarted, leader change, a member
gone) is started again from the last revision seen on any endpoint; a compacted
revision means reading everything again. SIGHUP (or a changed config file) makes it
re-read its configuration; SIGTERM stops it.

For an encrypted network it also programs the SAs, policies and marks from the
network's key document (``peers.apply``), and acknowledges the key state it applied
(``keys/<id>/acks/<host>``: generations only) so a key rotation can move to its next
step. That acknowledgement is all it writes to the cluster store; it never writes the
engine's SQLite store, and never logs the store's credentials or a key.
"""
import argparse
import json
import os
import signal
import socket
import sys
import time

from . import peers
from .client import (ClusterStoreError, CompactedError, EtcdClient, StoreConfig)
from .keys import KeyLayout
from ..errors import CnmError
from ..netns.rtnl import Rtnl

RETRY_PAUSE = 0.5      # seconds between tries while the store is unreachable
WATCH_IDLE = 1.0       # seconds a watch may stay silent before the config is checked


def log(message):
    """One line on stderr (the agent's log file), with a UTC timestamp."""
    sys.stderr.write("%s cnm-agent[%d]: %s\n" % (
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), os.getpid(), message))
    sys.stderr.flush()


class Agent:
    """One host's agent: configuration, store client, netlink socket, watch loop."""

    def __init__(self, config_path):
        self.config_path = config_path
        self.config = None
        self.stamp = None
        self.client = None
        self.keys = None
        self.rtnl = Rtnl()
        self.stopping = False
        self.reload = True
        self.acked = {}    # network id -> key state acknowledged last

    # --- configuration ------------------------------------------------------------------
    def _stamp(self):
        try:
            st = os.stat(self.config_path)
            return (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            return None

    def load(self):
        """(Re)read the configuration when it changed; returns True when it did."""
        stamp = self._stamp()
        if not self.reload and stamp == self.stamp:
            return False
        self.reload = False
        self.stamp = stamp
        with open(self.config_path) as f:
            config = json.load(f)
        store = config["cluster"]
        if self.config is None or self.config["cluster"] != store:
            if self.client is not None:
                self.client.close()
            self.client = EtcdClient(StoreConfig(
                store["endpoints"], ca=store.get("ca"), cert=store.get("cert"),
                key=store.get("key"), username=store.get("username"),
                password=store.get("password"), retry_for=5.0))
        self.keys = KeyLayout(config.get("root") or "/cnm/v1")
        self.config = config
        log("configuration: %d network(s), %d endpoint(s) of the store"
            % (len(config.get("networks") or {}), len(store["endpoints"])))
        return True

    @property
    def networks(self):
        """This host's overlay instances, by network id."""
        return (self.config or {}).get("networks") or {}

    # --- work ---------------------------------------------------------------------------
    def sync(self, network_id):
        """Read one network from the store and apply it here; returns the revision."""
        local = self.networks[network_id]
        records, vteps, keydoc, revision = peers.read_all(self.client, self.keys, local)
        changes = peers.apply(self.rtnl, self.config["run_dir"], local, records, vteps,
                              keydoc=keydoc)
        for change in changes:
            log("%s: %s" % (local["name"], change))
        if keydoc is not None:
            self.acked[network_id] = peers.acknowledge(self.client, self.keys, local, keydoc,
                                                       self.acked.get(network_id))
        return revision

    def sync_all(self):
        """Every network read and applied; returns the lowest revision read (watching
        from the one after it misses nothing)."""
        revisions = [self.sync(network_id) for network_id in sorted(self.networks)]
        return min(revisions) if revisions else 0

    def network_of(self, key):
        """The network id a changed key belongs to (endpoints, members, keys), or None
        (acknowledgements included: they change nothing here)."""
        for prefix in (self.keys.root + "/endpoints/", self.keys.root + "/members/",
                       self.keys.root + "/keys/"):
            if key.startswith(prefix):
                rest = key[len(prefix):].split("/", 1)
                return None if len(rest) > 1 and rest[1].startswith("acks/") else rest[0]
        return None

    def run(self):
        """The loop: load, read everything, watch; until SIGTERM."""
        while not self.stopping:
            try:
                self.load()
                if not self.networks:
                    time.sleep(WATCH_IDLE)
                    continue
                revision = self.sync_all()
                self._ready()
                while not self.stopping:
                    for event in self.client.watch(self.keys.root + "/", revision + 1,
                                                   timeout=WATCH_IDLE):
                        revision = max(revision, event.revision)
                        network_id = self.network_of(event.kv.key)
                        if network_id in self.networks:
                            self.sync(network_id)
                        if self.stopping:
                            break
                    if self.load():
                        break   # new configuration: read everything again
            except CompactedError as exc:
                log("watch: %s; reading everything again" % exc)
            except (ClusterStoreError, CnmError, OSError, ValueError, KeyError) as exc:
                log("store or kernel: %s; trying again" % exc)
                time.sleep(RETRY_PAUSE)
        log("stopped")
        return 0

    def _ready(self):
        """Tell the starter the first full sync is done (a file beside the pidfile)."""
        path = os.path.join(os.path.dirname(self.config_path), "agent.pid.ready")
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write("%d\n" % os.getpid())

    def stop(self, *dummy):
        self.stopping = True

    def hangup(self, *dummy):
        self.reload = True


def main(argv=None):
    """Entry point of the runner (``cnm-agent.py --config PATH``)."""
    parser = argparse.ArgumentParser(description="cnm host agent")
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    agent = Agent(args.config)
    signal.signal(signal.SIGTERM, agent.stop)
    signal.signal(signal.SIGINT, agent.stop)
    signal.signal(signal.SIGHUP, agent.hangup)
    socket.setdefaulttimeout(10)
    log("started")
    return agent.run()
