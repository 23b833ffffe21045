"""The ``host`` driver (predefined network ``host``): the sandbox IS the host namespace.

The sandbox file is a bind mount of the host's namespace (made by the controller), so
the workload sees the host's interfaces; there is no interface and no address to make.
"""
from .base import Driver


class HostDriver(Driver):
    name = "host"
    has_interface = False
    uses_ipam = False
