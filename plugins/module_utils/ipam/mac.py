"""MAC addresses of endpoints: Docker's IP-derived ones, random ones, and user input.

Docker derives an endpoint's MAC from its IPv4 address (02:42 + the four address bytes),
so a re-created endpoint keeps its MAC and neighbours' ARP caches stay right. Every MAC
is stored and compared in lower-case colon form.
"""
import ipaddress
import os
import re

from ..errors import ValidationError

# Docker's prefix: locally administered (bit 1 of the first byte), unicast (bit 0 clear).
DOCKER_MAC_PREFIX = (0x02, 0x42)

_SEPARATED = re.compile(r"^[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}$")
_DOTTED = re.compile(r"^[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}$")


def _format(octets):
    return ":".join("%02x" % b for b in octets)


def mac_from_ip(ipv4):
    """Return Docker's MAC for an endpoint with IPv4 address ``ipv4``: ``02:42:`` + its bytes.

    Called when an endpoint with an IPv4 address is created without ``mac_address``.
    ``ipv4`` is an IPv4Address or a string. Guarantees a locally-administered unicast
    MAC in lower-case colon form (``172.17.0.2`` -> ``02:42:ac:11:00:02``).

    Raises ValueError if ``ipv4`` is not an IPv4 address (a caller bug: IPv6-only
    endpoints use ``generate_mac``).
    """
    address = ipaddress.ip_address(str(ipv4).strip())
    if address.version != 4:
        raise ValueError("mac_from_ip needs an IPv4 address, not %s" % address)
    return _format(DOCKER_MAC_PREFIX + tuple(address.packed))


def mac_from_key(key):
    """Return a MAC derived from ``key`` (a string such as a network id): the same key
    always gives the same MAC. Called for the bridge of a network without IPv4.
    Guarantees a locally-administered unicast MAC outside Docker's ``02:42`` range (so it
    never equals an endpoint's ``mac_from_ip``). Raises nothing."""
    import hashlib
    return _format((0x06,) + tuple(hashlib.sha256(key.encode("utf-8")).digest()[:5]))


def generate_mac():
    """Return a random locally-administered unicast MAC in lower-case colon form.

    Called for endpoints on networks without IPv4 (nothing to derive the MAC from).
    Guarantees bit 1 of the first byte set (locally administered) and bit 0 clear
    (unicast), so it never collides with a vendor MAC or reads as multicast. Raises
    nothing.
    """
    octets = bytearray(os.urandom(6))
    octets[0] = (octets[0] & 0xFE) | 0x02
    return _format(octets)


def normalise_mac(value, field="mac_address"):
    """Validate a MAC given by the user and return it in lower-case colon form.

    Called for ``mac_address`` of ``cnm_endpoint`` before any side effect, and before
    comparing with the kernel's MAC. Accepts ``aa:bb:cc:dd:ee:ff``, ``aa-bb-cc-dd-ee-ff``
    and ``aabb.ccdd.eeff`` in any case, with surrounding spaces.

    Raises ValidationError naming ``field`` when the syntax is wrong (only 6-byte MACs),
    the multicast bit is set (includes the broadcast ff:ff:ff:ff:ff:ff: a multicast MAC
    on an interface breaks ARP), or the MAC is all zeros.
    """
    if not isinstance(value, str):
        raise ValidationError("%r is not a MAC address" % (value,), field=field)
    text = value.strip().lower()
    if _SEPARATED.match(text):
        octets = bytes(int(part, 16) for part in re.split(r"[:-]", text))
    elif _DOTTED.match(text):
        octets = bytes.fromhex(text.replace(".", ""))
    else:
        raise ValidationError(
            "%r is not a valid MAC address (expected six hex bytes like 02:42:ac:11:00:02)"
            % value.strip(), field=field)
    if not any(octets):
        raise ValidationError("%s is the all-zero MAC address" % _format(octets), field=field)
    if octets[0] & 0x01:
        raise ValidationError(
            "%s is a multicast MAC address (lowest bit of the first byte set); an interface "
            "needs a unicast one" % _format(octets), field=field)
    return _format(octets)
