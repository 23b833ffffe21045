"""The cluster store in the controller: what a host does in etcd for its overlay networks.

Opened only when a global network is touched (a run on bridge networks imports none of
``cluster/``). This layer knows the host's identity in the cluster (its advertise
address, which is also its VTEP), allocates and releases endpoint addresses in the
cluster's IPAM, publishes and withdraws the peer records other hosts program, programs
this host's view of the others (``cluster/peers.py``), and keeps the host agent
configured and running. The network operations (``overlay_networks.py``) and the
endpoint operations build on it.
"""
import ipaddress
import socket
import urllib.parse

from .. import constants as C
from ..errors import CnmError, ValidationError
from ..ipam.allocator import pool_containing
from ..ipam.config import PoolConfig
from ..model import Network
from .session import Session

ESP_OVERHEAD = 40   # ESP transport + AES-GCM per VXLAN packet (netns/xfrm.py)


def global_definition(net):
    """What the cluster's IPAM and peer records need of a local overlay row."""
    return {"id": net.id, "name": net.name, "pools": net.pools}


def encrypted_options(options):
    """True when driver ``options`` ask for encryption (Docker's ``--opt encrypted``:
    present with no value, or ``true``)."""
    value = (options or {}).get(C.OPT_ENCRYPTED)
    return value is not None and str(value).lower() in ("", "true")


def is_encrypted(net):
    """True when overlay network ``net`` (a local row) has ``encrypted`` set."""
    return encrypted_options(net.options)


def local_view(net):
    """What ``cluster/peers.py`` and the agent need of a local overlay row."""
    return {"id": net.id, "name": net.name, "bridge": net.bridge, "vxlan": net.vxlan,
            "vtep": net.vtep, "vni": net.vni, "encrypted": is_encrypted(net)}


