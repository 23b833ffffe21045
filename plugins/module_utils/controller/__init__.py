"""The controller package: validate all -> plan -> apply (undo on failure) -> persist.

``Engine`` (``engine.py``) is the only entry point; ``docs/architecture.md`` maps the
files. Only this package writes the store.
"""
from .engine import Engine
from .result import Result

__all__ = ["Engine", "Result"]
