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


# -- bandwidth (cnm_endpoint ``bandwidth``, as the CNI bandwidth plugin) -----------------
_RATE_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(bit|kbit|mbit|gbit|tbit|k|m|g|t)?",
                      re.IGNORECASE)
_RATE_UNITS = {"": 1, "bit": 1, "k": 10 ** 3, "kbit": 10 ** 3, "m": 10 ** 6,
               "mbit": 10 ** 6, "g": 10 ** 9, "gbit": 10 ** 9, "t": 10 ** 12,
               "tbit": 10 ** 12}
_SIZE_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(b|kb|mb|gb|k|m|g)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024 ** 2, "mb": 1024 ** 2,
               "g": 1024 ** 3, "gb": 1024 ** 3}
RATE_MIN, RATE_MAX = 8, 10 ** 12             # 1 byte/s .. 1 Tbit/s
BURST_MIN, BURST_MAX = 64, 4 * 1024 ** 3 - 1  # tbf keeps the burst in 32 bits
# tbf stores the burst as time at the rate in 32-bit ticks of 64 ns (~274 s here,
# /proc/net/psched): more wraps around silently; too little rounds to nothing.
BURST_SECONDS_MAX, BURST_SECONDS_MIN = 250.0, 0.00001
BANDWIDTH_KEYS = ("egress_rate", "egress_burst", "ingress_rate", "ingress_burst")


def _amount(value, field, pattern, units, what, example):
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValidationError("%r is not a %s (e.g. %s)" % (value, what, example),
                              field=field)
    match = pattern.fullmatch(str(value).strip())
    if not match:
        raise ValidationError("%r is not a %s (e.g. %s)" % (value, what, example),
                              field=field)
    return int(float(match.group(1)) * units[(match.group(2) or "").lower()])


def rate(value, field):
    """Bits per second from ``10mbit``, ``1gbit``, ``500kbit`` or a plain number
    (decimal units, as tc's). Raises ValidationError naming ``field``."""
    bits = _amount(value, field, _RATE_RE, _RATE_UNITS, "rate", "10mbit, 500kbit, 1000000")
    if not RATE_MIN <= bits <= RATE_MAX:
        raise ValidationError("%r is outside 8bit..1tbit" % (value,), field=field)
    return bits


def byte_size(value, field):
    """Bytes from ``32kb``, ``1mb`` or a plain number (binary units, as tc's)."""
    size = _amount(value, field, _SIZE_RE, _SIZE_UNITS, "size", "32kb, 1mb, 65536")
    if not BURST_MIN <= size <= BURST_MAX:
        raise ValidationError("%r is outside 64b..4gb" % (value,), field=field)
    return size


def default_burst(bits):
    """The burst for a rate given without one: 10 ms at the rate, at least 16 KiB."""
    return max(bits // 8 // 100, 16 * 1024)


def bandwidth(value, field="bandwidth"):
    """``{egress_rate, egress_burst, ingress_rate, ingress_burst}`` normalised to bits per
    second and bytes (only the directions given; a burst needs its rate and defaults to
    ``default_burst``). ``{}`` (or every key null) means no limit."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError("%r is not a dict of %s" % (value, ", ".join(BANDWIDTH_KEYS)),
                              field=field)
    unknown = sorted(set(value) - set(BANDWIDTH_KEYS))
    if unknown:
        raise ValidationError("unknown key %r (expected %s)"
                              % (unknown[0], ", ".join(BANDWIDTH_KEYS)),
                              field="%s.%s" % (field, unknown[0]))
    out = {}
    for way in ("egress", "ingress"):
        rate_key, burst_key = way + "_rate", way + "_burst"
        given_rate, given_burst = value.get(rate_key), value.get(burst_key)
        if given_rate is None:
            if given_burst is not None:
                raise ValidationError("needs %s.%s" % (field, rate_key),
                                      field="%s.%s" % (field, burst_key))
            continue
        bits = rate(given_rate, "%s.%s" % (field, rate_key))
        if given_burst is None:
            size = default_burst(bits)
        else:
            size = byte_size(given_burst, "%s.%s" % (field, burst_key))
        seconds = size * 8.0 / bits
        if seconds > BURST_SECONDS_MAX:
            raise ValidationError("%d bytes at %d bit/s is %.0f s of traffic; tbf holds at "
                                  "most %.0f s: lower the burst or raise the rate"
                                  % (size, bits, seconds, BURST_SECONDS_MAX),
                                  field="%s.%s" % (field, burst_key))
        if seconds < BURST_SECONDS_MIN:
            raise ValidationError("%d bytes at %d bit/s is under 10 us of traffic: raise "
                                  "the burst" % (size, bits),
                                  field="%s.%s" % (field, burst_key))
        out[rate_key], out[burst_key] = bits, size
    return out


# -- macvlan/ipvlan parent on an 802.1q VLAN (``parent: eth0.10``) -------------------------
_VLAN_PARENT = re.compile(r"(.+)\.([0-9]+)")


def vlan_parent(value, field="driver_options.parent"):
    """``(link, vid)`` of a parent named ``<iface>.<1-4094>`` (Docker makes that VLAN
    sub-interface when it is missing), or None for a name without a numeric suffix.
    Raises ValidationError naming ``field`` for a bad id or link name."""
    match = _VLAN_PARENT.fullmatch(value or "")
    if not match:
        return None
    link, text = match.groups()
    interface_name(link, field)
    vid = int(text)
    if text != str(vid) and 1 <= vid <= 4094:
        raise ValidationError("%r: write the VLAN id without leading zeros (%s.%d)"
                              % (value, link, vid), field=field)
    if not 1 <= vid <= 4094:
        raise ValidationError("%r: VLAN id %s is outside 1..4094 (a parent named "
                              "<iface>.<vid> is an 802.1q sub-interface)" % (value, text),
                              field=field)
    return link, vid
