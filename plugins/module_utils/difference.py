"""Differences between desired and active state, recorded once (community.docker's idea).

Both the ``changed`` decision and the ``diff`` come from this one record, so check mode
and a real run cannot disagree.
"""


class DifferenceTracker:
    """Collects (option path, active value, desired value) triples."""

    def __init__(self):
        self._items = []

    def add(self, path, active, desired):
        """Record that option ``path`` is ``active`` now and should become ``desired``."""
        self._items.append((path, active, desired))

    def __bool__(self):
        return bool(self._items)

    def __iter__(self):
        return iter(self._items)

    def paths(self):
        return [item[0] for item in self._items]

    def describe(self):
        """One line per difference, for action lists and error messages."""
        return ["%s: %r -> %r" % item for item in self._items]

    def as_diff(self):
        before = {path: active for path, active, desired in self._items}
        after = {path: desired for path, active, desired in self._items}
        return {"before": before, "after": after}
