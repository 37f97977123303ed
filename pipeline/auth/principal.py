"""``Principal``: an authenticated person or service, and the ``Authenticator`` protocol that establishes one.

A principal is established by the server — trusted reverse-proxy headers, the host application's logged-in user,
a personal API token, or an explicit trusted caller in Python — never by what a request says about itself.
Every decision on an approval is made by one, and its ``roles`` decide what it may decide.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Principal:
    """An authenticated actor.

    ``id`` is stable (a login, an e-mail, a service name) and is what the trail records; ``display_name`` is for
    people reading it; ``roles`` are the roles or groups the principal holds; ``via`` says how it was established
    (``"proxy"``, ``"host"``, ``"token"``, ``"python"``, ``"cli"``, ``"link"``, ``"dev"``).
    """

    id: str
    display_name: str = ""
    roles: frozenset[str] = field(default_factory=frozenset)
    email: str | None = None
    via: str = "python"

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id.strip():
            raise ValueError("a principal needs a non-empty id")
        object.__setattr__(self, "id", self.id.strip())
        object.__setattr__(self, "roles", frozenset(self.roles))
        if not self.display_name:
            object.__setattr__(self, "display_name", self.id)

    @classmethod
    def of(
        cls,
        id: str,
        *,
        roles: Iterable[str] = (),
        display_name: str = "",
        email: str | None = None,
        via: str = "python",
    ) -> Principal:
        return cls(id=id, display_name=display_name, roles=frozenset(roles), email=email, via=via)

    def has_role(self, role: str) -> bool:
        return role in self.roles

    def as_json(self) -> dict[str, Any]:
        """What the trail records about who acted."""
        return {"id": self.id, "display_name": self.display_name, "roles": sorted(self.roles), "via": self.via}


class Authenticator(Protocol):
    """Establishes the principal of a web request (Flask's ``request``), or ``None`` when there is none."""

    def __call__(self, request: Any) -> Principal | None: ...
