"""Global network definitions in the cluster store: created once, joined by hosts.

The first host to create a global network writes its definition, VNIs, subnets and its
own membership in one transaction that holds only if the name, the VNIs and every subnet
key are as the host read them (so two hosts creating different networks at once cannot
both take one VNI or overlapping subnets). A later create of the same name compares its
request with the stored definition: the same → the host joins; different → an error
naming the first field that differs. A host leaving removes its membership; the last
host out (or a forced removal) removes the definition and everything under its id in
the same transaction. Peer records (endpoint MAC, addresses, VTEP) and host records live
here too: they are what the host agent watches.

An encrypted network (``encrypted`` in its options) gets its key document (a random key,
``netns/xfrm.py``) in the creating transaction, beside the definition, never inside it
(definitions are returned and inspected; the key document is read only to program SAs).
A key rotation replaces it step by step (``rotate_step``), each step acknowledged by
every member host (``key_acks``) before the next.
"""
import datetime
import json
import secrets
import time

from ..errors import ConflictError, NotFoundError, ValidationError
from ..validation import driver_option_value
from ..ipam.config import PoolConfig, parse_ipam_config
from .client import CommitUnknownError, compare, encode_json, op_delete, op_get, op_put
from .ipam import VXLANID_FIELD, choose_global_pools, choose_vnis, parse_vxlanid_list
from .keys import KeyLayout

MAX_TRIES = 20       # creating transactions lost to other hosts before giving up
VXLANID_OPTION = "com.docker.network.driver.overlay.vxlanid_list"
_FLAGS = ("enable_ipv4", "enable_ipv6", "internal", "attachable")


def network_request(params):
    """Normalise the parameters of a global network (``cnm_network``'s names) into the
    request ``ClusterNetworks.create`` takes.

    Called before the cluster is touched. Keys: ``name`` (required), ``driver``
    (default ``overlay``), ``ipam`` (``{"config": [...]}``), ``enable_ipv4``,
    ``enable_ipv6``, ``internal``, ``attachable``, ``labels``, ``driver_options``
    (``vxlanid_list`` taken out of it). ``None`` means "not given": never compared
    with an existing definition.

    Raises ValidationError naming the field (``ipam.config[0].subnet``, ``name``,
    ``driver_options.com.docker.network.driver.overlay.vxlanid_list``...).
    """
    name = params.get("name")
    if not isinstance(name, str) or not name or "/" in name:
        raise ValidationError("%r is not a network name" % (name,), field="name")
    options = dict(params.get("driver_options") or {})
    vnis = parse_vxlanid_list(options.pop(VXLANID_OPTION, None), VXLANID_FIELD)
    ipam = params.get("ipam") or {}
    enable_ipv6 = params.get("enable_ipv6")
    config = ipam.get("config")
    pools = None if config is None else parse_ipam_config(config, bool(enable_ipv6))
    if params.get("enable_ipv4") is False and pools and any(p.version == 4 for p in pools):
        raise ValidationError("an IPv4 subnet is given but enable_ipv4 is false",
                              field="ipam.config")
    return {"name": name, "driver": params.get("driver") or "overlay", "pools": pools,
            "vnis": vnis or None, "labels": params.get("labels"),
            "options": {str(k): driver_option_value(k, v) for k, v in options.items()}
            if options else None,
            **{flag: params.get(flag) for flag in _FLAGS}}


def _differs(definition, request):
    """``(field, stored, requested)`` of the first difference, or None."""
    for field in ("driver",) + _FLAGS:
        wanted = request.get(field)
        if wanted is not None and wanted != definition.get(field):
            return field, definition.get(field), wanted
    if request.get("vnis") is not None and request["vnis"] != definition["vnis"][
            :len(request["vnis"])]:
        return VXLANID_FIELD, definition["vnis"], request["vnis"]
    if request.get("labels") is not None and request["labels"] != definition.get("labels"):
        return "labels", definition.get("labels"), request["labels"]
    for key, value in (request.get("options") or {}).items():
        if definition.get("options", {}).get(key) != value:
            return ("driver_options.%s" % key, definition.get("options", {}).get(key), value)
    if request.get("pools") is not None:
        stored = {p["subnet"]: PoolConfig.from_dict(p) for p in definition["pools"]}
        for index, pool in enumerate(request["pools"]):
            field = "ipam.config[%d]" % index
            have = stored.get(str(pool.subnet))
            if have is None:
                return field + ".subnet", sorted(stored), str(pool.subnet)
            if pool.gateway_given and pool.gateway != have.gateway:
                return field + ".gateway", str(have.gateway), str(pool.gateway)
            if pool.ip_range != have.ip_range:
                return field + ".ip_range", _text(have.ip_range), _text(pool.ip_range)
            if pool.aux_addresses != have.aux_addresses:
                return (field + ".aux_addresses", dict(_texts(have.aux_addresses)),
                        dict(_texts(pool.aux_addresses)))
    return None