class Overlay(Session):
    """The host's side of the cluster store: identity, IPAM, peer records, agent."""

    def _cluster(self):
        """``(client, ClusterNetworks, ClusterIpam)``, opened once per operation.

        Raises ValidationError naming ``cluster_store`` when none is configured (or a
        ``cluster_store*`` field that is malformed, a TLS file that is missing)."""
        if self._cluster_handles is None:
            store = self.cluster_options.get("cluster_store")
            if not store:
                raise ValidationError(
                    "overlay networks need a cluster store: set cluster_store (or the "
                    "environment variable %s) to the etcd endpoints, e.g. "
                    "['http://10.0.0.5:2379']" % C.ENV_CLUSTER_STORE, field="cluster_store")
            from ..cluster.client import EtcdClient, parse_store_options
            from ..cluster.ipam import ClusterIpam
            from ..cluster.networks import ClusterNetworks
            config = parse_store_options(store, self.cluster_options.get("cluster_store_tls"),
                                         self.cluster_options.get("cluster_store_auth"))
            client = EtcdClient(config)
            self._cluster_handles = (client, ClusterNetworks(client), ClusterIpam(client))
        return self._cluster_handles

    def _cluster_config(self):
        """The validated StoreConfig (for the agent's configuration)."""
        return self._cluster()[0].config

    # --- this host in the cluster ---------------------------------------------------------
    def _vtep(self):
        """``(advertise address, underlay link name, underlay MTU)`` of this host.

        ``advertise_address`` when given, else the source address of the route to the
        first etcd endpoint. Raises ValidationError naming ``advertise_address`` when it
        is no IPv4 address of this host."""
        address = self.cluster_options.get("advertise_address")
        if not address:
            endpoint = urllib.parse.urlsplit(self._cluster_config().endpoints[0])
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                probe.connect((endpoint.hostname, endpoint.port or 2379))  # sends nothing
                address = probe.getsockname()[0]
            except OSError as exc:
                raise ValidationError("no route to the cluster store %s to choose an "
                                      "advertise address from (%s); set advertise_address"
                                      % (endpoint.hostname, exc), field="advertise_address")
            finally:
                probe.close()
        try:
            ip = ipaddress.ip_address(str(address).strip())
        except ValueError:
            raise ValidationError("%r is not an IP address" % (address,),
                                  field="advertise_address")
        if ip.version != 4:
            raise ValidationError("%s: the VXLAN underlay is IPv4 here" % ip,
                                  field="advertise_address")
        host = self.netlink.host
        for name in host.link_names():
            link = host.link(name)
            if link and any(c.split("/")[0] == str(ip) for c in host.addresses(link["index"])):
                return str(ip), name, link["mtu"]
        raise ValidationError("%s is not an address of this host" % ip,
                              field="advertise_address")

    def _overlay_network(self, definition, vtep, underlay, underlay_mtu):
        """This host's instance (a local row, not saved) of cluster ``definition``."""
        options = dict(definition.get("options") or {})
        options[C.OPT_VXLANID_LIST] = ",".join(str(v) for v in definition["vnis"])
        overhead = C.VXLAN_OVERHEAD + (ESP_OVERHEAD if encrypted_options(options) else 0)
        mtu = int(options[C.OPT_MTU]) if C.OPT_MTU in options else underlay_mtu - overhead
        bridge = C.OVERLAY_BRIDGE_PREFIX + definition["id"][:12]
        vxlan = C.OVERLAY_VXLAN_PREFIX + definition["id"][:12]
        return Network(id=definition["id"], name=definition["name"], driver=C.OVERLAY_DRIVER,
                       created=definition.get("created", ""), scope="global",
                       enable_ipv6=definition.get("enable_ipv6", False),
                       enable_ipv4=definition.get("enable_ipv4", True),
                       internal=definition.get("internal", False),
                       attachable=definition.get("attachable", False),
                       labels=dict(definition.get("labels") or {}), options=options,
                       pools=list(definition["pools"]), bridge=bridge, mtu=mtu,
                       vni=int(definition["vnis"][0]), vxlan=vxlan, vtep=vtep,
                       underlay=underlay)

    # --- endpoint addresses and peer records ------------------------------------------------
    def _overlay_assign(self, net, ep, spec, undo):
        """Allocate ``ep``'s addresses in the cluster's IPAM (static ones as given);
        pushes their release on ``undo``. Raises ValidationError/ConflictError naming
        ``ipv4_address``/``ipv6_address``, PoolExhaustedError, ClusterUnavailableError."""
        dummy, dummy, ipam = self._cluster()
        definition = global_definition(net)
        pools = [PoolConfig.from_dict(p) for p in net.pools]
        for family in (4, 6):
            key = "ipv%d" % family
            if not any(p.version == family for p in pools):
                if key in spec:
                    raise ValidationError("network %s has no IPv%d subnet" % (net.name, family),
                                          field="%s_address" % key)
                continue
            address = ipam.allocate(definition, ep.id, net.vtep, family, spec.get(key))
            undo.push("release %s in the cluster" % address, ipam.release, definition,
                      str(address), ep.id)
            pool = pool_containing(pools, address)
            setattr(ep, key, "%s/%d" % (address, pool.subnet.prefixlen))
            ep.static[key] = key in spec

    def _overlay_check_static(self, net, spec):
        """Before anything is made: a static address must be in the network's subnets.
        Raises ValidationError naming the option."""
        pools = [PoolConfig.from_dict(p) for p in net.pools]
        for key in ("ipv4", "ipv6"):
            if key in spec and pool_containing(pools, spec[key]) is None:
                raise ValidationError("%s is in no subnet of network %s (%s)" % (
                    spec[key], net.name, ", ".join(p["subnet"] for p in net.pools)),
                    field="%s_address" % key)

    def _overlay_record(self, net, sb, ep):
        """The peer record other hosts program for endpoint ``ep``."""
        names = [sb.name] + ([sb.hostname] if sb.hostname and sb.hostname != sb.name
                             else []) + list(ep.aliases)
        return {"host": net.vtep, "vtep": net.vtep, "mac": ep.mac, "ipv4": ep.ipv4,
                "ipv6": ep.ipv6, "names": names, "sandbox": sb.name}

    def _overlay_publish(self, net, sb, ep):
        """Write ``ep``'s peer record (idempotent). Raises ClusterUnavailableError,
        ConflictError when this host is no member of the network."""
        dummy, networks, dummy = self._cluster()
        networks.publish_endpoint(global_definition(net), ep.id,
                                  self._overlay_record(net, sb, ep))

    def _overlay_release(self, net, ep):
        """Withdraw ``ep``'s peer record and release every address it holds in the
        cluster (found by owner, so a run killed before it saved them loses none).
        Best effort: returns the errors."""
        errors = []
        try:
            dummy, networks, ipam = self._cluster()
            definition = global_definition(net)
            networks.withdraw_endpoint(definition, ep.id)
            for address, holder in ipam.addresses(definition).items():
                if holder.get("owner") == ep.id:
                    ipam.release(definition, address, ep.id)
        except CnmError as exc:
            errors.append("cluster store: %s" % exc)
        return errors

    # --- this host's view of the others ----------------------------------------------------
    def _overlay_sync_peers(self, net, check=False):
        """Program the network's remote endpoints (FDB, neighbours, remote names) from
        the store, and for an encrypted network its SAs, policies and marks (then
        acknowledge the key state applied). Returns the changes (made, or in check mode
        to be made; no key). Raises ClusterUnavailableError, KernelError."""
        from ..cluster import peers
        client, networks, dummy = self._cluster()
        local = local_view(net)
        records, vteps, keydoc, dummy = peers.read_all(client, networks.keys, local)
        try:
            changes = peers.apply(self.netlink.host.rtnl, self.run_dir, local, records,
                                  vteps, check=check, keydoc=keydoc)
        except OSError as exc:
            from ..errors import KernelError
            raise KernelError("program the peers of %s: %s" % (net.name, exc))
        if keydoc is not None and not check:
            peers.acknowledge(client, networks.keys, local, keydoc)
        return changes

    def _agent_config(self):
        """The host agent's configuration: the store and every overlay instance here."""
        config = self._cluster_config()
        nets = [Network.from_doc(d) for d in self.store.all(
            "networks", "json_extract(doc, '$.driver') = ?", (C.OVERLAY_DRIVER,))]
        return {"version": 1, "run_dir": self.run_dir,
                "cluster": {"endpoints": list(config.endpoints), "ca": config.ca,
                            "cert": config.cert, "key": config.key,
                            "username": config.username, "password": config.password},
                "networks": {n.id: local_view(n) for n in nets}}

    def _ensure_agent(self):
        """Configure the host agent for the overlay instances in the store and make it
        run (stopped when none is left). Returns what was done or None."""
        from ..cluster import agent_service
        config = self._agent_config()
        if not config["networks"]:
            return "stopped" if agent_service.retire_agent(self.run_dir) else None
        return agent_service.ensure_agent(self.state_dir, self.run_dir, config)
