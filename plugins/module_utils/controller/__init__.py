"""The controller package: validate all -> plan -> apply (undo on failure) -> persist.

``Engine`` (``engine.py``) is the entry point of every writing verb, ``Reader``
(``reader.py``) the one of the info verbs; ``docs/architecture.md`` maps the files.
Only this package writes the store.

Nothing is imported here: a module imports the entry it runs
(``from ...controller.engine import Engine``), so AnsiballZ, which ships every
module_utils file a module imports and every package ``__init__`` on the way, does not
ship the whole engine with an info module. ``controller.Engine`` and
``controller.Result`` still work (resolved on first use).
"""
import importlib

_LAZY = {"Engine": ".engine", "Result": ".result"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
