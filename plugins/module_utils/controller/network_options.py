"""A network's desired state from module parameters, and its differences with the
current network (which options change in place, which need a rebuild).

Pure: no kernel, no store. Called by ``networks.py`` before anything is touched.
"""
import dataclasses
import ipaddress

from .. import constants as C
from .. import validation as V
from ..difference import DifferenceTracker
from ..drivers import get_driver
from ..errors import ValidationError
from ..ipam.config import normalise_address, parse_ipam_config
from ..model import Network


def desired_network(p):
    """Validated, normalised Network from ``cnm_network``'s parameters ``p`` (no id, no
    subnet yet). Called before any side effect; raises ValidationError naming the field."""
    driver_name = p.get("driver") or "bridge"
    if driver_name in ("host", "null"):
        raise ValidationError("only one network of driver %s may exist (the predefined "
                              "%s network)" % (driver_name,
                                               "host" if driver_name == "host" else
                                               "none"), field="driver")
    driver = get_driver(driver_name)
    options = {}
    for key, value in (p.get("driver_options") or {}).items():
        if key not in driver.options:
            raise ValidationError("option %r is not supported by the %s driver "
                                  "(supported: %s)" % (key, driver_name,
                                                       ", ".join(sorted(driver.options))),
                                  field="driver_options.%s" % key)
        options[key] = V.driver_option_value(key, value)
    if C.OPT_DEFAULT_BRIDGE in options and p.get("name") != C.DEFAULT_BRIDGE_NETWORK:
        raise ValidationError("only the predefined %s network is the default bridge"
                              % C.DEFAULT_BRIDGE_NETWORK,
                              field="driver_options.%s" % C.OPT_DEFAULT_BRIDGE)
    enable_ipv6 = bool(p.get("enable_ipv6"))
    enable_ipv4 = p.get("enable_ipv4") is not False
    if not enable_ipv4 and not enable_ipv6:
        raise ValidationError("an IPv6-only network needs enable_ipv6: true",
                              field="enable_ipv4")
    ipam = p.get("ipam") or {}
    ipam_driver = ipam.get("driver") or "default"
    if ipam_driver != "default":
        raise ValidationError("IPAM driver %r is not supported (only 'default')"
                              % ipam_driver, field="ipam.driver")
    pools = parse_ipam_config(ipam.get("config") or [], enable_ipv6)
    mtu = C.DEFAULT_MTU
    if C.OPT_MTU in options:
        mtu = V.integer(options[C.OPT_MTU], "driver_options.%s" % C.OPT_MTU, 68, 65535)
    for i, pool in enumerate(pools):
        if pool.version == 4 and not enable_ipv4:
            raise ValidationError("%s is an IPv4 subnet but enable_ipv4 is false"
                                  % pool.subnet, field="ipam.config[%d].subnet" % i)
    net = Network(id="", name=p["name"], driver=driver_name, enable_ipv6=enable_ipv6,
                  enable_ipv4=enable_ipv4, attachable=bool(p.get("attachable")),
                  internal=bool(p.get("internal")), labels=V.labels(p.get("labels")) or {},
                  options=options, ipam_driver=ipam_driver,
                  ipam_options=dict(ipam.get("options") or {}),
                  pools=[pool.to_dict() for pool in pools], mtu=mtu,
                  bridge=options.get(C.OPT_BRIDGE_NAME, ""))
    if driver_name == "bridge" and net.bridge:
        driver.validate(net, None)
    if C.OPT_HOST_BINDING_IPV4 in options:
        normalise_address(options[C.OPT_HOST_BINDING_IPV4],
                          "driver_options.%s" % C.OPT_HOST_BINDING_IPV4)
    return net


