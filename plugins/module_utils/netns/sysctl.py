"""sysctl writes through /proc/sys for the calling thread's network namespace."""
import os

from ..errors import KernelError


def _path(name):
    return "/proc/sys/" + name.replace(".", "/")


def read_path(path):
    """Stripped content of a /proc file (a sysctl, /proc/thread-self/net/...), or None
    when it cannot be read. Paths are resolved in the calling thread's namespace."""
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


def read(name):
    """Value of sysctl ``name`` (e.g. ``net.ipv4.ip_forward``) or None if absent."""
    return read_path(_path(name))


def read_in(netns_path, name):
    """``read`` inside the network namespace at ``netns_path``."""
    from .namespace import entered
    with entered(netns_path):
        return read(name)


def ensure_in(netns_path, name, value):
    """``ensure`` inside the network namespace at ``netns_path`` (a thread setns there
    and back, ~20 us). Called for per-interface sysctls of sandboxes. Raises
    KernelError."""
    from .namespace import entered
    with entered(netns_path):
        return ensure(name, value)


def ensure(name, value):
    """Set sysctl ``name`` to ``value`` if it differs. Returns True when it wrote.

    /proc/sys/net is resolved against the namespace of the task that opens it, so
    callers must be in the right namespace (thread setns or nsenter).
    """
    value = str(value)
    if read(name) == value:
        return False
    try:
        with open(_path(name), "w") as fh:
            fh.write(value)
    except OSError as exc:
        raise KernelError("sysctl %s=%s: %s" % (name, value, os.strerror(exc.errno)))
    return True
