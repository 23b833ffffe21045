"""Address assignment of endpoints: static addresses reserved, the rest allocated."""
import ipaddress

from ..drivers import get_driver
from ..errors import CnmError, ValidationError
from ..ipam.allocator import AddressAllocator, AllocationLookup, pool_containing
from ..ipam.config import PoolConfig
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

    def _assign_addresses(self, net, ep, spec=None, keep=False, persist=True):
        """Give ``ep`` its addresses in ``net``: static ones reserved, others allocated
        walking forward from the last allocation. Persists the allocations unless in
        check mode. ``keep``: try to keep the endpoint's current addresses (rebuild)."""
        spec = spec or {}
        if not get_driver(net.driver).uses_ipam:
            return
        pools, allocs = self._allocators(net)
        families = [4] + ([6] if net.enable_ipv6 else [])
        if "ipv6" in spec and not net.enable_ipv6:
            raise ValidationError("network %s has IPv6 disabled (enable_ipv6: false)"
                                  % net.name, field="ipv6_address")
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