def _text(value):
    return None if value is None else str(value)


def _texts(pairs):
    return [(name, str(ip)) for name, ip in pairs]


class ClusterNetworks:
    """Global network definitions, host membership and peer records in etcd."""

    def __init__(self, client, layout=None):
        """``client``: an EtcdClient; ``layout``: a KeyLayout (default root)."""
        self.client = client
        self.keys = layout or KeyLayout()

    # --- reading ----------------------------------------------------------------------
    def get(self, name):
        """The definition of global network ``name`` (a dict), or None. Raises
        ClusterUnavailableError."""
        kv = self.client.get(self.keys.network(name))
        return None if kv is None else json.loads(kv.value.decode())

    def list(self):
        """Every global network definition, by name. Raises ClusterUnavailableError."""
        kvs, dummy = self.client.range(self.keys.networks(), prefix=True)
        return [json.loads(kv.value.decode()) for kv in kvs]

    def members(self, definition):
        """The hosts that use a network (sorted names). Raises ClusterUnavailableError."""
        prefix = self.keys.members(definition["id"])
        kvs, dummy = self.client.range(prefix, prefix=True, keys_only=True)
        return sorted(KeyLayout.last_part(kv.key, prefix) for kv in kvs)

    def member_vteps(self, definition):
        """The VTEP addresses of the member hosts (a host is named by its advertise
        address, which is its VTEP): the flood list. Raises ClusterUnavailableError."""
        return self.members(definition)

    # --- creating and joining -----------------------------------------------------------
    def create(self, request, host):
        """Create global network ``request["name"]`` (from ``network_request``) if it
        does not exist, and make ``host`` a member.

        Called by a host's ``cnm_network`` run for a global-scope network. Guarantees:
        one definition per name cluster-wide; its VNIs and subnets are taken by no other
        global network; ``host`` is a member when this returns. Returns
        ``(definition, created)``.

        Raises ConflictError naming the first field that differs from the stored
        definition (``internal``, ``ipam.config[0].subnet``, ``driver_options.<key>``,
        ``...vxlanid_list``), or naming the VNI / subnet taken by another network;
        ValidationError for fewer VNIs than subnets; PoolExhaustedError;
        ClusterUnavailableError; ConflictError after MAX_TRIES lost races.
        """
        network_id = secrets.token_hex(32)
        for dummy in range(MAX_TRIES):
            (existing, subnets, vnis), revision = self.client.snapshot(
                op_get(self.keys.network(request["name"])),
                op_get(self.keys.subnets(), prefix=True),
                op_get(self.keys.vnis(), prefix=True))
            if existing:
                definition = json.loads(existing[0].value.decode())
                if definition["id"] == network_id:
                    return definition, True   # ours: an earlier answer was lost
                self._check_same(definition, request)
                self.join(request["name"], host)
                return definition, False
            definition = self._plan(request, host, network_id, subnets, vnis)
            try:
                result = self.client.txn(*self._create_ops(definition, host, revision))
            except CommitUnknownError:
                continue   # read again: finds it if it committed
            if result.succeeded:
                return definition, True
        raise ConflictError("network %s: other hosts kept changing the global networks; "
                            "try again" % request["name"], field="name")

    def _plan(self, request, host, network_id, subnet_kvs, vni_kvs):
        subnet_prefix, vni_prefix = self.keys.subnets(), self.keys.vnis()
        existing = [(json.loads(kv.value.decode())["name"],
                     KeyLayout.last_part(kv.key, subnet_prefix)) for kv in subnet_kvs]
        taken = {int(KeyLayout.last_part(kv.key, vni_prefix)):
                 json.loads(kv.value.decode())["name"] for kv in vni_kvs}
        enable_ipv4 = request.get("enable_ipv4") is not False
        enable_ipv6 = bool(request.get("enable_ipv6"))
        pools = choose_global_pools(request.get("pools") or [], existing,
                                    enable_ipv4, enable_ipv6)
        count = max(1, sum(1 for p in pools if p.version == 4))
        vnis = choose_vnis(taken, count, request.get("vnis") or ())
        return {"name": request["name"], "id": network_id, "driver": request["driver"],
                "scope": "global", "pools": [p.to_dict() for p in pools], "vnis": vnis,
                "enable_ipv4": enable_ipv4, "enable_ipv6": enable_ipv6,
                "internal": bool(request.get("internal")),
                "attachable": bool(request.get("attachable")),
                "labels": request.get("labels") or {}, "options": request.get("options") or {},
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "created_by": host}

    def _create_ops(self, definition, host, revision):
        name, net = definition["name"], definition["id"]
        compares = [compare(self.keys.network(name), "CREATE", "==", 0),
                    # no subnet taken or changed since the snapshot: no new overlap
                    compare(self.keys.subnets(), "MOD", "<", revision + 1, prefix=True)]
        success = [op_put(self.keys.network(name), definition),
                   op_put(self.keys.member(net, host), {"host": host})]
        for vni in definition["vnis"]:
            compares.append(compare(self.keys.vni(vni), "CREATE", "==", 0))
            success.append(op_put(self.keys.vni(vni), {"network": net, "name": name}))
        for pool in definition["pools"]:
            success.append(op_put(self.keys.subnet(pool["subnet"]),
                                  {"network": net, "name": name}))
        from ..netns import xfrm
        if xfrm.is_encrypted(definition.get("options")):
            success.append(op_put(self.keys.network_keys(net), xfrm.new_key_document()))
        return compares, success

    @staticmethod
    def _check_same(definition, request):
        difference = _differs(definition, request)
        if difference is not None:
            field, stored, wanted = difference
            raise ConflictError(
                "global network %s exists in the cluster store with %s=%s, not %s (remove "
                "it from every host first, or use the stored value)" % (
                    definition["name"], field, json.dumps(stored), json.dumps(wanted)),
                field=field)

    def join(self, name, host):
        """Make ``host`` a member of existing global network ``name`` (idempotent).

        Called when a host sets up a global network that exists already. Guarantees the
        membership was written for the very definition read (not a re-created one).
        Returns the definition. Raises NotFoundError when the network does not exist,
        ClusterUnavailableError.
        """
        for dummy in range(MAX_TRIES):
            kv = self.client.get(self.keys.network(name))
            if kv is None:
                raise NotFoundError("global network %s does not exist" % name, field="name")
            definition = json.loads(kv.value.decode())
            member = self.keys.member(definition["id"], host)
            try:
                result = self.client.txn(
                    [compare(self.keys.network(name), "CREATE", "==", kv.create_revision)],
                    [op_put(member, {"host": host})])
            except CommitUnknownError:
                continue   # a put is idempotent: do it again
            if result.succeeded:
                return definition
        raise ConflictError("network %s keeps being re-created; try again" % name,
                            field="name")

    # --- leaving --------------------------------------------------------------------------
    def leave(self, name, host, force=False):
        """Take ``host`` out of global network ``name``; remove the network with
        everything under its id when no host is left, or at once with ``force``.

        Called when a host removes a global network (``state: absent``). Idempotent.
        Guarantees: the definition is removed only if no other host joined since it was
        read (a host joining at the same moment makes this retry and keeps it).
        Returns ``{"left": bool, "removed": bool}``. Raises ClusterUnavailableError.
        """
        left = False
        for dummy in range(MAX_TRIES):
            kv = self.client.get(self.keys.network(name))
            if kv is None:
                return {"left": left, "removed": left}
            definition = json.loads(kv.value.decode())
            (members,), revision = self.client.snapshot(
                op_get(self.keys.members(definition["id"]), prefix=True, keys_only=True))
            others = [m for m in members if m.key != self.keys.member(definition["id"], host)]
            last = force or not others
            compares = [compare(self.keys.network(name), "MOD", "==", kv.mod_revision)]
            success = [op_delete(self.keys.member(definition["id"], host))]
            if last:
                if not force:
                    compares.append(compare(self.keys.members(definition["id"]), "CREATE",
                                            "<", revision + 1, prefix=True))
                success += self._remove_ops(definition)
            try:
                result = self.client.txn(compares, success)
            except CommitUnknownError:
                left = True   # maybe: the next read tells
                continue
            if result.succeeded:
                return {"left": True, "removed": last}
        raise ConflictError("network %s: hosts kept joining while this one left; try "
                            "again" % name, field="name")

    def _remove_ops(self, definition):
        net = definition["id"]
        ops = [op_delete(self.keys.network(definition["name"])),
               op_delete(self.keys.members(net), prefix=True),
               op_delete(self.keys.ipam(net), prefix=True),
               op_delete(self.keys.endpoints(net), prefix=True),
               op_delete(self.keys.network_keys(net)),
               op_delete(self.keys.network_keys(net) + "/", prefix=True)]
        ops += [op_delete(self.keys.vni(v)) for v in definition["vnis"]]
        ops += [op_delete(self.keys.subnet(p["subnet"])) for p in definition["pools"]]
        return ops

    # --- peers and hosts ----------------------------------------------------------------
    def publish_endpoint(self, definition, endpoint_id, record):
        """Write the peer record of an endpoint (``host``, ``mac``, ``ipv4``, ``ipv6``,
        ``vtep``, ``names``...) so the other hosts' agents program it.

        Called after the endpoint's addresses are allocated. Guarantees the record is
        written only while ``record["host"]`` is a member of the network. Raises
        ConflictError when it is not, ClusterUnavailableError.
        """
        member = self.keys.member(definition["id"], record["host"])
        key = self.keys.endpoint(definition["id"], endpoint_id)
        result = self._idempotent([compare(member, "CREATE", ">", 0)], [op_put(key, record)])
        if not result.succeeded:
            raise ConflictError("host %s is not a member of global network %s" % (
                record["host"], definition["name"]), field="network")

    def withdraw_endpoint(self, definition, endpoint_id):
        """Delete an endpoint's peer record (idempotent). Called when it leaves.
        Raises ClusterUnavailableError."""
        self._idempotent([], [op_delete(self.keys.endpoint(definition["id"], endpoint_id))])

    def endpoints(self, definition):
        """Every peer record of a network: ``{endpoint id: record}``, and the revision
        read (watch from ``revision + 1`` to follow it). Raises
        ClusterUnavailableError."""
        prefix = self.keys.endpoints(definition["id"])
        kvs, revision = self.client.range(prefix, prefix=True)
        return ({KeyLayout.last_part(kv.key, prefix): json.loads(kv.value.decode())
                 for kv in kvs}, revision)

    def host_records(self, host):
        """What the cluster holds of ``host`` (a member named by its advertise
        address): ``{"members": [(network name, id)], "endpoints": [(network id,
        endpoint id, record)], "addresses": [(network id, address, record)]}``.
        Read-only. Raises ClusterUnavailableError."""
        out = {"members": [], "endpoints": [], "addresses": []}
        for definition in self.list():
            net = definition["id"]
            if host in self.members(definition):
                out["members"].append((definition["name"], net))
            records, dummy = self.endpoints(definition)
            for endpoint_id, record in sorted(records.items()):
                if record.get("host") == host:
                    out["endpoints"].append((net, endpoint_id, record))
            kvs, dummy = self.client.range(self.keys.addresses(net), prefix=True)
            prefix = self.keys.addresses(net)
            for kv in kvs:
                record = json.loads(kv.value.decode())
                if record.get("host") == host:
                    out["addresses"].append((net, KeyLayout.last_part(kv.key, prefix),
                                             record))
        return out

    def forget_host(self, host):
        """Remove a host that is gone for good: its memberships, its endpoints' peer
        records and every address it holds, in every global network (the last member
        out does not remove the network: its definition stays for the others).
        Idempotent. Called by ``cnm_cluster_host`` from any other host. Returns what
        was removed (``host_records``' shape). Raises ClusterUnavailableError."""
        found = self.host_records(host)
        for name, net in found["members"]:
            self._idempotent([], [op_delete(self.keys.member(net, host)),
                                  op_delete(self.keys.key_ack(net, host))])
        for net, endpoint_id, dummy in found["endpoints"]:
            self._idempotent([], [op_delete(self.keys.endpoint(net, endpoint_id))])
        for net, address, record in found["addresses"]:
            key = self.keys.address(net, address)
            self._idempotent([compare(key, "VALUE", "==", encode_json(record))],
                             [op_delete(key)])
        return found

    # --- keys of an encrypted network ---------------------------------------------------
    def key_document(self, network_id):
        """``(key document, mod revision)`` of an encrypted network, ``(None, 0)`` when
        it has none. The document holds secrets: hand it to ``peers.apply`` only.
        Raises ClusterUnavailableError."""
        kv = self.client.get(self.keys.network_keys(network_id))
        return (None, 0) if kv is None else (json.loads(kv.value.decode()), kv.mod_revision)

    def put_key_document(self, network_id, doc, mod_revision):
        """Replace the key document if it is still at ``mod_revision`` (a rotation step).
        Returns True when written, False when another host changed it meanwhile (read
        again). Raises ClusterUnavailableError."""
        key = self.keys.network_keys(network_id)
        for dummy in range(MAX_TRIES):
            try:
                result = self.client.txn([compare(key, "MOD", "==", mod_revision)],
                                         [op_put(key, doc)])
            except CommitUnknownError:
                kv = self.client.get(key)
                if kv is not None and kv.value == encode_json(doc):
                    return True
                if kv is None or kv.mod_revision != mod_revision:
                    return False
                continue
            return result.succeeded
        return False

    def key_acks(self, network_id):
        """``{host: {"generations", "primary"}}``: the key state each host applied.
        Raises ClusterUnavailableError."""
        prefix = self.keys.key_acks(network_id)
        kvs, dummy = self.client.range(prefix, prefix=True)
        return {KeyLayout.last_part(kv.key, prefix): json.loads(kv.value.decode())
                for kv in kvs}

    def wait_key_acks(self, definition, state, timeout=15.0, field="key_rotation"):
        """Wait until every member host acknowledged key ``state`` (``xfrm.key_state``).
        Called between the steps of a key rotation. Raises ConflictError naming
        ``field`` and the hosts that did not answer within ``timeout`` seconds (the key
        document stays as it is: a later run resumes), ClusterUnavailableError."""
        deadline = time.monotonic() + timeout
        while True:
            acks = self.key_acks(definition["id"])
            late = [m for m in self.members(definition) if acks.get(m) != state]
            if not late:
                return
            if time.monotonic() > deadline:
                raise ConflictError(
                    "key rotation of network %s: host(s) %s did not apply key generations "
                    "%s (primary %s) within %ds; is their host agent running? The rotation "
                    "resumes with the next run" % (definition["name"], ", ".join(late),
                                                   state["generations"], state["primary"],
                                                   timeout), field=field)
            time.sleep(0.1)

    def register_host(self, host, record, ttl=30):
        """Write ``host``'s record (e.g. ``{"advertise_address": ...}``) under a lease of
        ``ttl`` seconds; returns the lease id (keep it alive with
        ``client.lease_keepalive``; the record vanishes when the host stops doing so).
        Raises ClusterUnavailableError."""
        lease = self.client.lease_grant(ttl)
        self._idempotent([], [op_put(self.keys.host(host), record, lease=lease)])
        return lease

    def _idempotent(self, compares, success):
        """A txn that may simply be sent again when its answer is lost (a put of the
        same value, a delete), up to MAX_TRIES times."""
        for dummy in range(MAX_TRIES - 1):
            try:
                return self.client.txn(compares, success)
            except CommitUnknownError:
                continue
        return self.client.txn(compares, success)
