"""The key layout of the cluster store: every global key under one prefix.

```
<root>/networks/<name>                         network definition (JSON), created once
<root>/vnis/<vni>                              VNI taken: {"network": id, "name": name}
<root>/subnets/<subnet>                        subnet taken (CIDR as is, e.g. 10.0.3.0/24)
<root>/members/<network id>/<host>             a host that uses the network
<root>/ipam/<network id>/addr/<address>        address taken: {"owner", "host", "token"}
<root>/ipam/<network id>/last/<subnet>         the last address handed out in that subnet
<root>/endpoints/<network id>/<endpoint id>    peer record: MAC, IPs, VTEP, names
<root>/hosts/<host>                            host record (advertise address), leased
<root>/keys/<network id>                       an encrypted network's keys (secrets!):
                                               {"keys": [{generation, secret}], "primary"}
<root>/keys/<network id>/acks/<host>           the key state a host applied:
                                               {"generations": [...], "primary": gen}
```

``root`` is ``/cnm/v1`` unless told otherwise (tests use a root of their own). Values are
canonical JSON (``client.encode_json``) so a transaction can compare them byte for byte.
Everything of one network apart from its name, VNIs and subnets lives under prefixes
holding its id, so removing a network is one transaction of a few prefix deletes.
"""

DEFAULT_ROOT = "/cnm/v1"


class KeyLayout:
    """Builds every key of the cluster store under one root prefix."""

    def __init__(self, root=DEFAULT_ROOT):
        """``root``: the prefix (no trailing slash), e.g. ``/cnm/v1``. Raises ValueError
        when it does not start with ``/`` or ends with one."""
        if not root.startswith("/") or root.endswith("/"):
            raise ValueError("key root must start with / and not end with one: %r" % root)
        self.root = root

    def _key(self, *parts):
        for part in parts:
            text = str(part)
            if not text or "\n" in text or text in (".", ".."):
                raise ValueError("bad key part %r" % (part,))
        return "/".join((self.root,) + tuple(str(p) for p in parts))

    # networks and what they hold globally
    def networks(self):
        """Prefix of every network definition."""
        return self.root + "/networks/"

    def network(self, name):
        """Key of the definition of network ``name`` (a name holds no ``/``)."""
        if "/" in str(name):
            raise ValueError("a network name holds no '/': %r" % (name,))
        return self._key("networks", name)

    def vnis(self):
        """Prefix of every taken VNI."""
        return self.root + "/vnis/"

    def vni(self, vni):
        """Key of one VNI (decimal)."""
        return self._key("vnis", int(vni))

    def subnets(self):
        """Prefix of every taken subnet."""
        return self.root + "/subnets/"

    def subnet(self, subnet):
        """Key of one subnet, in its normal CIDR form."""
        return self.root + "/subnets/" + str(subnet)

    def members(self, network_id):
        """Prefix of the hosts using network ``network_id``."""
        return self._key("members", network_id) + "/"

    def member(self, network_id, host):
        """Key of one host's membership of a network."""
        return self._key("members", network_id, host)

    # addresses
    def ipam(self, network_id):
        """Prefix of everything address-related of one network (addresses, cursors)."""
        return self._key("ipam", network_id) + "/"

    def addresses(self, network_id):
        """Prefix of the taken addresses of one network."""
        return self._key("ipam", network_id, "addr") + "/"

    def address(self, network_id, address):
        """Key of one taken address (its ``ipaddress`` string form)."""
        return self._key("ipam", network_id, "addr", address)

    def cursor(self, network_id, subnet):
        """Key holding the last address handed out in ``subnet`` of a network."""
        return self._key("ipam", network_id, "last") + "/" + str(subnet)

    # peers and hosts
    def endpoints(self, network_id):
        """Prefix of the peer records of one network."""
        return self._key("endpoints", network_id) + "/"

    def endpoint(self, network_id, endpoint_id):
        """Key of one endpoint's peer record."""
        return self._key("endpoints", network_id, endpoint_id)

    def hosts(self):
        """Prefix of every host record."""
        return self.root + "/hosts/"

    def host(self, host):
        """Key of one host's record."""
        return self._key("hosts", host)

    # encryption keys of a network
    def network_keys(self, network_id):
        """Key of the key document of an encrypted network (holds its secrets: read
        only by the hosts that program its SAs, never returned or logged)."""
        return self._key("keys", network_id)

    def key_acks(self, network_id):
        """Prefix of the hosts' acknowledgements of the key state they applied."""
        return self._key("keys", network_id, "acks") + "/"

    def key_ack(self, network_id, host):
        """Key of one host's acknowledgement (no secret in it)."""
        return self._key("keys", network_id, "acks", host)

    @staticmethod
    def last_part(key, prefix):
        """What follows ``prefix`` in ``key`` (the name, VNI, address...)."""
        return key[len(prefix):] if key.startswith(prefix) else key
