"""Principals from a trusted reverse proxy, following oauth2-proxy's headers.

oauth2-proxy (and most identity-aware proxies) authenticate the browser and pass the user on in request headers:
``X-Forwarded-User`` (the login), ``X-Forwarded-Email``, ``X-Forwarded-Preferred-Username`` and
``X-Forwarded-Groups`` (comma-separated groups, which Rubot treats as roles). Anyone can *send* those headers, so
they are honoured only when the TCP peer (``request.remote_addr``) is one of the configured proxy networks; from
any other address they are ignored and the request has no principal. Do not put werkzeug's ``ProxyFix`` in front
of this: it would rewrite ``remote_addr`` from headers the client controls.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from typing import Any

from pipeline.auth.principal import Principal
from pipeline.errors import ConfigurationError

log = logging.getLogger("rubot.auth")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

USER_HEADER = "X-Forwarded-User"
EMAIL_HEADER = "X-Forwarded-Email"
NAME_HEADER = "X-Forwarded-Preferred-Username"
GROUPS_HEADER = "X-Forwarded-Groups"


def parse_networks(spec: str | Iterable[str]) -> tuple[Network, ...]:
    """``"127.0.0.1/32,10.0.0.0/8"`` (or a list of such) as networks; a bad entry is a ConfigurationError."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    networks = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ConfigurationError(f"trusted proxy network {item!r} is not an address or CIDR range: {exc}") from None
    return tuple(networks)


def split_groups(value: str | None) -> frozenset[str]:
    """oauth2-proxy joins groups with commas; blanks are dropped."""
    return frozenset(g.strip() for g in (value or "").split(",") if g.strip())


class TrustedProxyAuthenticator:
    """The principal a trusted proxy vouches for in its headers, or ``None``.

    ``trusted`` lists the proxy addresses or networks (at least one). Header names default to oauth2-proxy's.
    """

    def __init__(
        self,
        trusted: str | Iterable[str],
        *,
        user_header: str = USER_HEADER,
        email_header: str = EMAIL_HEADER,
        name_header: str = NAME_HEADER,
        groups_header: str = GROUPS_HEADER,
    ) -> None:
        self.networks = parse_networks(trusted)
        if not self.networks:
            raise ConfigurationError(
                "the trusted-proxy authenticator needs the proxy's addresses: set RUBOT_WEB_TRUSTED_PROXIES "
                "(e.g. 127.0.0.1/32 for a proxy on the same host)"
            )
        self.user_header, self.email_header = user_header, email_header
        self.name_header, self.groups_header = name_header, groups_header

    def trusts(self, address: str | None) -> bool:
        """Whether ``address`` (the TCP peer) is one of the trusted proxies."""
        try:
            peer = ipaddress.ip_address((address or "").split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
            peer = peer.ipv4_mapped
        return any(peer in network for network in self.networks)

    def __call__(self, request: Any) -> Principal | None:
        user = (request.headers.get(self.user_header) or "").strip()
        if not user:
            return None
        if not self.trusts(request.remote_addr):
            # Somebody sent identity headers directly, bypassing the proxy: ignore them (and say so once per
            # request in the log, without the claimed identity, which is attacker-controlled text).
            log.warning("ignored %s from %s, which is not a trusted proxy", self.user_header, request.remote_addr)
            return None
        email = (request.headers.get(self.email_header) or "").strip() or None
        name = (request.headers.get(self.name_header) or "").strip()
        return Principal.of(
            user,
            roles=split_groups(request.headers.get(self.groups_header)),
            display_name=name or email or user,
            email=email,
            via="proxy",
        )
