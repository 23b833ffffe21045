"""Network namespaces addressed by path (no ``ip netns``, no sysfs).

A sandbox namespace is a file under ``netns_dir`` onto which a network namespace is
bind-mounted. We create it ourselves (NOTES.md): a throwaway thread calls
``unshare(CLONE_NEWNET)`` and bind-mounts ``/proc/thread-self/ns/net`` onto the file.
``pyroute2.netns.create`` is avoided on purpose: it bind-mounts the parent directory onto
itself, which hides namespace files made before.
"""
import contextlib
import ctypes
import errno
import os
import threading

from ..errors import KernelError

CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MNT_DETACH = 2
NSFS_MAGIC = 0x6E736673

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.statfs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]


def _errno_error(what, path):
    err = ctypes.get_errno()
    return KernelError("%s %s: %s" % (what, path, os.strerror(err)))


def is_netns(path):
    """True when ``path`` is a bind-mounted network namespace (an nsfs file).

    Called on every run to detect a sandbox namespace deleted by hand (drift).
    """
    buf = ctypes.create_string_buffer(256)
    if _libc.statfs(path.encode(), buf) != 0:
        return False
    f_type = ctypes.c_long.from_buffer(buf).value
    return f_type == NSFS_MAGIC


def setns(path_or_fd):
    """Move the calling thread into the network namespace ``path_or_fd``."""
    fd = os.open(path_or_fd, os.O_RDONLY | os.O_CLOEXEC) if isinstance(path_or_fd, str) \
        else path_or_fd
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise _errno_error("setns", path_or_fd)
    finally:
        if isinstance(path_or_fd, str):
            os.close(fd)


@contextlib.contextmanager
def entered(path):
    """Run the body with the calling thread inside namespace ``path``; always come back.

    Sockets created inside stay bound to that namespace after the thread returns.
    """
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(path)
        yield
    finally:
        try:
            setns(back)
        finally:
            os.close(back)


def create_netns(path):
    """Create a new, empty network namespace bound at ``path``.

    Called when a sandbox is made. Guarantees on return: ``path`` is an nsfs file of a
    fresh namespace (only ``lo``, down). Raises KernelError; on failure nothing is left.
    """
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    if is_netns(path):
        raise KernelError("namespace %s already exists" % path)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o444)
    os.close(fd)
    outcome = {}

    def worker():
        try:
            if _libc.unshare(CLONE_NEWNET) != 0:
                raise _errno_error("unshare", path)
            if _libc.mount(b"/proc/thread-self/ns/net", path.encode(), None, MS_BIND,
                           None) != 0:
                raise _errno_error("bind mount", path)
        except Exception as exc:  # handed to the caller below
            outcome["error"] = exc

    # The thread ends right after: its private namespace is kept alive by the mount only.
    t = threading.Thread(target=worker, name="cnm-unshare")
    t.start()
    t.join()
    if "error" in outcome:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise outcome["error"]


def bind_netns(source, path):
    """Bind an existing namespace (e.g. the host's ``/proc/self/ns/net``) at ``path``.

    Used for sandboxes on the ``host`` network: they share the host namespace.
    """
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    if is_netns(path):
        raise KernelError("namespace %s already exists" % path)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o444)
    os.close(fd)
    # Resolve to this thread's namespace: /proc/self may name another thread's.
    if _libc.mount(source.encode(), path.encode(), None, MS_BIND, None) != 0:
        err = _errno_error("bind mount", path)
        os.unlink(path)
        raise err


def delete_netns(path):
    """Unmount and remove the namespace file ``path``. Already gone is not an error.

    The namespace itself disappears when its last user (process, socket) goes away.
    """
    if _libc.umount2(path.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise KernelError("umount %s: %s" % (path, os.strerror(err)))
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        raise KernelError("%s is a directory, not a namespace file" % path)


def same_netns(a, b):
    """True when the two paths name the same network namespace."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def current_netns_path():
    """Path naming the calling thread's namespace (``/proc/<pid>/task/<tid>/ns/net``)."""
    return "/proc/%d/task/%d/ns/net" % (os.getpid(), threading.get_native_id())


def processes_inside(path):
    """True when some process has ``path``'s namespace as its network namespace.

    Called before removing a sandbox: when nothing runs inside, the kernel destroys
    the namespace with its interfaces by itself and the engine need not pay the
    ~22 ms synchronous veth deletion (NOTES: measured here). Scans /proc (~1 ms).
    """
    try:
        st = os.stat(path)
    except OSError:
        return False
    target = (st.st_dev, st.st_ino)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            pst = os.stat("/proc/%s/ns/net" % pid)
        except OSError:
            continue
        if (pst.st_dev, pst.st_ino) == target:
            return True
    return False
