"""One published port as data: ``PortMapping`` (host address and port -> container).

Stored on endpoints (``to_dict``), turned into rules by the firewall
(``firewall/model.py``) and into Docker's ``Ports`` shape by ``inspect.py``: kept apart
from both so that reading an endpoint's ports imports no firewall code.
"""
import ipaddress
from dataclasses import asdict, dataclass

from ..errors import ValidationError


@dataclass(frozen=True, order=True)
class PortMapping:
    """One host port forwarded to one container port (ranges are already expanded).

    ``host_ip`` is "" for every address of the family, else a normalised address
    (``127.0.0.1``, ``2001:db8::1``). ``container_ip`` is the endpoint's address of the
    same ``family`` (4 or 6).
    """
    protocol: str
    host_ip: str
    host_port: int
    container_ip: str
    container_port: int
    family: int

    def to_dict(self):
        """The mapping as a JSON-ready dict (keys = field names)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, doc):
        """Rebuild a mapping from ``to_dict`` output; raises ValidationError if malformed."""
        try:
            return cls(protocol=str(doc["protocol"]), host_ip=str(doc.get("host_ip") or ""),
                       host_port=int(doc["host_port"]), container_ip=str(doc["container_ip"]),
                       container_port=int(doc["container_port"]), family=int(doc["family"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError("malformed port mapping %r: %s" % (doc, exc),
                                  field="ports") from None

    @property
    def is_loopback(self):
        """True when the mapping is bound to a loopback host address (127.0.0.0/8)."""
        return bool(self.host_ip) and ipaddress.ip_address(self.host_ip).is_loopback

    def describe(self):
        """Short human form, e.g. ``tcp 127.0.0.1:8080 -> 172.18.0.2:80``."""
        host = self.host_ip or ("0.0.0.0" if self.family == 4 else "::")
        if self.family == 6:
            return "%s [%s]:%d -> [%s]:%d" % (self.protocol, host, self.host_port,
                                              self.container_ip, self.container_port)
        return "%s %s:%d -> %s:%d" % (self.protocol, host, self.host_port,
                                      self.container_ip, self.container_port)
