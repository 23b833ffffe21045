"""Validation of user parameters, before any side effect (netavark's validation.rs idea).

Every function takes the raw module parameter, returns the normalised value and raises
ValidationError naming the option path and the bad value. Nothing here touches the
kernel or the store.
"""
import re

from . import constants as C
from .errors import ValidationError

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# RFC 1123 labels; "_" is accepted too because Docker/Compose service names and aliases
# such as "my_db" resolve in Docker and users rely on them.
_DNS_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_ASCII_INTEGER = re.compile(r"[+-]?[0-9]+")
# Names the kernel refuses for a link (dev_valid_name, and /proc/sys/net/*/conf/<name>)
_RESERVED_IFNAMES = (".", "..", "all", "default")


def _refuse_control(value, field, what):
    """Control characters (a trailing newline, NUL, a tab) are never part of a name or a
    value we write into files, the kernel or the store."""
    bad = [ch for ch in value if ord(ch) < 32 or ord(ch) == 127]
    if bad:
        raise ValidationError("%r is not a valid %s: it contains the control character %r"
                              % (value, what, bad[0]), field=field)


def object_name(value, field, what="network"):
    """A network or sandbox name: ``[A-Za-z0-9][A-Za-z0-9_.-]*``, at most 64 characters.

    Called for every module's object names before anything else. Raises
    ValidationError naming ``field`` (a trailing newline is refused, not stripped)."""
    if not isinstance(value, str) or not value:
        raise ValidationError("a %s name is required" % what, field=field)
    _refuse_control(value, field, "%s name" % what)
    if len(value) > C.NETWORK_NAME_MAX:
        raise ValidationError("%r is longer than %d characters"
                              % (value, C.NETWORK_NAME_MAX), field=field)
    if "/" in value:
        raise ValidationError("%r must not contain '/'" % value, field=field)
    if not _NAME_RE.fullmatch(value):
        raise ValidationError("%r is not a valid %s name (letters, digits, '_', '.', '-'; "
                              "starting with a letter or digit)" % (value, what),
                              field=field)
    return value


def interface_name(value, field="interface_name"):
    """A Linux interface name as the kernel accepts it: 1-15 bytes, no '/', ':', '%',
    white space or control characters, not ``.``, ``..``, ``all`` or ``default``.

    Called for endpoint interface names, bridge names and parents before any link is
    made. Returns None for None; raises ValidationError naming ``field``."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValidationError("%r is not a valid interface name" % (value,), field=field)
    _refuse_control(value, field, "interface name")
    if len(value.encode("utf-8")) > C.IFNAME_MAX:
        raise ValidationError("%r is longer than %d bytes" % (value, C.IFNAME_MAX),
                              field=field)
    if value in _RESERVED_IFNAMES:
        raise ValidationError("%r is reserved by the kernel" % value, field=field)
    bad = [ch for ch in value if ch in "/:%" or ch.isspace()]
    if bad:
        raise ValidationError("%r contains %r, which an interface name cannot"
                              % (value, bad[0]), field=field)
    return value


def dns_name(value, field):
    """A DNS name (hostname, domain name, alias, search domain): dot-separated RFC 1123
    labels (plus ``_``), at most 253 characters; a trailing dot is dropped.

    Called before anything is changed; raises ValidationError naming ``field`` and why.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("%r is not a valid name: it is empty" % (value,), field=field)
    _refuse_control(value, field, "name")
    name = value[:-1] if value.endswith(".") else value
    if len(name) > 253:
        raise ValidationError("%r is not a valid name: longer than 253 characters" % value,
                              field=field)
    for label in name.split("."):
        if not _DNS_LABEL.fullmatch(label):
            if not label:
                why = "it has an empty label"
            elif len(label) > 63:
                why = "label %r is longer than 63 characters" % label
            elif label[0] == "-" or label[-1] == "-":
                why = "label %r starts or ends with '-'" % label
            else:
                why = ("only letters, digits, '-' and '_' are allowed in a label "
                       "(RFC 1123)")
            raise ValidationError("%r is not a valid name: %s" % (value, why), field=field)
    return name


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
    """An int within [low, high], from an int or a string of ASCII digits (``"٧٠٠٢"``
    and ``"²"`` are refused, not read as 7002 or 2; booleans are not integers).

    Raises ValidationError naming ``field``."""
    if isinstance(value, bool):
        raise ValidationError("%r is not an integer" % (value,), field=field)
    if isinstance(value, int):
        number = value
    else:
        text = value.strip() if isinstance(value, str) else None
        if text is None or not _ASCII_INTEGER.fullmatch(text):
            raise ValidationError("%r is not an integer (ASCII digits)" % (value,),
                                  field=field)
        number = int(text)
    if (low is not None and number < low) or (high is not None and number > high):
        raise ValidationError("%d is outside %s..%s" % (number, low, high), field=field)
    return number


def labels(value, field="labels"):
    """A dict of string keys to string values (numbers and booleans are written as
    strings, as Docker's CLI does); nested values and control characters are refused.

    Returns None for None; raises ValidationError naming ``labels.<key>``."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValidationError("must be a dictionary", field=field)
    out = {}
    for key, val in value.items():
        if not isinstance(key, str) or not key:
            raise ValidationError("keys must be non-empty strings", field=field)
        _refuse_control(key, field, "label key")
        where = "%s.%s" % (field, key)
        if val is None:
            val = ""
        elif isinstance(val, bool):
            val = "true" if val else "false"
        elif isinstance(val, (int, float)):
            val = str(val)
        elif not isinstance(val, str):
            raise ValidationError("%r is not a string (labels are flat strings)" % (val,),
                                  field=where)
        if "\x00" in val:
            raise ValidationError("%r contains a NUL character" % (val,), field=where)
        out[key] = val
    return out


_SYSCTL_KEY = re.compile(r"net(\.[A-Za-z0-9_-]+)+")


def sandbox_sysctls(value, field="sysctls"):
    """A sandbox's sysctls (Docker's ``--sysctl``): only namespaced ``net.*`` keys, as a
    network namespace has them; values written as strings. Returns None for None;
    raises ValidationError naming ``sysctls.<key>``."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValidationError("must be a dictionary of sysctl names to values", field=field)
    out = {}
    for key, val in value.items():
        where = "%s.%s" % (field, key)
        if not isinstance(key, str) or not _SYSCTL_KEY.fullmatch(key):
            raise ValidationError("%r is not a sysctl of a network namespace: only net.* "
                                  "keys can be set in a sandbox" % (key,), field=where)
        if isinstance(val, bool) or not isinstance(val, (str, int)):
            raise ValidationError("%r is not a string or an integer" % (val,), field=where)
        text = str(val).strip()
        _refuse_control(text, where, "sysctl value")
        if not text or len(text) > 4096:
            raise ValidationError("%r is empty or too long" % (val,), field=where)
        out[key] = text
    return out


def driver_option_value(key, value):
    """Driver options are kept as Docker's strings: booleans lower-case. Nested values
    and control characters are refused (ValidationError naming
    ``driver_options.<key>``)."""
    field = "driver_options.%s" % key
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, (str, int, float)):
        raise ValidationError("%r is not a string, number or boolean" % (value,),
                              field=field)
    text = str(value).strip()
    _refuse_control(text, field, "option value")
    if text.lower() in ("true", "false"):
        return text.lower()
    return text
