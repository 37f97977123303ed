"""Signed approval links: bound to one approval and one approver, expiring, single use.

A link is ``<RUBOT_WEB_BASE_URL>/links/<token>``; the token is an itsdangerous signature (keyed by
``RUBOT_WEB_SECRET_KEY``) over ``{approval, run, approver, link id}`` with a timestamp. Opening it (GET) only shows
the approval; deciding is a POST with the page's CSRF token, in which the link authenticates that one approver
(``via="link"``) for that one approval. The link id is recorded in the deciding transaction (``rubot_link_uses``),
so a link decides at most once. Without a configured secret key no link is issued: a key random per process would
make links that no other process (and no restart) can check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from pipeline.auth.principal import Principal
from pipeline.errors import RubotError

SALT = "rubot.approval-link"
DEFAULT_MAX_AGE = 3 * 24 * 3600


class LinkInvalid(RubotError):
    """A link that was tampered with, has expired, or is not a Rubot approval link."""

    reason = "invalid_link"


@dataclass(frozen=True)
class LinkClaim:
    """What a valid link says: who may decide which approval."""

    link_id: str
    approval_id: str
    run_id: str
    approver_id: str
    email: str | None
    roles: tuple[str, ...]

    def principal(self) -> Principal:
        return Principal.of(self.approver_id, roles=self.roles, email=self.email, via="link")


class LinkSigner:
    def __init__(self, secret_key: str, *, max_age: int = DEFAULT_MAX_AGE) -> None:
        if not secret_key:
            raise ValueError("signed links need a secret key (RUBOT_WEB_SECRET_KEY)")
        self.max_age = max_age
        self._serializer = URLSafeTimedSerializer(secret_key, salt=SALT)

    def sign(self, *, link_id: str, approval_id: str, run_id: str, approver: dict[str, Any]) -> str:
        return self._serializer.dumps(
            {
                "l": link_id,
                "a": approval_id,
                "r": run_id,
                "p": approver["id"],
                "e": approver.get("email"),
                "g": list(approver.get("roles") or ()),
            }
        )

    def verify(self, token: str) -> LinkClaim:
        try:
            data = self._serializer.loads(token, max_age=self.max_age)
        except SignatureExpired:
            raise LinkInvalid("this approval link has expired; open the approval from the inbox instead") from None
        except BadSignature:
            raise LinkInvalid("this approval link is not valid (it was changed or is not a Rubot link)") from None
        try:
            return LinkClaim(
                link_id=str(data["l"]),
                approval_id=str(data["a"]),
                run_id=str(data["r"]),
                approver_id=str(data["p"]),
                email=data.get("e"),
                roles=tuple(data.get("g") or ()),
            )
        except (KeyError, TypeError):
            raise LinkInvalid("this approval link is not valid") from None
