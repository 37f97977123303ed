"""Personal API tokens: how a program (or a person's script) authenticates to the JSON API.

A token is shown once, when it is created (``rubot tokens create``), and looks like ``rubot_tok_<id>.<secret>``.
Only the SHA-256 of the secret is stored, so a copy of the database gives no usable token; the secret has 256
bits of entropy, which is why a plain hash (not a slow password hash) is enough. A presented token is looked up
by its id and its hash compared in constant time. Each token belongs to one principal (owner id, display name,
roles); revoking it takes effect on the next request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from pipeline.auth.principal import Principal
from pipeline.errors import ConfigurationError, RubotError
from pipeline.store.tables import ApiTokenRow, utcnow

if TYPE_CHECKING:
    from pipeline.store.db import Database

PREFIX = "rubot_"
# Touching last_used_at on every request would turn each API read into a write; once a minute is enough to
# answer "is this token still used?".
LAST_USED_RESOLUTION_SECONDS = 60


class TokenNotFound(RubotError):
    reason = "token_not_found"


@dataclass(frozen=True)
class TokenInfo:
    """What ``rubot tokens list`` shows: never the secret or its hash."""

    id: str
    name: str
    user_id: str
    display_name: str
    roles: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _info(row: ApiTokenRow) -> TokenInfo:
    return TokenInfo(
        row.id,
        row.name,
        row.user_id,
        row.display_name,
        tuple(row.roles or ()),
        row.created_at,
        row.revoked_at,
        row.last_used_at,
    )


def create(db: Database, *, user: str, roles: Iterable[str], name: str = "", display_name: str = "") -> tuple[str, str]:
    """Store a new token for ``user``; returns ``(token_id, token)``. The token is never retrievable again."""
    user = (user or "").strip()
    roles = sorted({r.strip() for r in roles if r and r.strip()})
    if not user:
        raise ConfigurationError("a token needs its owner: --user ID")
    token_id = f"tok_{secrets.token_hex(8)}"
    secret = secrets.token_urlsafe(32)
    with db.transaction() as s:
        s.add(
            ApiTokenRow(
                id=token_id,
                name=(name or "").strip() or token_id,
                user_id=user,
                display_name=(display_name or "").strip() or user,
                roles=roles,
                secret_hash=_digest(secret),
                created_at=utcnow(),
            )
        )
    return token_id, f"{PREFIX}{token_id}.{secret}"


def list_tokens(db: Database) -> list[TokenInfo]:
    with db.transaction() as s:
        rows = s.execute(select(ApiTokenRow).order_by(ApiTokenRow.created_at, ApiTokenRow.id)).scalars()
        return [_info(row) for row in rows]


def revoke(db: Database, token_id: str) -> TokenInfo:
    """Revoke ``token_id`` (idempotent: revoking twice keeps the first time)."""
    with db.transaction() as s:
        row = s.get(ApiTokenRow, token_id)
        if row is None:
            raise TokenNotFound(f"no API token with id {token_id!r} (see `rubot tokens list`)")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        return _info(row)


def authenticate(db: Database, token: str) -> Principal | None:
    """The principal of an active ``token``, or ``None`` (unknown, malformed, wrong secret or revoked)."""
    if not token.startswith(PREFIX) or "." not in token:
        return None
    token_id, _, secret = token[len(PREFIX) :].partition(".")
    if not token_id or not secret:
        return None
    with db.transaction() as s:
        row = s.get(ApiTokenRow, token_id)
        if row is None or row.revoked_at is not None:
            return None
        if not hmac.compare_digest(row.secret_hash.encode(), _digest(secret).encode()):
            return None
        now = utcnow()
        last = row.last_used_at
        if last is None or (now - (last if last.tzinfo else last.replace(tzinfo=now.tzinfo))).total_seconds() > (
            LAST_USED_RESOLUTION_SECONDS
        ):
            row.last_used_at = now
        return Principal.of(row.user_id, roles=row.roles or (), display_name=row.display_name, via="token")


def bearer(request: Any) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header, if any."""
    scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


class TokenAuthenticator:
    """Authenticates API requests by their ``Authorization: Bearer <token>`` header against the token table."""

    def __init__(self, db: Database | Any) -> None:
        # ``db`` may be a callable returning the Database, so the app can resolve its runtime lazily.
        self._db = db

    def __call__(self, request: Any) -> Principal | None:
        token = bearer(request)
        if token is None:
            return None
        db = self._db() if callable(self._db) else self._db
        return authenticate(db, token)
