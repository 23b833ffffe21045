"""Prune filters: Docker's ``label``, ``label!`` and ``until`` as pure functions.

``docker network prune --filter`` semantics, read from the module's
``networks_filters``/``sandboxes_filters`` dicts. Parsing happens before the store is
opened, so a bad filter fails the task before anything is removed. Nothing here touches
the kernel or the store.
"""
import datetime
import re

from ..errors import ValidationError

FILTER_KEYS = ("label", "label!", "until")

# Go's time.ParseDuration: a sequence of decimal numbers with units, optional sign
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_DURATION = re.compile(r"[-+]?(?:%s)+" % _DURATION_PART.pattern)
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3,
                 "s": 1, "m": 60, "h": 3600}
# Docker's date formats (api/types/time): a date, a date and hour, minutes, seconds and
# nanoseconds, each with an optional zone (Z or +hh:mm); without a zone: local time
_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:T(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?)?"
    r"([zZ]|[+-]\d{2}:\d{2})?")
_UNIX = re.compile(r"(\d+)(?:\.(\d{1,9}))?")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
MAX_DURATION = (2 ** 63 - 1) / 1e9  # Go's time.Duration: int64 nanoseconds
UNTIL_FORMS = ("a Go duration (10m, 1h30m, 24h), an RFC 3339 timestamp "
               "(2026-11-28T10:00:00Z), a date (2026-11-28) or Unix seconds")


class PruneFilter:
    """One object kind's parsed filters: ``matches(labels, created)`` is True when the
    object may be pruned. An empty filter matches every object."""

    def __init__(self, labels=(), not_labels=(), until=None):
        self.labels = list(labels)          # [(key, value or None)]: all must match
        self.not_labels = list(not_labels)  # [(key, value or None)]
        self.until = until                  # aware datetime, or None

    def matches(self, labels, created):
        """True when an object with ``labels`` (dict) created at ``created`` (RFC 3339
        text, "" when unknown) passes every filter. Docker's rules: every ``label``
        entry matches; not every ``label!`` entry matches; created at or before
        ``until``. An object whose creation time is unknown never matches ``until``."""
        labels = labels or {}
        if not all(_label_matches(labels, k, v) for k, v in self.labels):
            return False
        if self.not_labels and all(_label_matches(labels, k, v)
                                   for k, v in self.not_labels):
            return False
        if self.until is not None:
            when = parse_created(created)
            if when is None or when > self.until:
                return False
        return True

    def describe(self):
        """The filters as Docker's CLI would print them (for messages and tests)."""
        out = ["label=%s" % _label_text(k, v) for k, v in self.labels]
        out += ["label!=%s" % _label_text(k, v) for k, v in self.not_labels]
        if self.until is not None:
            out.append("until=%s" % self.until.isoformat())
        return out


def _label_text(key, value):
    return key if value is None else "%s=%s" % (key, value)


def _label_matches(labels, key, value):
    """Docker's MatchKVList for one entry: ``key`` present (with ``value`` when given)."""
    if key not in labels:
        return False
    return value is None or labels[key] == value


def parse_filters(filters, field, now=None):
    """Called by ``cnm_prune`` for ``networks_filters``/``sandboxes_filters`` before the
    store is opened. ``filters``: None or a dict of ``label``, ``label!`` (each a
    string or a list of strings, ``key`` or ``key=value``) and ``until`` (one value).
    ``now``: the aware datetime durations count back from (default: the current time).

    Returns a PruneFilter. Raises ValidationError naming the field
    (``<field>.<key>``) for an unknown key or a bad value."""
    if filters is None:
        return PruneFilter()
    if not isinstance(filters, dict):
        raise ValidationError("must be a dictionary of filters (%s)"
                              % ", ".join(FILTER_KEYS), field=field)
    out = PruneFilter()
    for key, value in filters.items():
        where = "%s.%s" % (field, key)
        if key not in FILTER_KEYS:
            raise ValidationError("unknown filter %r (%s)" % (key, ", ".join(FILTER_KEYS)),
                                  field=where)
        if key == "until":
            if isinstance(value, list):
                if len(value) != 1:
                    raise ValidationError("takes one value, not %d" % len(value),
                                          field=where)
                value = value[0]
            out.until = parse_until(value, where, now)
            continue
        entries = [parse_label(v, "%s[%d]" % (where, i) if isinstance(value, list)
                               else where)
                   for i, v in enumerate(value if isinstance(value, list) else [value])]
        if not entries:
            raise ValidationError("an empty list filters nothing out; give a label or "
                                  "leave the key out", field=where)
        if key == "label":
            out.labels.extend(entries)
        else:
            out.not_labels.extend(entries)
    return out


