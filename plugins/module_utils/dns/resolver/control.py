"""The control socket: the engine names the sandboxes it changed and waits until they apply.

``control.sock`` lives beside the config (mode 0600). Requests are JSON, one
SOCK_SEQPACKET message each way: ``{"op": "update", "sandboxes": [names]}`` re-reads
only those sandboxes' files, ``{"op": "reload"}`` re-reads everything; the reply,
``{"ok", "listening", "errors"}``, comes once the sandboxes named listen (or failed to),
so a workload started right after the engine's call gets answers from its first query.
``{"op": "health"}`` asks whether the serving loops (UDP, TCP, forwarder) are alive:
``{"ok", "failed": [loops], "age_ms": {loop: ms since its last poll}}``, at once.
"""
import json
import os
import socket
import time

from .logs import log

CONTROL_SOCKET = "control.sock"
CONTROL_TIMEOUT = 5.0        # one control request, read and answered


class ControlSocket:
    """Serves control requests in one thread; ``apply(op, names)`` (the daemon's) does the
    work and returns the reply."""

    def __init__(self, path, apply, stop):
        self.path, self.apply, self.stop = path, apply, stop
        self.sock = None                 # listening socket (SOCK_SEQPACKET)

    def listen(self):
        """Bind the control socket (mode 0600). Returns False (logged) if impossible:
        the daemon then works on, and changes apply at its next poll."""
        try:
            os.unlink(self.path)
        except OSError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with _unix_address(self.path) as addr:
                old = os.umask(0o177)
                try:
                    sock.bind(addr)
                finally:
                    os.umask(old)
            sock.listen(16)
            sock.settimeout(0.5)
        except OSError as e:
            sock.close()
            log.warning("no control socket %s: %s (changes apply at the next poll)",
                        self.path, e)
            return False
        self.sock = sock
        return True

    def serve(self):
        """The control thread: one request at a time, until the daemon stops."""
        while not self.stop.is_set():
            try:
                conn, dummy = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                if self.stop.is_set():
                    return
                time.sleep(0.1)
                continue
            with conn:
                try:
                    conn.settimeout(CONTROL_TIMEOUT)
                    request = conn.recv(1 << 20)
                    if request:
                        conn.send(json.dumps(self.handle(request)).encode())
                except OSError:
                    pass
                except Exception:
                    log.exception("control request failed")

    def handle(self, request):
        """The reply to one request (bytes): ``{"op": "update", "sandboxes": [names]}``
        re-reads those sandboxes' files; ``{"op": "reload", ...}`` re-reads everything.
        Replies once the sandboxes named listen (or failed): ``{"ok", "listening",
        "errors"}``. ``{"op": "health"}``: see the module's docstring."""
        try:
            msg = json.loads(request)
            names = [str(n) for n in msg.get("sandboxes") or []]
            op = msg.get("op")
        except (ValueError, AttributeError, TypeError):
            return {"ok": False, "error": "bad request"}
        if op not in ("reload", "update", "health"):
            return {"ok": False, "error": "unknown op %r" % (op,)}
        return self.apply(op, names)

    def close(self):
        """Stop listening and remove the socket file."""
        if self.sock is not None:
            self.sock.close()
            try:
                os.unlink(self.path)
            except OSError:
                pass


class _unix_address:
    """Context manager giving an AF_UNIX address for ``path``: the path itself, or, when
    it is longer than sun_path allows, the same file reached through /proc/self/fd."""

    def __init__(self, path):
        self.path, self.fd = path, -1

    def __enter__(self):
        if len(os.fsencode(self.path)) < 100:
            return self.path
        self.fd = os.open(os.path.dirname(self.path), os.O_RDONLY | os.O_DIRECTORY)
        return "/proc/self/fd/%d/%s" % (self.fd, os.path.basename(self.path))

    def __exit__(self, *exc):
        if self.fd >= 0:
            os.close(self.fd)
