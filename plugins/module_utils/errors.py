"""Error types of the cnm engine.

Every expected failure is a ``CnmError``; the Ansible adapter turns it into
``fail_json(msg=str(err))``. Anything else is a bug and surfaces as a traceback.
"""


class CnmError(Exception):
    """Base of every error the engine raises on purpose."""

    def __init__(self, message, field=None):
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self):
        if self.field and not self.message.startswith(self.field):
            return "%s: %s" % (self.field, self.message)
        return self.message


class ValidationError(CnmError):
    """Bad user input. ``field`` is the option path, e.g. ``ipam.config[0].gateway``."""


class ConflictError(CnmError):
    """The request collides with existing state (address in use, port published...)."""


class NotFoundError(CnmError):
    """A referenced network, sandbox or endpoint does not exist."""


class PoolExhaustedError(CnmError):
    """No subnet or address is left in the pools that may be used."""


class KernelError(CnmError):
    """Netlink, nft, iptables or a namespace operation failed."""


class DependencyError(CnmError):
    """A required tool or Python library is missing on the managed host."""
