"""IPAM in the controller: a network's pools completed (subnets chosen, overlaps refused)
and its endpoints' addresses assigned (static ones reserved, the rest allocated)."""
import ipaddress

from .. import constants as C
from ..drivers import get_driver
from ..errors import CnmError, ConflictError, ValidationError
from ..ipam.allocator import AddressAllocator, AllocationLookup, pool_containing
from ..ipam.config import PoolConfig
from ..ipam.pools import choose_subnet
from ..netns.links import host_networks
from .session import Session


class Addresses(Session):
    """Gives endpoints their IPv4/IPv6 addresses from the network's pools."""

    def _allocators(self, net):
        """(pools, one AddressAllocator per pool) of ``net``, asking the store about
        single addresses (an attach reads a few rows, not every allocation)."""
        lookup = AllocationLookup(
            lambda address: self.store.is_allocated(net.id, address),
            lambda: list(self.store.allocations(net.id)))
        pools = [PoolConfig.from_dict(p) for p in net.pools]
        return pools, [AddressAllocator(pool, lookup, net.ipam_last.get(str(pool.subnet)))
                       for pool in pools]

    def _assign_addresses(self, net, ep, spec=None, keep=False, persist=True,
                          allocators=None):
        """Give ``ep`` its addresses in ``net``: static ones reserved, others allocated
        walking forward from the last allocation. Persists the allocations unless in
        check mode. ``keep``: try to keep the endpoint's current addresses (rebuild).
        ``allocators``: ``(pools, allocators)`` to use instead of the store's (a rebuild
        plans every endpoint on fresh allocators before anything is touched).
        Raises ValidationError/ConflictError naming the address option."""
        spec = spec or {}
        if not get_driver(net.driver).uses_ipam:
            return
        pools, allocs = allocators or self._allocators(net)
        families = ip_families(net)
        for family in (4, 6):
            if "ipv%d" % family in spec and family not in families:
                raise ValidationError("network %s has IPv%d disabled (enable_ipv%d: false)"
                                      % (net.name, family, family),
                                      field="ipv%d_address" % family)
        for family in families:
            key = "ipv%d" % family
            field = "ipv%d_address" % family
            fam_allocs = [a for a, p in zip(allocs, pools) if p.version == family]
            if not fam_allocs:
                if key in spec:
                    raise ValidationError("network %s has no IPv%d subnet" % (net.name, family),
                                          field=field)
                continue
            address = None
            static = key in spec or (keep and ep.static.get(key))
            wanted = spec.get(key)
            if wanted is None and keep and getattr(ep, key):
                wanted = ipaddress.ip_interface(getattr(ep, key)).ip
            if wanted is not None:
                pool = pool_containing(pools, wanted)
                target = fam_allocs[0] if pool is None else allocs[pools.index(pool)]
                try:
                    address = target.reserve(wanted, field)
                except CnmError:
                    if key in spec or (keep and ep.static.get(key)):
                        raise
                    address = None  # kept address no longer fits: take a new one
            if address is None:
                last_error = None
                for alloc in fam_allocs:
                    try:
                        address = alloc.allocate()
                        pool = alloc.pool
                        net.ipam_last[str(pool.subnet)] = str(address)
                        break
                    except CnmError as exc:
                        last_error = exc
                if address is None:
                    raise last_error
            pool = pool_containing(pools, address)
            setattr(ep, key, "%s/%d" % (address, pool.subnet.prefixlen))
            ep.static[key] = bool(static)
            if persist and not self.check_mode:
                self.store.allocate(net.id, str(address), ep.id)

    def _in_use_subnets(self, exclude_id=None):
        """(name, subnet text) of every pool of every network but ``exclude_id``
        (``ipam/pools.py`` reads the texts as integers)."""
        return list(self.store.network_subnets(exclude_id))

    def _complete_pools(self, net, exclude_id=None):
        """Check explicit subnets against other networks, choose missing ones. The check
        is two index lookups a subnet (``Store.overlapping_subnet``): a network create
        costs the same with 0 or 100 networks; only choosing a subnet reads them all."""
        for i, pool in enumerate(net.pools):
            hit = self.store.overlapping_subnet(pool["subnet"], exclude_id)
            if hit:
                other = ipaddress.ip_network(hit[1], strict=False)
                raise ConflictError("subnet %s overlaps %s of network %s"
                                    % (pool["subnet"], other, hit[0]),
                                    field="ipam.config[%d].subnet" % i)
        if not get_driver(net.driver).uses_ipam:
            return
        families = {ipaddress.ip_network(p["subnet"]).version for p in net.pools}
        wanted = ip_families(net)
        missing = [f for f in wanted if f not in families]
        if not missing:
            return
        in_use = [subnet for dummy, subnet in self._in_use_subnets(exclude_id)]
        in_use += host_networks()
        for family in missing:
            pools = C.DEFAULT_ADDRESS_POOLS if family == 4 else C.DEFAULT_ADDRESS_POOLS_V6
            subnet = choose_subnet(pools, in_use, family)
            net.pools.append(PoolConfig.for_subnet(subnet).to_dict())
            net.auto_subnets.append(str(subnet))
            in_use.append(subnet)


def ip_families(net):
    """The IP families a network's endpoints get addresses of: IPv4 unless
    ``enable_ipv4`` is false (IPv6-only), IPv6 with ``enable_ipv6``."""
    return ([4] if net.enable_ipv4 else []) + ([6] if net.enable_ipv6 else [])