def parse_label(value, field):
    """``key`` -> (key, None); ``key=value`` -> (key, value) (split at the first ``=``;
    ``key=`` wants the empty value). Raises ValidationError naming ``field``."""
    if not isinstance(value, str):
        raise ValidationError("%r is not a string (key or key=value)" % (value,),
                              field=field)
    key, sep, val = value.partition("=")
    if not key:
        raise ValidationError("%r has no label key (key or key=value)" % value,
                              field=field)
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValidationError("%r contains a control character" % value, field=field)
    return key, (val if sep else None)


def parse_duration(text):
    """Go's ``time.ParseDuration`` (``300ms``, ``-1.5h``, ``2h45m``): seconds as a float,
    or None when ``text`` is not a duration. ``0`` alone is not one here: Docker reads
    it as the Unix time 0."""
    if not isinstance(text, str) or not _DURATION.fullmatch(text):
        return None
    sign = -1 if text.startswith("-") else 1
    total = sum(float(number) * _UNIT_SECONDS[unit]
                for number, unit in _DURATION_PART.findall(text))
    return sign * total


def parse_timestamp(text):
    """Docker's timestamp forms: ``2026-11-28``, ``2026-11-28T10``, ``2026-11-28T10:00``,
    ``2026-11-28T10:00:00``, with optional ``.nnnnnnnnn`` and a zone (``Z``,
    ``+01:00``; none: the host's local time), or Unix seconds (``1764324000``,
    ``1764324000.5``). Returns an aware datetime, or None when ``text`` is none of
    these (or names no real date)."""
    if not isinstance(text, str):
        return None
    match = _UNIX.fullmatch(text)
    if match:
        seconds, fraction = match.groups()
        micros = int((fraction or "0").ljust(9, "0")[:6])
        try:
            return _EPOCH + datetime.timedelta(seconds=int(seconds), microseconds=micros)
        except OverflowError:
            return None
    match = _TIMESTAMP.fullmatch(text)
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micros = int((fraction or "0").ljust(9, "0")[:6])
    try:
        when = datetime.datetime(int(year), int(month), int(day), int(hour or 0),
                                 int(minute or 0), int(second or 0), micros)
    except ValueError:
        return None
    if zone is None:
        try:
            return when.astimezone()  # a naive time is the host's local time
        except (OverflowError, OSError, ValueError):
            return None
    if zone in ("Z", "z"):
        return when.replace(tzinfo=datetime.timezone.utc)
    sign = -1 if zone[0] == "-" else 1
    hours, minutes = int(zone[1:3]), int(zone[4:6])
    if hours > 23 or minutes > 59:
        return None
    offset = datetime.timedelta(hours=hours, minutes=minutes) * sign
    return when.replace(tzinfo=datetime.timezone(offset))


def parse_until(value, field, now=None):
    """The ``until`` filter: objects created at or before the returned aware datetime
    match. A Go duration counts back from ``now`` (``24h``: created over a day ago);
    otherwise a timestamp as ``parse_timestamp`` reads it (an integer is Unix seconds).
    Raises ValidationError naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValidationError("%r is not %s" % (value, UNTIL_FORMS), field=field)
    text = value if isinstance(value, str) else repr(value)  # an int: Unix seconds
    if now is None:
        now = datetime.datetime.now(datetime.timezone.utc)
    seconds = parse_duration(text) if text != "0" else None
    if seconds is not None:
        if abs(seconds) > MAX_DURATION:
            raise ValidationError("%r is longer than a Go duration can be (about 292 "
                                  "years)" % text, field=field)
        return now - datetime.timedelta(seconds=seconds)
    when = parse_timestamp(text)
    if when is None:
        raise ValidationError("%r is not %s" % (value, UNTIL_FORMS), field=field)
    return when


def parse_created(text):
    """A stored ``created`` (RFC 3339, ``2026-11-28T04:32:08.965119Z``) as an aware
    datetime; None when empty or unreadable (such an object never matches ``until``)."""
    if not text or not isinstance(text, str) or _UNIX.fullmatch(text):
        return None
    return parse_timestamp(text)
