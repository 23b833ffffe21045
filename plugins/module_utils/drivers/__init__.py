"""The only driver registry: a driver name maps to one implementation."""
from ..errors import ValidationError
from .bridge import BridgeDriver
from .host import HostDriver
from .macvlan import IpvlanDriver, MacvlanDriver
from .null import NullDriver
from .overlay import OverlayDriver

_DRIVERS = {d.name: d for d in (BridgeDriver, HostDriver, NullDriver, MacvlanDriver,
                                IpvlanDriver, OverlayDriver)}
# Known to Docker but not implemented here yet: refused with a clear error.
_NOT_YET = ()


def driver_names():
    return sorted(_DRIVERS)


def get_driver(name, field="driver"):
    """The driver called ``name``. Raises ValidationError naming ``field`` if unknown."""
    cls = _DRIVERS.get(name)
    if cls is None:
        if name in _NOT_YET:
            raise ValidationError("driver %s is not implemented yet (supported: %s)"
                                  % (name, ", ".join(driver_names())), field=field)
        raise ValidationError("unknown driver %r (supported: %s)"
                              % (name, ", ".join(driver_names())), field=field)
    return cls()