def network_differences(cur, want, params):
    """(in-place differences, rebuild differences) between the current network ``cur`` and
    the desired ``want``; an option the task did not give (``None``) is never compared."""
    inplace, rebuild = DifferenceTracker(), DifferenceTracker()
    if params.get("driver") and want.driver != cur.driver:
        rebuild.add("driver", cur.driver, want.driver)
    for key in ("enable_ipv4", "enable_ipv6"):
        if params.get(key) is not None and getattr(want, key) != getattr(cur, key):
            rebuild.add(key, getattr(cur, key), getattr(want, key))
    if params.get("internal") is not None and want.internal != cur.internal:
        rebuild.add("internal", cur.internal, want.internal)
    ipam = params.get("ipam") or {}
    if ipam.get("config") is not None:
        cur_pools = {p["subnet"]: p for p in cur.pools}
        want_pools = {p["subnet"]: p for p in want.pools}
        given = _given_pool_keys(ipam["config"])
        if want.pools or not cur.auto_subnets:
            for subnet in sorted(set(cur_pools) | set(want_pools)):
                a, b = cur_pools.get(subnet), want_pools.get(subnet)
                if a is None or b is None:
                    family = ipaddress.ip_network(subnet).version
                    if b is None and subnet in cur.auto_subnets and not any(
                            ipaddress.ip_network(s).version == family for s in want_pools):
                        continue  # chosen by the allocator: not a difference
                    rebuild.add("ipam.config[subnet=%s]" % subnet,
                                a and a["subnet"], b and b["subnet"])
                    continue
                for key in ("ip_range", "aux_addresses"):
                    if key in given.get(subnet, ()) and a.get(key) != b.get(key):
                        rebuild.add("ipam.config[subnet=%s].%s" % (subnet, key),
                                    a.get(key), b.get(key))
                if b.get("gateway_given") and a.get("gateway") != b.get("gateway"):
                    rebuild.add("ipam.config[subnet=%s].gateway" % subnet,
                                a.get("gateway"), b.get("gateway"))
    if params.get("labels") is not None and want.labels != cur.labels:
        inplace.add("labels", cur.labels, want.labels)
    if params.get("attachable") is not None and want.attachable != cur.attachable:
        inplace.add("attachable", cur.attachable, want.attachable)
    for key, value in want.options.items():
        if cur.options.get(key) == value:
            continue
        if key == C.OPT_BRIDGE_NAME or key == C.OPT_PARENT or key in (
                C.OPT_MACVLAN_MODE, C.OPT_IPVLAN_MODE):
            rebuild.add("driver_options.%s" % key, cur.options.get(key), value)
        else:
            inplace.add("driver_options.%s" % key, cur.options.get(key), value)
    return inplace, rebuild


def _given_pool_keys(entries):
    """{subnet: keys the task gave} of ``ipam.config`` entries (already validated): a key
    an entry does not give is not compared, as any other option the task did not give."""
    out = {}
    for entry in entries or []:
        if isinstance(entry, dict) and entry.get("subnet"):
            subnet = str(ipaddress.ip_network(str(entry["subnet"]).strip()))
            out[subnet] = {k for k, v in entry.items() if v is not None}
    return out


def merged_network(cur, want, params):
    """The network a rebuild makes: every option the task gave (``want``), the current
    network's for every option it did not give (an option not given is never reset: a
    rebuild that only sets ``internal`` keeps the subnet, gateway, ip_range, labels, MTU,
    ICC...). Within a pool entry, keys the entry does not give are the current pool's.
    Called by the network update before anything is touched; raises nothing."""
    net = dataclasses.replace(want, labels=dict(want.labels), options=dict(want.options))
    if not params.get("driver"):
        net.driver = cur.driver
    if params.get("enable_ipv6") is None:
        net.enable_ipv6 = cur.enable_ipv6
    if params.get("enable_ipv4") is None:
        net.enable_ipv4 = cur.enable_ipv4
    if params.get("internal") is None:
        net.internal = cur.internal
    if params.get("attachable") is None:
        net.attachable = cur.attachable
    if params.get("labels") is None:
        net.labels = dict(cur.labels)
    net.options = dict(cur.options, **want.options)
    net.mtu = int(net.options.get(C.OPT_MTU, cur.mtu or C.DEFAULT_MTU))
    if C.OPT_BRIDGE_NAME not in net.options and net.driver == cur.driver:
        net.bridge = cur.bridge
    ipam = params.get("ipam") or {}
    if ipam.get("options") is None:
        net.ipam_options = dict(cur.ipam_options)
    if ipam.get("config") is None:
        net.pools = [dict(p) for p in cur.pools]
        net.auto_subnets = list(cur.auto_subnets)
    else:
        given = _given_pool_keys(ipam["config"])
        current = {p["subnet"]: p for p in cur.pools}
        net.pools = [_merged_pool(p, current.get(p["subnet"]), given.get(p["subnet"], ()))
                     for p in want.pools]
        net.auto_subnets = []
    families = {4} if net.enable_ipv4 else set()
    families |= {6} if net.enable_ipv6 else set()
    net.pools = [p for p in net.pools if ipaddress.ip_network(p["subnet"]).version in families]
    net.auto_subnets = [s for s in net.auto_subnets
                        if ipaddress.ip_network(s).version in families]
    return net


def _merged_pool(wanted, current, given):
    """A pool entry of the task with the current pool's values for the keys not given."""
    pool = dict(wanted)
    if current is None:
        return pool
    for key in ("ip_range", "aux_addresses"):
        if key not in given:
            pool[key] = current.get(key)
    if "gateway" not in given:
        pool["gateway"] = current.get("gateway")
        pool["gateway_given"] = current.get("gateway_given", False)
    return pool
