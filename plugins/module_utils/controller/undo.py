"""The undo stack of an operation, and the crash checkpoints tests pause at.

Every kernel change an apply step makes pushes its compensating step; a failure
half-way runs them newest first (LIFO), so the operation leaves nothing behind."""
import os

from ..errors import CnmError


class Undo:
    """A stack of compensating steps, run newest first when an apply step fails.

    As a context manager (``with Undo() as undo:``) an exception leaving the body runs
    the steps and goes on; a CnmError's message then names the steps that failed too.
    """

    def __init__(self):
        self._steps = []

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, traceback):
        if exc is not None:
            errors = self.run()
            if errors and isinstance(exc, CnmError):
                exc.message += " (undo also failed: %s)" % "; ".join(errors)
        return False

    def push(self, description, func, *args):
        """Called right after a step succeeded: ``func(*args)`` reverses it."""
        self._steps.append((description, func, args))

    def run(self):
        """Called when a later step failed: runs every pushed step, newest first, past
        failures; returns their error messages (empty when all went back)."""
        errors = []
        while self._steps:
            description, func, args = self._steps.pop()
            try:
                func(*args)
            except Exception as exc:  # undo is best effort; report every failure
                errors.append("%s: %s" % (description, exc))
        return errors


def checkpoint(name):
    """Fault injection for crash tests: with ``CNM_FAULT_PAUSE=<name>`` the run writes
    ``$CNM_FAULT_MARKER`` and sleeps at this point, so a test can ``kill -9`` it there;
    with ``CNM_FAULT_RAISE=<name>`` it fails there as a kernel refusal would, so a test
    sees the undo. Costs one environment lookup otherwise."""
    if os.environ.get("CNM_FAULT_RAISE") == name:
        from ..errors import KernelError
        raise KernelError("fault injected at %s" % name)
    if os.environ.get("CNM_FAULT_PAUSE") == name:
        marker = os.environ.get("CNM_FAULT_MARKER")
        if marker:
            with open(marker, "w") as fh:
                fh.write(name)
        import time
        time.sleep(600)
