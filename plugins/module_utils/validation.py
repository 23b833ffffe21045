"""Validation of user parameters, before any side effect (netavark's validation.rs idea).

Every function takes the raw module parameter, returns the normalised value and raises
ValidationError naming the option path and the bad value. Nothing here touches the
kernel or the store.
"""
import re

from . import constants as C
from .errors import ValidationError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_IFNAME_BAD = set("/: \t\n%")
_DNS_LABEL = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")


def object_name(value, field, what="network"):
    """A network or sandbox name: ``[A-Za-z0-9][A-Za-z0-9_.-]*``, at most 64 characters."""
    if not isinstance(value, str) or not value:
        raise ValidationError("a %s name is required" % what, field=field)
    if len(value) > C.NETWORK_NAME_MAX:
        raise ValidationError("%r is longer than %d characters"
                              % (value, C.NETWORK_NAME_MAX), field=field)
    if "/" in value:
        raise ValidationError("%r must not contain '/'" % value, field=field)
    if not _NAME_RE.match(value):
        raise ValidationError("%r is not a valid %s name (letters, digits, '_', '.', '-'; "
                              "starting with a letter or digit)" % (value, what),
                              field=field)
    return value


def interface_name(value, field="interface_name"):
    """A Linux interface name: 1-15 characters, no '/', ':', spaces."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or value in (".", ".."):
        raise ValidationError("%r is not a valid interface name" % (value,), field=field)
    if len(value) > C.IFNAME_MAX:
        raise ValidationError("%r is longer than %d characters" % (value, C.IFNAME_MAX),
                              field=field)
    if _IFNAME_BAD & set(value):
        raise ValidationError("%r contains a character not allowed in an interface name"
                              % value, field=field)
    return value


def dns_name(value, field):
    """A DNS name (hostname, alias): dot-separated RFC 1123 labels."""
    if not isinstance(value, str) or not value or len(value) > 253:
        raise ValidationError("%r is not a valid DNS name" % (value,), field=field)
    labels = value.rstrip(".").split(".")
    if not all(_DNS_LABEL.match(label) for label in labels):
        raise ValidationError("%r is not a valid DNS name (letters, digits and '-' in "
                              "dot-separated labels, no spaces)" % value, field=field)
    return value


def boolean(value, field):
    """True/False from a bool or Docker's strings ("true"/"false", "1"/"0")."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValidationError("%r is not a boolean" % (value,), field=field)


def integer(value, field, low=None, high=None):
    """An int within [low, high]."""
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        raise ValidationError("%r is not an integer" % (value,), field=field)
    if (low is not None and number < low) or (high is not None and number > high):
        raise ValidationError("%d is outside %s..%s" % (number, low, high), field=field)
    return number


def labels(value, field="labels"):
    """A dict of string keys to string values."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValidationError("must be a dictionary", field=field)
    out = {}
    for key, val in value.items():
        if not isinstance(key, str) or not key:
            raise ValidationError("keys must be non-empty strings", field=field)
        out[key] = "" if val is None else str(val)
    return out


def driver_option_value(key, value):
    """Driver options are kept as Docker's strings: booleans lower-case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value).strip()
    if text.lower() in ("true", "false"):
        return text.lower()
    return text
