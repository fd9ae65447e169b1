"""Safe defaults where the node meets the network (SECURITY.md "Exposure").

* :func:`check_edge` refuses to start an HTTP face bound to a non-loopback address without
  credentials (``auth.users`` / ``auth.tokens`` / ``auth.token[_file]``), unless
  ``auth.allow_anonymous: true`` says so explicitly (then every start logs a warning), and
  returns the warnings the console's dashboard shows: the HTTP face open to anyone, and a DICOM
  listener on a non-loopback address that accepts any calling AE title.
* :class:`CallerPolicy` decides whether a calling AE title may associate *from a given address*:
  ``node.allowed_calling_aets`` entries are a bare AE title (any address) or
  ``{ae_title: ..., hosts: [IP, CIDR or host name, ...]}``; a spoofed AE title from another
  address is rejected (A-ASSOCIATE-RJ, calling AE title not recognised).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from node.config import AllowedCaller, Config
from node.errors import ConfigError

__all__ = ["CallerPolicy", "check_edge", "is_loopback_host"]

log = logging.getLogger(__name__)

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _addresses(host: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return sorted({str(info[4][0]) for info in infos})


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_loopback_host(host: str) -> bool:
    """True when every address ``host`` names is a loopback address.

    ``0.0.0.0``, ``::`` and the empty string (every interface) are not loopback; a name that does
    not resolve is treated as not loopback (the safe answer).
    """
    ip = _ip(host)
    if ip is not None:
        return ip.is_loopback
    if not host:
        return False
    found = [_ip(a) for a in _addresses(host)]
    return bool(found) and all(a is not None and a.is_loopback for a in found)


def _has_credentials(config: Config) -> bool:
    a = config.auth
    return bool(a.users or a.tokens or a.token or a.token_file is not None)


def check_edge(config: Config, *, serve_http: bool) -> list[str]:
    """Refuse an open HTTP face on the network; return the exposure warnings (logged here).

    Raises
    ------
    ConfigError
        ``node.host`` is not loopback, HTTP is served, no user or token is configured and
        ``auth.allow_anonymous`` is not set.
    """
    node = config.node
    warnings: list[str] = []
    exposed = not is_loopback_host(node.host)
    if serve_http and exposed and not _has_credentials(config):
        if not config.auth.allow_anonymous:
            raise ConfigError(
                [
                    f"node.host: the HTTP API would listen on {node.host} (not loopback) with no "
                    "credentials, so every caller would be an anonymous admin; set auth.users "
                    "or auth.tokens (or auth.token_file), or set auth.allow_anonymous: true to "
                    "accept that, or listen on 127.0.0.1"
                ]
            )
        warnings.append(
            f"The HTTP API listens on {node.host} without credentials "
            "(auth.allow_anonymous: true): every caller is an anonymous admin."
        )
        log.warning("edge.http_anonymous", extra={"host": node.host})
    if exposed and not node.allowed_calling_aets:
        warnings.append(
            f"The DICOM listener accepts any calling AE title on {node.host}: set "
            "node.allowed_calling_aets (AE titles, optionally with hosts) to limit who may send."
        )
        log.warning("edge.dicom_any_caller", extra={"host": node.host})
    return warnings


@dataclass(frozen=True, slots=True)
class _Rule:
    networks: tuple[IpNetwork, ...]
    names: tuple[str, ...]  # host names, resolved when a caller is checked

    @property
    def any_host(self) -> bool:
        return not self.networks and not self.names


class CallerPolicy:
    """Who may associate: calling AE titles, each from any address or from listed hosts.

    Parameters
    ----------
    entries:
        ``node.allowed_calling_aets``: AE titles (any address) and ``AllowedCaller`` items.
        Empty: every AE title from every address.
    resolve_seconds:
        How long a host name's addresses are cached.
    """

    def __init__(
        self, entries: Sequence[str | AllowedCaller], *, resolve_seconds: float = 300.0
    ) -> None:
        rules: dict[str, list[_Rule]] = {}
        for entry in entries:
            if isinstance(entry, str):
                title, rule = entry.strip(), _Rule((), ())
            else:
                nets: list[IpNetwork] = []
                names: list[str] = []
                for host in entry.hosts:
                    net = _network(host)
                    if net is not None:
                        nets.append(net)
                    else:
                        names.append(host.strip())
                title, rule = entry.ae_title.strip(), _Rule(tuple(nets), tuple(names))
            if title:
                rules.setdefault(title, []).append(rule)
        self._rules = rules
        self._resolve_seconds = resolve_seconds
        self._cache: dict[str, tuple[float, list[str]]] = {}
        self._lock = threading.Lock()

    @property
    def titles(self) -> tuple[str, ...]:
        """Every allowed AE title (empty: any)."""
        return tuple(sorted(self._rules))

    @property
    def restricts_hosts(self) -> bool:
        """Some AE title is limited to listed hosts."""
        return any(not r.any_host for rules in self._rules.values() for r in rules)

    def _resolved(self, name: str) -> list[str]:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(name)
            if hit is not None and now - hit[0] < self._resolve_seconds:
                return hit[1]
        found = _addresses(name)
        with self._lock:
            self._cache[name] = (now, found)
        return found

    def allows(self, calling_aet: str, address: str | None) -> bool:
        """May ``calling_aet`` associate from ``address`` (the peer's IP)?"""
        if not self._rules:
            return True
        rules = self._rules.get(calling_aet.strip())
        if not rules:
            return False
        if any(r.any_host for r in rules):
            return True
        ip = _ip(address or "")
        if ip is None:
            return False
        for rule in rules:
            if any(ip in net for net in rule.networks):
                return True
            for name in rule.names:
                if any(_ip(a) == ip for a in self._resolved(name)):
                    return True
        return False


def _network(text: str) -> IpNetwork | None:
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None
    return net
