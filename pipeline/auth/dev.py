"""Development mode: one configured principal for every request from this machine, and only from it.

Meant for trying the approval pages on a laptop. It answers requests whose TCP peer is a loopback address and
nobody else, and ``rubot web`` refuses to start it on a non-loopback interface, so it cannot decide anything for
someone on the network. Creating it logs a loud warning.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from typing import Any

from pipeline.auth.principal import Principal

log = logging.getLogger("rubot.auth")

BANNER = (
    "RUBOT WEB IS IN DEVELOPMENT MODE (RUBOT_WEB_AUTH=dev): every request from this machine acts as {who} with "
    "roles {roles}. Never use this in production."
)


def is_loopback(address: str | None) -> bool:
    try:
        return ipaddress.ip_address((address or "").split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class DevAuthenticator:
    """Every loopback request is ``principal`` (with ``via="dev"``); other peers get no principal."""

    def __init__(self, user: str, roles: Iterable[str] = (), *, display_name: str = "") -> None:
        self.principal = Principal.of(user, roles=roles, display_name=display_name, via="dev")
        log.warning(BANNER.format(who=self.principal.id, roles=", ".join(sorted(self.principal.roles)) or "none"))

    def __call__(self, request: Any) -> Principal | None:
        return self.principal if is_loopback(request.remote_addr) else None
