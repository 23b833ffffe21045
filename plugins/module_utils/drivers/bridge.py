"""The ``bridge`` driver: a Linux bridge per network, a veth per endpoint, on one host.

Everything it does is shared with the overlay driver and lives in ``bridged.py``; this
file only names the driver (netavark's one small type per driver).
"""
from .bridged import BridgedDriver


class BridgeDriver(BridgedDriver):
    """Docker's ``bridge`` driver: ``br-<id12>`` unless named, NAT to the outside."""

    name = "bridge"
